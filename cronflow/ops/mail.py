"""E-mail over SMTP: the Email task, and the sender that failure alerts use too (smtplib).

    Email("report", to=["team@example.com"], subject="Readings for {{ ds }}",
          body="{{ params.rows }} rows loaded.", attachments=["/srv/reports/{{ ds }}.csv"])

The server is a connection (`conn_id`: `smtp://user:pass@mail:587` for STARTTLS, `smtps://...:465`
for TLS from the first byte, `smtp://relay:25?starttls=false` for a plain local relay), or, without
`conn_id`, the [smtp] section of cronflow.toml. Certificates are checked (system CAs or
`ca_file`). `to`, `cc`, `subject`, `body` and the attachment paths are templates; an attachment
path may be a glob, and one that matches nothing is an error.
"""

from __future__ import annotations

import logging
import mimetypes
import smtplib
import socket
import ssl
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

from cronflow.config import SmtpSettings
from cronflow.connections import Connection, tls_context
from cronflow.errors import ConfigError, CronflowError
from cronflow.flow import Task
from cronflow.ops.network import UnreachableError, error_words, unreachable_words
from cronflow.ops.transfer import local_glob
from cronflow.templates import render

log = logging.getLogger("cronflow.mail")

SMTP_TYPES = ("smtp", "smtps")


class MailError(CronflowError):
    """A message could not be sent."""


@dataclass(frozen=True)
class MailServer:
    """Where to send: from a connection or from cronflow.toml's [smtp]."""

    host: str
    port: int
    security: str  # starttls | ssl | none
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    sender: str = "cronflow@localhost"
    ca_file: str | None = None
    verify: bool = True
    timeout_s: float = 30.0

    @classmethod
    def from_connection(cls, conn: Connection) -> MailServer:
        if conn.conn_type == "smtps":
            security = "ssl"
        else:
            security = "starttls" if conn.flag("starttls", True) else "none"
        return cls(
            host=conn.host or "",
            port=conn.port or {"ssl": 465, "starttls": 587, "none": 25}[security],
            security=security,
            user=conn.login,
            password=conn.password,
            sender=conn.extra.get("from") or conn.login or f"cronflow@{socket.gethostname()}",
            ca_file=conn.extra.get("ca_file"),
            verify=conn.flag("verify", True),
            timeout_s=float(conn.extra.get("timeout", 30.0)),
        )

    @classmethod
    def from_settings(cls, smtp: SmtpSettings) -> MailServer:
        password = smtp.resolved_password()
        if smtp.password_env and password is None:
            raise ConfigError(
                f"[smtp] password_env names {smtp.password_env}, which is not set in the "
                "environment of the daemon"
            )
        return cls(
            host=smtp.host,
            port=smtp.port,
            security=smtp.security,
            user=smtp.user,
            password=password,
            sender=smtp.sender,
            ca_file=smtp.ca_file,
            timeout_s=smtp.timeout_s,
        )

    def describe(self) -> str:
        return f"{self.host}:{self.port} ({self.security})"

    def _context(self) -> ssl.SSLContext:
        return tls_context(self.ca_file, self.verify)

    def open(self) -> smtplib.SMTP:
        """A connected session, after STARTTLS and login as configured."""
        try:
            if self.security == "ssl":
                session: smtplib.SMTP = smtplib.SMTP_SSL(
                    self.host, self.port, timeout=self.timeout_s, context=self._context()
                )
            else:
                session = smtplib.SMTP(self.host, self.port, timeout=self.timeout_s)
            session.ehlo()
            if self.security == "starttls":
                session.starttls(context=self._context())
                session.ehlo()
            if self.user:
                session.login(self.user, self.password or "")
        except smtplib.SMTPNotSupportedError as exc:
            raise MailError(f"mail server {self.describe()}: {exc}") from None
        except smtplib.SMTPAuthenticationError as exc:
            raise MailError(
                f"mail server {self.describe()} refused the login of {self.user}: "
                f"{exc.smtp_code} {_said(exc.smtp_error)}"
            ) from None
        except (smtplib.SMTPException, OSError) as exc:
            words = unreachable_words(exc, self.host, self.port, self.timeout_s)
            if words is not None:
                raise UnreachableError(f"mail server {self.describe()}: {words}") from None
            raise MailError(
                f"cannot reach mail server {self.describe()}: {_smtp_words(exc)}"
            ) from None
        return session


def build_message(
    sender: str,
    to: Sequence[str],
    subject: str,
    body: str,
    attachments: Iterable[tuple[str, bytes]] = (),
    cc: Sequence[str] = (),
    html: bool = False,
) -> EmailMessage:
    # long lines rather than folded headers: some generators fold a long subject right after
    # "Subject:", which clients then show with a leading space
    message = EmailMessage(policy=policy.default.clone(max_line_length=998))
    message["From"] = sender
    message["To"] = ", ".join(to)
    if cc:
        message["Cc"] = ", ".join(cc)
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    message.set_content(body, subtype="html" if html else "plain")
    for name, data in attachments:
        kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
        maintype, subtype = kind.split("/", 1)
        if maintype == "text":
            message.add_attachment(data.decode(errors="replace"), subtype=subtype, filename=name)
        else:
            message.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return message


def send(server: MailServer, message: EmailMessage, recipients: Sequence[str]) -> None:
    if not recipients:
        raise MailError("a mail needs at least one recipient")
    session = server.open()
    try:
        refused = session.send_message(message, to_addrs=list(recipients))
    except (smtplib.SMTPException, OSError) as exc:
        raise MailError(
            f"mail server {server.describe()} did not take the message: {_smtp_words(exc)}"
        ) from None
    finally:
        try:
            session.quit()
        except (smtplib.SMTPException, OSError):
            session.close()
    if refused:
        log.warning("refused recipients: %s", ", ".join(refused))


def _said(text: bytes | str) -> str:
    return text.decode(errors="replace") if isinstance(text, bytes) else str(text)


def _smtp_words(exc: BaseException) -> str:
    """What the server said ("SMTP 550 5.1.1 no such user for a@b.example"), else the error."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return "; ".join(
            f"SMTP {code} {_said(said)} for {rcpt}" for rcpt, (code, said) in exc.recipients.items()
        )
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"SMTP {exc.smtp_code} {_said(exc.smtp_error)}"
    return error_words(exc)


def server_for(context: Mapping[str, Any], conn_id: str | None, who: str) -> MailServer:
    """The connection's server, else cronflow.toml's [smtp]; ConfigError if neither exists."""
    if conn_id:
        return MailServer.from_connection(context["conn"].require(conn_id, SMTP_TYPES))
    smtp = context["settings"].smtp
    if smtp is None:
        raise ConfigError(
            f"{who}: no conn_id, and cronflow.toml has no [smtp] section; add one (host, port, "
            "starttls, user, password_env, from) or pass conn_id"
        )
    return MailServer.from_settings(smtp)


def _addresses(value: str | Iterable[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


class Email(Task):
    """Send a templated mail with attachments."""

    kind = "email"

    def __init__(
        self,
        task_id: str,
        *,
        to: str | Iterable[str],
        subject: str,
        body: str = "",
        attachments: Iterable[str] = (),
        cc: str | Iterable[str] = (),
        bcc: str | Iterable[str] = (),
        html: bool = False,
        conn_id: str | None = None,
        **task_args: Any,
    ) -> None:
        super().__init__(task_id, **task_args)
        self.to, self.cc, self.bcc = _addresses(to), _addresses(cc), _addresses(bcc)
        self.subject, self.body, self.html = subject, body, html
        self.attachments = list(attachments)
        self.conn_id = conn_id

    def op_spec(self) -> dict[str, Any]:
        return {
            "to": self.to,
            "subject": self.subject,
            "attachments": self.attachments,
            "conn_id": self.conn_id,
        }

    def execute(self, context: Mapping[str, Any]) -> None:
        server = server_for(
            context,
            render(self.conn_id, context) if self.conn_id else None,
            f"task '{self.task_id}'",
        )
        to = [render(a, context) for a in self.to]
        cc = [render(a, context) for a in self.cc]
        bcc = [render(a, context) for a in self.bcc]
        files = []
        for pattern in (render(p, context) for p in self.attachments):
            matches = local_glob(pattern)
            if not matches:
                raise MailError(f"attachment {pattern} does not exist")
            files += matches
        message = build_message(
            server.sender,
            to,
            render(self.subject, context),
            render(self.body, context),
            [(Path(f).name, Path(f).read_bytes()) for f in files],
            cc,
            self.html,
        )
        send(server, message, [*to, *cc, *bcc])
        log.info(
            "sent %r to %s through %s (%s attachments)",
            message["Subject"],
            ", ".join([*to, *cc, *bcc]),
            server.describe(),
            len(files),
        )


def check(conn: Connection) -> str:
    """`cronflow conn test` for smtp:// and smtps://: connect, STARTTLS, log in, NOOP."""
    server = MailServer.from_connection(conn)
    session = server.open()
    try:
        session.noop()
    finally:
        session.quit()
    who = f", logged in as {server.user}" if server.user else ""
    return f"mail server {server.describe()} ready{who}"

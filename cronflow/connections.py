"""Named connections (host, port, login, password, extra) from the environment or the store.

A task refers to a connection by id (`SSHCommand("fetch", conn_id="station", ...)`). The value
comes from `CRONFLOW_CONN_<ID>` if that environment variable is set (a URI, for secrets kept out
of the database), else from the store (`cronflow conn add`). The id is upper-cased and '-'
becomes '_' in the variable name: connection `station-north` is `CRONFLOW_CONN_STATION_NORTH`.

URIs: `ssh://user:pass@host:22?key_file=/k&known_hosts=/kh&host_key_check=false`, `sftp://`,
`ftp://`, `ftps://`, `smtp://` (STARTTLS unless `starttls=false`), `smtps://` (TLS from the first
byte), `http://`, `https://host/base/path`. User and password are percent-decoded; query
parameters become `extra`. A password is never shown: `redacted_uri()` prints it as `***`.
"""

from __future__ import annotations

import json
import os
import re
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from cronflow.audit import Actor
from cronflow.errors import InvalidInputError, NotFoundError
from cronflow.processtext import check_text
from cronflow.store import Store

ENV_PREFIX = "CRONFLOW_CONN_"
MASK = "***"
DEFAULT_PORTS = {
    "ssh": 22,
    "sftp": 22,
    "ftp": 21,
    "ftps": 21,
    "smtp": 587,
    "smtps": 465,
    "http": 80,
    "https": 443,
}
CONN_TYPES = tuple(DEFAULT_PORTS)
_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")
_FALSE = {"0", "false", "no", "off"}
_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Connection:
    """Where and how to reach a server. `password` never appears in repr or redacted output."""

    conn_id: str
    conn_type: str
    host: str | None = None
    port: int | None = None
    login: str | None = None
    password: str | None = field(default=None, repr=False)
    extra: dict[str, str] = field(default_factory=dict)
    source: str = "store"

    @property
    def port_or_default(self) -> int:
        return self.port or DEFAULT_PORTS[self.conn_type]

    def flag(self, name: str, default: bool) -> bool:
        """A yes/no extra such as host_key_check=false; InvalidInputError for other text."""
        raw = self.extra.get(name)
        if raw is None or raw == "":
            return default
        text = str(raw).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise InvalidInputError(
            f"connection '{self.conn_id}': {name}={raw!r} is not a yes/no value (use true or false)"
        )

    def tls_context(self) -> ssl.SSLContext:
        """Certificates checked against the system CAs, or `ca_file`; `verify=false` turns the
        check off (only for a server you reach over a trusted network)."""
        return tls_context(self.extra.get("ca_file"), self.flag("verify", True))

    def describe(self) -> str:
        """'user@host:port' for messages."""
        user = f"{self.login}@" if self.login else ""
        return f"{user}{self.host}:{self.port_or_default}"

    def uri(self, reveal: bool = False) -> str:
        """The URI as people read it (`key_file=/etc/k`, not `%2Fetc%2Fk`): only the characters
        that would change how it parses are percent-encoded, so it still reads back the same."""
        user = _encoded(self.login or "", "%@:/?#")
        if self.password is not None:
            user += ":" + (_encoded(self.password, "%@:/?#") if reveal else MASK)
        netloc = (user + "@" if user else "") + (self.host or "")
        if self.port:
            netloc += f":{self.port}"
        extra = dict(self.extra)
        path = extra.pop("path", "")
        pairs = [f"{_encoded(k, '%&=#+')}={_encoded(v, '%&=#+')}" for k, v in sorted(extra.items())]
        query = "?" + "&".join(pairs) if pairs else ""
        return f"{self.conn_type}://{netloc}{path}{query}"

    def redacted_uri(self) -> str:
        return self.uri(reveal=False)

    def __str__(self) -> str:
        return self.redacted_uri()

    def as_row(self) -> dict[str, Any]:
        """For display: every field, the password as *** (or '-' when there is none)."""
        return {
            "conn_id": self.conn_id,
            "type": self.conn_type,
            "host": self.host,
            "port": self.port_or_default,
            "login": self.login,
            "password": MASK if self.password else None,
            "extra": dict(self.extra),
            "source": self.source,
            "uri": self.redacted_uri(),
        }


def _encoded(text: str, special: str) -> str:
    """`text` with only the `special` characters percent-encoded."""
    return "".join(f"%{ord(c):02X}" if c in special else c for c in text)


def tls_context(ca_file: str | None, verify: bool = True) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_file or None)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def check_id(conn_id: str) -> str:
    if not _ID.match(conn_id or ""):
        raise InvalidInputError(f"bad connection id {conn_id!r}: use letters, digits, '_' and '-'")
    return conn_id


def env_name(conn_id: str) -> str:
    return ENV_PREFIX + conn_id.upper().replace("-", "_")


def parse_uri(conn_id: str, uri: str, source: str = "store") -> Connection:
    """A Connection from a URI; InvalidInputError naming the connection if it is malformed."""
    check_id(conn_id)
    where = f"connection '{conn_id}'" + (f" ({env_name(conn_id)})" if source == "env" else "")
    try:
        parts = urlsplit(uri.strip())
        port = parts.port
    except ValueError as exc:
        raise InvalidInputError(f"{where}: cannot read the URI: {exc}") from None
    conn_type = parts.scheme.lower()
    if conn_type not in DEFAULT_PORTS:
        raise InvalidInputError(
            f"{where}: unknown type {parts.scheme!r} (known: {', '.join(CONN_TYPES)}); "
            "write e.g. ssh://user@host:22"
        )
    if not parts.hostname:
        raise InvalidInputError(f"{where}: the URI has no host, e.g. {conn_type}://user@host")
    extra = dict(parse_qsl(parts.query, keep_blank_values=True))
    if parts.path and parts.path != "/":
        extra["path"] = parts.path
    return Connection(
        conn_id=conn_id,
        conn_type=conn_type,
        host=parts.hostname,
        port=port,
        login=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        extra=extra,
        source=source,
    )


def from_row(row: Mapping[str, Any]) -> Connection:
    return Connection(
        conn_id=row["conn_id"],
        conn_type=row["conn_type"],
        host=row["host"],
        port=row["port"],
        login=row["login"],
        password=row["password"],
        extra=json.loads(row["extra"] or "{}"),
        source="store",
    )


def env_connections(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """conn id (lower case) -> URI of every CRONFLOW_CONN_* variable."""
    environ = os.environ if environ is None else environ
    return {
        key.removeprefix(ENV_PREFIX).lower(): value
        for key, value in environ.items()
        if key.startswith(ENV_PREFIX) and len(key) > len(ENV_PREFIX)
    }


def get_connection(
    store: Store, conn_id: str, environ: Mapping[str, str] | None = None
) -> Connection:
    """The environment's CRONFLOW_CONN_<ID> if set, else the store's; NotFoundError otherwise."""
    environ = os.environ if environ is None else environ
    uri = environ.get(env_name(conn_id))
    if uri:
        return parse_uri(conn_id, uri, source="env")
    row = store.connection(conn_id)
    if row is not None:
        return from_row(row)
    known = sorted({r["conn_id"] for r in store.connections()} | set(env_connections(environ)))
    raise NotFoundError(
        f"unknown connection '{conn_id}' (known: {', '.join(known) or 'none'}); add it with "
        f"`cronflow conn add {conn_id} URI` or set {env_name(conn_id)}"
    )


def list_connections(store: Store, environ: Mapping[str, str] | None = None) -> list[Connection]:
    """Every connection, the environment's first where both define an id."""
    environ = os.environ if environ is None else environ
    found: dict[str, Connection] = {r["conn_id"]: from_row(r) for r in store.connections()}
    for conn_id, uri in env_connections(environ).items():
        stored = next((c for c in found if env_name(c) == env_name(conn_id)), conn_id)
        try:
            found[stored] = parse_uri(stored, uri, source="env")
        except InvalidInputError:
            continue  # shown by `conn show` / `conn test` with its message
    return [found[k] for k in sorted(found)]


def save_connection(store: Store, conn: Connection, actor: Actor | None = None) -> None:
    """Add or replace a stored connection, recorded in the audit trail without its password
    (`actor`: who; default the Unix user)."""
    check_id(conn.conn_id)
    if conn.conn_type not in DEFAULT_PORTS:
        raise InvalidInputError(
            f"connection '{conn.conn_id}': unknown type {conn.conn_type!r} "
            f"(known: {', '.join(CONN_TYPES)})"
        )
    where = f"connection '{conn.conn_id}'"
    for name, value in (("host", conn.host), ("login", conn.login), ("password", conn.password)):
        if value is not None:
            check_text(value, f"the {name} of {where}")
    for key, value in conn.extra.items():
        check_text(key, f"an extra's name of {where}")
        check_text(value, f"the extra {key} of {where}")
    replaced = store.connection(conn.conn_id) is not None
    with store.atomic():
        store.set_connection(
            conn.conn_id,
            conn.conn_type,
            conn.host,
            conn.port,
            conn.login,
            conn.password,
            conn.extra,
        )
        where = f"{conn.conn_type}://{conn.host or ''}:{conn.port_or_default}"
        summary = f"{'replaced' if replaced else 'added'} connection {conn.conn_id}: {where}"
        details = {
            "conn_id": conn.conn_id,
            "type": conn.conn_type,
            "host": conn.host,
            "port": conn.port,
            "login": conn.login,
            "password": "set" if conn.password else "none",
            "extra_keys": sorted(conn.extra),
            "replaced": replaced,
        }
        store.record_audit("conn_set", None, summary, details, actor)


def delete_connection(store: Store, conn_id: str, actor: Actor | None = None) -> None:
    with store.atomic():
        if not store.delete_connection(conn_id):
            hint = (
                f"; it comes from the environment ({env_name(conn_id)})"
                if env_name(conn_id) in os.environ
                else ""
            )
            raise NotFoundError(f"no stored connection '{conn_id}'{hint}")
        summary = f"deleted connection {conn_id}"
        store.record_audit("conn_delete", None, summary, {"conn_id": conn_id}, actor)


def env_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    """Passwords of the environment's connections (for masking); unreadable URIs are skipped."""
    secrets = []
    for conn_id, uri in env_connections(environ).items():
        try:
            conn = parse_uri(conn_id if _ID.match(conn_id) else "env", uri, source="env")
        except InvalidInputError:
            continue
        if conn.password:
            secrets.append(conn.password)
    return secrets


class Connections(Mapping[str, Connection]):
    """`context["conn"]["station"]`: connections looked up on use (environment, then store)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def __getitem__(self, conn_id: str) -> Connection:
        try:
            return get_connection(self._store, conn_id)
        except NotFoundError as exc:
            raise KeyError(str(exc)) from None

    def require(self, conn_id: str, types: tuple[str, ...] = ()) -> Connection:
        """The connection, or NotFoundError; InvalidInputError if it is not of one of `types`."""
        conn = get_connection(self._store, conn_id)
        if types and conn.conn_type not in types:
            raise InvalidInputError(
                f"connection '{conn_id}' is {conn.conn_type}://, this task needs "
                + " or ".join(f"{t}://" for t in types)
            )
        return conn

    def __iter__(self) -> Iterator[str]:
        return iter([c.conn_id for c in list_connections(self._store)])

    def __len__(self) -> int:
        return len(list_connections(self._store))

    def __repr__(self) -> str:
        return "<connections>"

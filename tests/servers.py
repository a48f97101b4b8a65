"""Real servers on 127.0.0.1 for the operator tests (a pytest plugin, see conftest.py):
OpenSSH's sshd, an SMTP server (aiosmtpd), an FTP/FTPS server (pyftpdlib), an HTTP server.

Each xdist worker starts its own, on free ports, with keys, certificates and files in its own
temporary directories. Nothing here installs anything: tests/run.sh does (openssh-server from
Debian, aiosmtpd and pyftpdlib from the `test` extra).
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import getpass
import ipaddress
import json
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import wait_for

SSHD = "/usr/sbin/sshd"
DEADLINE_S = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- places where no server answers ---------------------------------------------------------------
@pytest.fixture
def refused_port() -> int:
    """A port with nothing listening: connecting is refused at once."""
    return free_port()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that takes connections and never says a word, as a host behind a dead link looks:
    with a short connect timeout, a timeout."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)  # connections complete in the backlog and are never accepted
        yield sock.getsockname()[1]


# --- TLS: one self-signed certificate for 127.0.0.1 and localhost --------------------------------
@dataclass(frozen=True)
class Cert:
    cert: Path
    key: Path


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory: pytest.TempPathFactory) -> Cert:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cronflow test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory = tmp_path_factory.mktemp("tls")
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Cert(cert_path, key_path)


# --- OpenSSH sshd ---------------------------------------------------------------------------------
@dataclass
class Sshd:
    port: int
    user: str
    key_file: Path
    known_hosts: Path
    host_key_line: str
    log_path: Path
    process: subprocess.Popen[bytes]

    def uri(self, **extra: str) -> str:
        query = {"key_file": str(self.key_file), "known_hosts": str(self.known_hosts), **extra}
        params = "&".join(f"{k}={v}" for k, v in query.items())
        return f"ssh://{self.user}@127.0.0.1:{self.port}?{params}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "cronflow-test", "-f", str(path)],
        check=True,
    )


def start_sshd(directory: Path, host_key: Path | None = None) -> Sshd:
    """sshd -D -e on 127.0.0.1 with its own host key, config and authorized_keys."""
    directory.mkdir(parents=True, exist_ok=True)
    if host_key is None:
        host_key = directory / "host_key"
        _keygen(host_key)
    user_key = directory / "user_key"
    if not user_key.exists():
        _keygen(user_key)
    (directory / "authorized_keys").write_text((directory / "user_key.pub").read_text())
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
    user = getpass.getuser()
    for _ in range(5):  # a port taken between free_port() and the bind: try another
        port = free_port()
        config = directory / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"Port {port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {host_key}",
                    "PidFile none",
                    f"AuthorizedKeysFile {directory / 'authorized_keys'}",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PermitRootLogin prohibit-password",
                    "StrictModes no",
                    "UsePAM no",
                    f"AllowUsers {user}",
                    "Subsystem sftp internal-sftp",
                    "LogLevel VERBOSE",
                    "",
                ]
            )
        )
        log_path = directory / f"sshd-{port}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT
            )
        wait_for(functools.partial(_listening, process, log_path), what="sshd to listen")
        if process.poll() is None:
            break
    else:
        raise RuntimeError(f"sshd did not start: {log_path.read_text()}")
    public = host_key.with_suffix(".pub") if host_key.suffix else Path(f"{host_key}.pub")
    host_key_line = f"[127.0.0.1]:{port} {public.read_text().strip()}\n"
    known_hosts = directory / "known_hosts"
    known_hosts.write_text(host_key_line)
    return Sshd(port, user, user_key, known_hosts, host_key_line, log_path, process)


def _listening(process: subprocess.Popen[bytes], log_path: Path) -> bool:
    """sshd said it listens, or it exited (e.g. the port was taken)."""
    return process.poll() is not None or "Server listening" in log_path.read_text()


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    stop(server.process)


# --- SMTP (aiosmtpd) ------------------------------------------------------------------------------
@dataclass
class Mailbox:
    """What an SMTP server received: (envelope sender, recipients, parsed message)."""

    messages: list[tuple[str, list[str], EmailMessage]] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)

    def wait(self, count: int = 1) -> list[tuple[str, list[str], EmailMessage]]:
        wait_for(lambda: len(self.messages) >= count, what=f"{count} mail(s)")
        return self.messages


REJECTED_DOMAIN = "reject.example"  # the SMTP server refuses recipients there with a 550


class _Handler:
    def __init__(self, box: Mailbox) -> None:
        self.box = box

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # type: ignore[no-untyped-def]
        if address.endswith("@" + REJECTED_DOMAIN):
            return f"550 5.1.1 <{address}>: no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        raw = envelope.original_content.replace(b"\r\n", b"\n")
        message = message_from_bytes(raw, policy=policy.default)
        self.box.messages.append((envelope.mail_from, list(envelope.rcpt_tos), message))  # type: ignore[arg-type]
        return "250 OK"


@dataclass
class SmtpServer:
    port: int
    user: str
    password: str
    box: Mailbox
    security: str  # starttls | ssl


def _authenticator(box: Mailbox, user: str, password: str):  # type: ignore[no-untyped-def]
    from aiosmtpd.smtp import AuthResult, LoginPassword

    def check(server, session, envelope, mechanism, auth_data):  # type: ignore[no-untyped-def]
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == user
            and auth_data.password.decode() == password
        )
        if ok:
            box.logins.append(user)
        return AuthResult(success=ok, handled=False)  # not handled: aiosmtpd answers 535

    return check


def start_smtp(cert: Cert, security: str, password: str) -> tuple[SmtpServer, object]:
    import ssl

    from aiosmtpd.controller import Controller

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert.cert, cert.key)
    box = Mailbox()
    user = "reporter"
    kwargs = {
        "authenticator": _authenticator(box, user, password),
        "auth_required": True,
    }
    if security == "ssl":
        # aiosmtpd only counts STARTTLS as TLS for AUTH; this connection is TLS from the start
        kwargs.update(ssl_context=context, auth_require_tls=False)
    else:
        kwargs.update(tls_context=context, require_starttls=True)
    controller = Controller(_Handler(box), hostname="127.0.0.1", port=free_port(), **kwargs)
    controller.start()
    return SmtpServer(controller.port, user, password, box, security), controller


@pytest.fixture
def smtp_server(tls_cert: Cert) -> Iterator[SmtpServer]:
    """STARTTLS required, AUTH required (user 'reporter')."""
    server, controller = start_smtp(tls_cert, "starttls", "s3cret-mail-pw")
    yield server
    controller.stop()  # type: ignore[attr-defined]


@pytest.fixture
def smtps_server(tls_cert: Cert) -> Iterator[SmtpServer]:
    """TLS from the first byte (port 465 style), AUTH required."""
    server, controller = start_smtp(tls_cert, "ssl", "s3cret-mail-pw")
    yield server
    controller.stop()  # type: ignore[attr-defined]


# --- FTP / FTPS (pyftpdlib) -----------------------------------------------------------------------
@dataclass
class FtpServer:
    port: int
    user: str
    password: str
    root: Path
    commands: list[tuple[str, str]]
    tls: bool


def start_ftp(root: Path, cert: Cert | None) -> tuple[FtpServer, object, threading.Thread]:
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import FTPHandler, TLS_FTPHandler
    from pyftpdlib.ioloop import IOLoop
    from pyftpdlib.servers import ThreadedFTPServer

    root.mkdir(parents=True, exist_ok=True)
    commands: list[tuple[str, str]] = []
    user, password = "archive", "ftp-pass-9876"
    authorizer = DummyAuthorizer()
    authorizer.add_user(user, password, str(root), perm="elradfmwMT")
    base = TLS_FTPHandler if cert else FTPHandler

    class Handler(base):  # type: ignore[valid-type, misc]
        def pre_process_command(self, line, cmd, arg):  # type: ignore[no-untyped-def]
            commands.append((cmd, arg))
            return super().pre_process_command(line, cmd, arg)

    Handler.authorizer = authorizer
    Handler.passive_ports = None
    if cert:
        Handler.certfile = str(cert.cert)
        Handler.keyfile = str(cert.key)
        Handler.tls_control_required = True
        Handler.tls_data_required = True
    server = ThreadedFTPServer(("127.0.0.1", 0), Handler, ioloop=IOLoop())
    port = server.socket.getsockname()[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"timeout": 0.1}, daemon=True)
    thread.start()
    return FtpServer(port, user, password, root, commands, bool(cert)), server, thread


@pytest.fixture
def ftp_server(tmp_path: Path) -> Iterator[FtpServer]:
    info, server, thread = start_ftp(tmp_path / "ftp-root", None)
    yield info
    server.close_all()  # type: ignore[attr-defined]
    thread.join(10)


@pytest.fixture
def ftps_server(tmp_path: Path, tls_cert: Cert) -> Iterator[FtpServer]:
    info, server, thread = start_ftp(tmp_path / "ftps-root", tls_cert)
    yield info
    server.close_all()  # type: ignore[attr-defined]
    thread.join(10)


# --- HTTP (http.server) ---------------------------------------------------------------------------
@dataclass
class HttpServer:
    port: int
    requests: list[dict[str, object]]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def http_server() -> Iterator[HttpServer]:
    """GET/POST /status/NNN answers NNN; /echo answers a JSON account of the request; /auth
    wants basic auth web:pw-1234."""
    requests: list[dict[str, object]] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            seen = {
                "method": self.command,
                "path": self.path,
                "body": body,
                "headers": dict(self.headers),
            }
            requests.append(seen)
            status, payload, kind = 200, json.dumps(seen).encode(), "application/json"
            if self.path.startswith("/status/"):
                status = int(self.path.split("/")[2])
                payload, kind = f"status {status} body".encode(), "text/plain"
            elif self.path.startswith("/auth"):
                expected = "Basic " + base64.b64encode(b"web:pw-1234").decode()
                if self.headers.get("Authorization") != expected:
                    status, payload, kind = 401, b"who are you?", "text/plain"
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
    )
    thread.start()
    yield HttpServer(server.server_address[1], requests)
    server.shutdown()
    server.server_close()
    thread.join(10)


# --- Redis (Debian's redis-server), the Celery executor's broker -----------------------------------
REDIS_SERVER = "/usr/bin/redis-server"


@dataclass
class RedisServer:
    """A redis-server of our own on a free loopback port, append-only (as the README asks), so
    a restart keeps what was queued."""

    directory: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.directory / "redis.log"

    def start(self) -> RedisServer:
        argv = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--dir", str(self.directory), "--appendonly", "yes", "--save", ""]
        argv += ["--logfile", str(self.log_path), "--daemonize", "no"]
        self.log_path.unlink(missing_ok=True)  # a restart waits for its own "Ready" line
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        wait_for(self._ready, DEADLINE_S, "redis-server to accept connections")
        assert self.process.poll() is None, self.log_path.read_text()
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            return True
        log = self.log_path.read_text() if self.log_path.exists() else ""
        return "Ready to accept connections" in log

    def stop(self) -> None:
        """SIGTERM: Redis writes its append-only file and exits."""
        if self.process is not None:
            stop(self.process)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if not os.path.exists(REDIS_SERVER):
        pytest.skip("redis-server is not installed (tests/run.sh installs it)")
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(directory).start()
    yield server
    server.stop()

"""SSH: run a command on a remote host through a named connection (paramiko).

    SSHCommand("fetch", "fetch-station --day {{ ds }}", conn_id="station")

The connection (`cronflow conn add station 'ssh://meteo@station.example:22?key_file=/k'`) gives
host, port, user, and a key file (`key_file`) or a password. Host keys are checked against
`known_hosts` (the connection's `known_hosts` file, else ~/.ssh/known_hosts): an unknown or a
changed host key is an error that says how to fix it, unless the connection sets
`host_key_check=false`. The remote command's stdout and stderr go to the task log as they come,
and its exit code decides success. Template values in the command are shell-quoted, as in Shell.

The only module that imports paramiko (lazily: a flow file that only declares an SSH task does
not load it); SFTP (cronflow.ops.sftp) and remote file sensors reuse `open_client`.
"""

from __future__ import annotations

import logging
import select
import shlex
import socket
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cronflow.connections import Connection
from cronflow.errors import CronflowError
from cronflow.flow import Task
from cronflow.logs import last_line
from cronflow.ops.network import UnreachableError, unreachable_words
from cronflow.processtext import check_text
from cronflow.templates import render

log = logging.getLogger("cronflow.ssh")

SSH_TYPES = ("ssh", "sftp")
CONNECT_TIMEOUT_S = 30.0
TAIL_BYTES = 4096  # of the remote output kept to find its last line


class SSHError(CronflowError):
    """An SSH server cannot be reached, refused us, or a remote command failed."""


class HostKeyError(SSHError):
    """The server's host key is unknown or is not the one in known_hosts."""


def known_hosts_path(conn: Connection) -> Path:
    return Path(conn.extra.get("known_hosts") or "~/.ssh/known_hosts").expanduser()


def _host_key_name(conn: Connection) -> str:
    port = conn.port_or_default
    if port == 22:
        return conn.host or ""
    return f"[{conn.host}]:{port}"


@contextmanager
def open_client(conn: Connection) -> Iterator[Any]:
    """A connected, authenticated paramiko SSHClient; UnreachableError when the server cannot
    be reached now (transient), SSHError / HostKeyError otherwise."""
    import paramiko

    where = f"connection '{conn.conn_id}'"
    known_hosts = known_hosts_path(conn)
    checking = conn.flag("host_key_check", True)

    class UnknownHostPolicy(paramiko.MissingHostKeyPolicy):
        def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
            raise HostKeyError(
                f"{where}: the host key of {hostname} ({key.get_name()} {key.fingerprint}) "
                f"is not in {known_hosts}; check the fingerprint with the server's admin, then "
                f"add it with `ssh-keyscan -p {conn.port_or_default} {conn.host} >> "
                f"{known_hosts}`, or set host_key_check=false on the connection"
            )

    client = paramiko.SSHClient()
    if checking:
        if known_hosts.exists():
            client.load_host_keys(str(known_hosts))
        client.set_missing_host_key_policy(UnknownHostPolicy())
    else:
        log.warning("%s: host key checking is off (host_key_check=false)", where)
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    try:
        _connect(client, conn, where)
    except BaseException:
        client.close()
        raise
    try:
        yield client
    finally:
        client.close()


def _connect(client: Any, conn: Connection, where: str) -> None:
    """Connect and log in; UnreachableError when the server cannot be reached now, SSHError or
    HostKeyError (not transient) otherwise."""
    import paramiko

    key_file = conn.extra.get("key_file")
    timeout = float(conn.extra.get("timeout", CONNECT_TIMEOUT_S))
    sock = _open_socket(conn, where, timeout)
    connected = False
    try:
        client.connect(
            conn.host or "",
            port=conn.port_or_default,
            username=conn.login,
            password=conn.password,
            key_filename=str(Path(key_file).expanduser()) if key_file else None,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
            allow_agent=False,
            look_for_keys=not (key_file or conn.password),
            sock=sock,
        )
        connected = True
    except paramiko.BadHostKeyException as exc:
        raise HostKeyError(_changed_key_message(conn, where, exc)) from None
    except paramiko.AuthenticationException as exc:
        raise SSHError(
            f"{where}: authentication failed for {conn.describe()}: {exc} (check the user, "
            "key_file or password)"
        ) from None
    except (paramiko.SSHException, OSError, EOFError) as exc:
        words = unreachable_words(exc, conn.host or "", conn.port_or_default, timeout)
        if words is not None:
            raise UnreachableError(f"{where}: {words}") from None
        raise SSHError(f"{where}: cannot connect to {conn.describe()}: {exc}") from None
    finally:
        if not connected:
            sock.close()


def _changed_key_message(conn: Connection, where: str, exc: Any) -> str:
    known_hosts, name = known_hosts_path(conn), _host_key_name(conn)
    return (
        f"{where}: the host key of {name} has CHANGED: {known_hosts} has "
        f"{exc.expected_key.get_name()} {exc.expected_key.fingerprint}, the server sent "
        f"{exc.key.get_name()} {exc.key.fingerprint}. If the server was reinstalled, remove "
        f"the old key with `ssh-keygen -R '{name}' -f {known_hosts}`; otherwise someone may be "
        "intercepting the connection"
    )


def _open_socket(conn: Connection, where: str, timeout: float) -> socket.socket:
    """A TCP connection to the server once it has said something (an SSH server speaks first):
    refused, silent or unknown is UnreachableError, so that a sensor sees "not yet"."""
    host, port = conn.host or "", conn.port_or_default
    sock = None
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
        greeting = sock.recv(1, socket.MSG_PEEK)
    except OSError as exc:
        if sock is not None:
            sock.close()
        words = unreachable_words(exc, host, port, timeout)
        if words is None:
            raise SSHError(f"{where}: cannot connect to {host}:{port}: {exc}") from None
        raise UnreachableError(f"{where}: {words}") from None
    if not greeting:  # e.g. a tunnel's port whose far end (the station) is down
        sock.close()
        raise UnreachableError(f"{where}: {host}:{port} closed the connection without a greeting")
    return sock


READ_COMMAND_FROM_STDIN = 'c=$(head -c {size}); eval "$c"'


def run_remote(client: Any, command: str, get_pty: bool = False) -> tuple[int, str]:
    """Run a command on the open client, copying its stdout and stderr to ours as they come;
    return its exit code and the last line it wrote (for the reason of a failure)."""
    channel = client.get_transport().open_session()
    if get_pty:
        channel.get_pty()
        channel.exec_command(command)  # a terminal would echo what stdin brings
    else:
        # The command goes in on stdin: on the remote host `ps` shows only this reader, never
        # the values rendered into the command (a secret variable, say).
        data = command.encode()
        channel.exec_command(READ_COMMAND_FROM_STDIN.format(size=len(data)))
        channel.sendall(data)
    out, err = sys.stdout.buffer, sys.stderr.buffer
    tail = b""
    while True:
        busy = False
        for ready, receive, stream in (
            (channel.recv_ready, channel.recv, out),
            (channel.recv_stderr_ready, channel.recv_stderr, err),
        ):
            if ready():
                data = receive(1 << 16)
                stream.write(data)
                stream.flush()
                tail = (tail + data)[-TAIL_BYTES:]
                busy = True
        if not busy:
            if channel.exit_status_ready() and not (
                channel.recv_ready() or channel.recv_stderr_ready()
            ):
                break
            select.select([channel], [], [], 0.2)
    code = channel.recv_exit_status()
    channel.close()
    return code, last_line(tail)


def remote_command(command: str, env: Mapping[str, str], cwd: str | None) -> str:
    """A POSIX shell line: `cd DIR && export K=V && COMMAND` (values quoted)."""
    parts = []
    if cwd:
        parts.append(f"cd {shlex.quote(cwd)}")
    parts += [f"export {k}={shlex.quote(v)}" for k, v in env.items()]
    return " && ".join([*parts, command])


class SSHCommand(Task):
    """`SSHCommand("fetch", "ls /data/{{ ds }}", conn_id="station", env={"LANG": "C"})`."""

    kind = "ssh"

    def __init__(
        self,
        task_id: str,
        command: str,
        *,
        conn_id: str,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        get_pty: bool = False,
        **task_args: Any,
    ) -> None:
        super().__init__(task_id, **task_args)
        self.command = command
        self.conn_id = conn_id
        self.env = {str(k): str(v) for k, v in (env or {}).items()}
        self.cwd = cwd
        self.get_pty = get_pty

    def op_spec(self) -> dict[str, Any]:
        return {"conn_id": self.conn_id, "command": self.command, "env": self.env, "cwd": self.cwd}

    def execute(self, context: Mapping[str, Any]) -> None:
        conn = context["conn"].require(render(self.conn_id, context), SSH_TYPES)
        command = remote_command(
            render(self.command, context, quote=shlex.quote),
            {k: render(v, context) for k, v in self.env.items()},
            render(self.cwd, context) if self.cwd else None,
        )
        check_text(command, "the remote command")  # SSH carries it as UTF-8; NUL would cut it
        log.info("on %s: %s", conn.describe(), command)
        with open_client(conn) as client:
            code, last = run_remote(client, command, self.get_pty)
        log.info("remote exit code %s", code)
        if code != 0:
            raise SSHError(
                f"remote exit code {code}: {last}" if last else f"remote exit code {code}"
            )


def check(conn: Connection) -> str:
    """`cronflow conn test` for ssh:// and sftp://: connect and authenticate."""
    with open_client(conn) as client:
        key = client.get_transport().get_remote_server_key()
        return f"connected to {conn.describe()} (host key {key.get_name()} {key.fingerprint})"

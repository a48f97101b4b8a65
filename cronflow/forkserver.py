"""Python attempts started warm: a fork server that has imported cronflow once forks each one.

Why: a Python-side attempt (every task kind but shell) started cold is a new interpreter that
imports cronflow, the store, Jinja and the operators' libraries before the task's first line,
most of its cost. The LocalExecutor starts this server (`python -m cronflow.forkserver`, in its
own session) at the first such attempt; it imports all that once, with the modules named by
`warm_imports` in cronflow.toml, and then forks one process tree per attempt:

    daemon -- order: environment, log fd, reply pipe (over a socket) --> fork server
    fork server -- fork --> supervisor: setsid, writes try-N.pid, replies its pid, forks:
    supervisor -- fork --> task: fresh signals, environment and stdio; cronflow.worker's main()
    supervisor: waits for the task, appends its exit status to try-N.status, wakes the
                daemon (SIGCHLD through a pidfd the order carries: it is not the daemon's child), exits

The forked supervisor does what `sh` does for a cold attempt (cronflow.supervisor): it leads the
attempt's session and process group (timeouts and kills signal the group), ignores the SIGTERM
sent to the group so it records the task's status, and writes the same record, so the daemon
settles a warm attempt like any other. It is not the daemon's child: the daemon follows it by
pidfd as it follows an adopted attempt. A forked process shows the server's command line and
environment in /proc, so the supervisor also writes `try-N.pid` (pid and start time), which is
how a restarted daemon finds and adopts it; what the task execs carries the CRONFLOW_ATTEMPT
marker as before. When the daemon dies the server sees its socket close and exits; supervisors
and tasks, in their own sessions, run on, and their records wait for the next daemon.

Each attempt is a new fork of a server that never runs task code (it never imports flow files
either: they change, and a task imports its own), so a crash or a module-level change in one
task touches no other. The server forks only while it has a single thread, and only while the
files of every non-stdlib module it loaded (cronflow's, the libraries') and the interpreter
are as they were at its start: otherwise it exits and the executor starts a new one.

The executor starts an attempt cold whenever the warm path cannot take it: the server not ready
yet (it is starting), gone (killed, crashed, stale: it is started again), or the attempt changes
the interpreter's start-up (PYTHON*, LANG, LC_* in its environment). Unavoidable difference from
a cold start: the attempts share the server's hash randomization seed.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import json
import logging
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import NoReturn

from cronflow import supervisor

log = logging.getLogger("cronflow.forkserver")

WORKER_ARGV_TAIL = ["-m", "cronflow.worker"]  # what ops.launch_for runs for a Python-side task
# What the server imports: everything a worker imports, and the operators with their libraries.
PRELOADED = (
    "cronflow",
    "cronflow.worker",
    "cronflow.templates",
    "cronflow.ops.python",
    "cronflow.ops.sensors",
    "cronflow.ops.trigger",
    "cronflow.ops.ssh",
    "cronflow.ops.sftp",
    "cronflow.ops.ftp",
    "cronflow.ops.mail",
    "cronflow.ops.http",
)
COLD_ENV_PREFIXES = ("PYTHON", "LANG", "LC_")  # read by the interpreter as it starts
READY = b"R"
REFUSED = b"-\n"  # the server's answer to an order when it is stale: it exits
REPLY_TIMEOUT_S = 10.0  # a supervisor answers in milliseconds; this is for a wedged server
RETRY_AFTER_S = 30.0  # a server that died before it was ready is started again after this,
MAX_RETRY_AFTER_S = 3600.0  # twice as long after each such failure, up to this
_HEADER = struct.Struct("!I")


def can_run(argv: Sequence[str], extra_env: Mapping[str, str], has_script: bool) -> bool:
    """Whether an attempt can start warm: a worker attempt that keeps the interpreter's
    start-up as it is (no PYTHON*, LANG or LC_* of its own)."""
    return (
        not has_script
        and list(argv[1:]) == WORKER_ARGV_TAIL
        and not any(key.startswith(COLD_ENV_PREFIXES) for key in extra_env)
    )


class ForkServer:
    """The daemon's side of the fork server: starts it, sends it orders, notices it is gone."""

    def __init__(self, imports: Sequence[str] = ()) -> None:
        self.imports = list(imports)
        self._process: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._ready = False
        self._launch_at = 0.0  # monotonic time before which no new server is started
        self._failed_starts = 0  # in a row: servers that died before they were ready
        self._daemon_fd: int | None = None  # a pidfd of this process, for supervisors to wake it

    @property
    def pid(self) -> int | None:
        """The server's pid while one runs."""
        return self._process.pid if self._process is not None else None

    def start(
        self, env: dict[str, str], log_path: Path, log_fd: int, cwd: str | None
    ) -> int | None:
        """Start an attempt warm and return its supervisor's pid; None if the server is not
        there (yet): start it cold. OSError if the server took the order and then did not
        answer: nothing tells whether the attempt started, so it is not started again."""
        if not self._is_ready():
            return None
        order = {"env": env, "cwd": cwd, "log_path": str(log_path)}
        if self._daemon_fd is None:
            self._daemon_fd = os.pidfd_open(os.getpid())
        reply_r, reply_w = os.pipe()
        try:
            try:
                self._send(json.dumps(order).encode(), [log_fd, reply_w, self._daemon_fd])
            except OSError:
                self._drop("its socket failed")
                return None
            finally:
                os.close(reply_w)
            return self._await_pid(reply_r)
        finally:
            os.close(reply_r)

    def close(self) -> None:
        """Stop the server (attempts it started run on)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._process is not None:
            try:
                self._process.wait(REPLY_TIMEOUT_S)  # it exits when its socket closes
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None

    def _is_ready(self) -> bool:
        if self._process is None or self._sock is None:
            if time.monotonic() >= self._launch_at:
                self._launch()
            return False
        if self._process.poll() is not None:
            self._drop(f"it exited with {self._process.returncode}")
            return False
        if not self._ready:
            try:
                said = self._sock.recv(1, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return False  # still importing
            except OSError:
                said = b""
            if said != READY:
                self._drop("it stopped as it started")
                return False
            self._ready, self._failed_starts = True, 0
        return True

    def _launch(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            argv = [sys.executable, "-m", "cronflow.forkserver", str(theirs.fileno())]
            self._process = subprocess.Popen(
                [*argv, *self.imports],
                stdin=subprocess.DEVNULL,
                pass_fds=[theirs.fileno()],
                start_new_session=True,  # a Ctrl-C for the daemon is not for it
            )
        except OSError as exc:
            ours.close()
            self._launch_at = time.monotonic() + RETRY_AFTER_S
            log.warning("event=forkserver_not_started error=%r", str(exc))
            return
        finally:
            theirs.close()
        ours.settimeout(REPLY_TIMEOUT_S)
        self._sock, self._ready = ours, False
        log.info("event=forkserver_started pid=%s", self._process.pid)

    def _drop(self, why: str) -> None:
        """Forget the server (killing it if it still runs); the next attempt starts another,
        at once if it had served, else after RETRY_AFTER_S."""
        if not self._ready:
            self._failed_starts += 1
            delay_s = RETRY_AFTER_S * 2 ** min(self._failed_starts - 1, 10)
            self._launch_at = time.monotonic() + min(delay_s, MAX_RETRY_AFTER_S)
        log.warning("event=forkserver_gone pid=%s why=%r", self.pid, why)
        if self._sock is not None:
            self._sock.close()
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
            self._process.wait()
        self._process, self._sock, self._ready = None, None, False

    def _send(self, payload: bytes, fds: list[int]) -> None:
        assert self._sock is not None
        data = _HEADER.pack(len(payload)) + payload
        sent = socket.send_fds(self._sock, [data], fds)  # the fds go with the first bytes
        self._sock.sendall(data[sent:])

    def _await_pid(self, reply_r: int) -> int | None:
        reply = _read_reply(reply_r, REPLY_TIMEOUT_S)
        if reply is None:  # wedged: once it is killed, only a supervisor can hold the pipe
            self._drop("it did not answer")
            reply = _read_reply(reply_r, 1.0)
            if not reply:
                raise OSError("the warm Python start did not answer")
        if reply == REFUSED:  # stale: it exits, and the next attempt starts a new one
            self._drop("cronflow or a library it loaded changed")
            return None
        if not reply:  # no supervisor answered (the server died, or the supervisor could not
            return None  # write its pid file): nothing was started
        return int(reply)


def _read_reply(fd: int, timeout_s: float) -> bytes | None:
    """The supervisor's pid line, b"" if the pipe closed without one, None on timeout."""
    deadline = time.monotonic() + timeout_s
    data = b""
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        chunk = os.read(fd, 64)
        if not chunk:
            return b""
        data += chunk
    return data


# --- the server process -----------------------------------------------------------------------
@dataclass
class Order:
    """One attempt to start, as the server receives it."""

    env: dict[str, str]
    cwd: str | None
    log_path: Path
    log_fd: int
    reply_fd: int
    daemon_fd: int  # a pidfd of the daemon

    def close(self) -> None:
        for fd in (self.log_fd, self.reply_fd, self.daemon_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


def main(argv: list[str]) -> int:
    """The server: returns 0 when the daemon is gone, or, in a forked task, the task's code."""
    sock = socket.socket(fileno=int(argv[1]))
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the supervisors
    for name in (*PRELOADED, *argv[2:]):
        try:
            import_module(name)
        except Exception as exc:  # a task importing it will say so in its own log
            print(f"cronflow fork server: cannot import {name}: {exc}", file=sys.stderr)
    from cronflow.store import preload_writer

    preload_writer()
    files = _loaded_files()
    stamp = _stamp(files)
    if threading.active_count() > 1:
        names = ", ".join(t.name for t in threading.enumerate())
        print(f"cronflow fork server: an import started a thread ({names})", file=sys.stderr)
        return 1
    sys.stdout.flush()
    sys.stderr.flush()
    server_modules = set(sys.modules)
    gc.freeze()  # the collector in each task leaves the server's objects (and their pages) be
    sock.sendall(READY)
    order = _serve(sock, files, stamp)
    if order is None:
        return 0
    _end_task(_run_task(order), server_modules)


def _end_task(code: int, server_modules: set[str]) -> NoReturn:
    """End the task as an interpreter ends, but for the teardown of the modules it shares with
    the server (what costs a cold worker ~80 ms): wait for its threads, run its atexit
    functions, release the modules it imported itself (the flow file's, so what they hold is
    finalized), flush, exit."""
    threading._shutdown()  # type: ignore[attr-defined]  # what the interpreter calls at exit
    atexit._run_exitfuncs()
    for name in set(sys.modules) - server_modules:
        sys.modules.pop(name, None)
    gc.collect()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _serve(sock: socket.socket, files: list[str], stamp: list[object]) -> Order | None:
    """Fork an attempt per order until the daemon is gone (None) or the server is stale;
    in a forked task, its order."""
    while True:
        order = _receive(sock)
        if order is None:
            return None
        why = _unfit(files, stamp)
        if why:
            print(f"cronflow fork server: exiting: {why}", file=sys.stderr)
            with contextlib.suppress(OSError):
                os.write(order.reply_fd, REFUSED)  # the daemon starts this one cold
            order.close()
            return None
        if _fork_attempt(order, sock):
            return order
        order.close()


def _unfit(files: list[str], stamp: list[object]) -> str | None:
    if threading.active_count() > 1:
        return "a thread is running"
    if _stamp(files) != stamp:
        return "cronflow or a library it loaded changed"
    return None


def _receive(sock: socket.socket) -> Order | None:
    try:
        data, fds, _flags, _addr = socket.recv_fds(sock, 1 << 16, 3)
    except OSError:
        return None
    if len(data) < _HEADER.size or len(fds) != 3:
        for fd in fds:
            os.close(fd)
        return None
    (length,) = _HEADER.unpack(data[: _HEADER.size])
    payload = data[_HEADER.size :]
    while len(payload) < length:
        chunk = sock.recv(length - len(payload))
        if not chunk:
            return None
        payload += chunk
    fields = json.loads(payload)
    return Order(fields["env"], fields["cwd"], Path(fields["log_path"]), *fds)


def _fork_attempt(order: Order, sock: socket.socket) -> bool:
    """Fork the attempt's supervisor: False in the server, True in the task it forks in turn.
    The supervisor itself never returns."""
    if os.fork() != 0:
        return False
    try:
        sock.close()
        os.setsid()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # the group's SIGTERM is for the task
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        null_fd = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null_fd, 0)
        os.dup2(order.log_fd, 1)
        os.dup2(order.log_fd, 2)
        os.close(null_fd)
        os.close(order.log_fd)
        supervisor.record_supervisor(order.log_path)
        os.write(order.reply_fd, f"{os.getpid()}\n".encode())
        os.close(order.reply_fd)
    except BaseException as exc:  # no reply: the daemon starts the attempt cold
        with contextlib.suppress(Exception):
            print(f"cronflow fork server: cannot start the attempt: {exc}", file=sys.stderr)
        os._exit(1)
    try:
        task = os.fork()
        if task == 0:
            os.close(order.daemon_fd)
            return True
        _pid, status = os.waitpid(task, 0)
        code = os.waitstatus_to_exitcode(status)
        code = 128 - code if code < 0 else code  # as a shell reports a signal
    except BaseException as exc:
        with contextlib.suppress(Exception):
            print(f"cronflow: cannot start the task: {exc}", file=sys.stderr)
        code = 127
    with contextlib.suppress(BaseException):
        sys.stderr.flush()
        supervisor.record_status(order.log_path, code)
    with contextlib.suppress(OSError):  # a daemon that is gone learns it from the record
        signal.pidfd_send_signal(order.daemon_fd, signal.SIGCHLD)
    os._exit(code)


def _run_task(order: Order) -> int:
    """In the forked task: become what `python -m cronflow.worker` would be, and run it."""
    _fresh_signals()
    os.environ.clear()
    os.environ.update(order.env)
    os.environ[supervisor.RECORD_VAR] = str(supervisor.status_path(order.log_path))
    time.tzset()
    if order.cwd is not None:
        os.chdir(order.cwd)
        if not sys.flags.safe_path:
            sys.path[0] = os.getcwd()  # what `python -m` puts first
    _fresh_stdio()
    from cronflow import worker

    sys.argv = [str(worker.__file__)]
    return worker.main()


def _fresh_signals() -> None:
    """Signal handlers and mask as a new interpreter has them."""
    for sig in signal.valid_signals():
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        handler: object = signal.SIG_DFL
        if sig == signal.SIGINT:
            handler = signal.default_int_handler
        elif sig in (signal.SIGPIPE, signal.SIGXFSZ):
            handler = signal.SIG_IGN
        with contextlib.suppress(OSError, ValueError):
            signal.signal(sig, handler)  # type: ignore[arg-type]
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def _fresh_stdio() -> None:
    """sys.stdin, stdout and stderr on the attempt's fds 0-2, made as a new interpreter makes
    them (the server's were made for its own)."""
    encoding, errors = sys.stdout.encoding, sys.stdout.errors
    streams = {
        "stdin": open(0, encoding=encoding, errors=errors, closefd=False),  # noqa: SIM115
        "stdout": open(  # noqa: SIM115
            1,
            "w",
            buffering=1 if os.isatty(1) else -1,
            encoding=encoding,
            errors=errors,
            closefd=False,
        ),
        "stderr": open(  # noqa: SIM115
            2, "w", buffering=1, encoding=encoding, errors="backslashreplace", closefd=False
        ),
    }  # the interpreter's, for its lifetime
    for name, stream in streams.items():
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)


def _loaded_files() -> list[str]:
    """The interpreter and the files of every loaded module outside the standard library."""
    paths = sysconfig.get_paths()
    stdlib = tuple({paths["stdlib"], paths["platstdlib"]})
    files = {sys.executable}
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if isinstance(path, str) and not path.startswith(stdlib):
            files.add(path)
    return sorted(files)


def _stamp(files: list[str]) -> list[object]:
    stamp: list[object] = []
    for path in files:
        try:
            info = os.stat(path)
        except OSError:
            stamp.append(None)
        else:
            stamp.append((info.st_mtime_ns, info.st_size, info.st_ino))
    return stamp


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""The fork server's process (`python -m cronflow.zygote`): imports cronflow once, then forks
a supervisor and a task per order from the daemon. cronflow.forkserver, its daemon side, says
why and how; this module is what runs in the server, its supervisors and its tasks.

Each order is served by a double fork: the supervisor (setsid: it leads the attempt's session
and group; ignores the group's SIGTERM; writes try-N.pid, answers its pid, waits for the task,
appends its exit status to try-N.status, wakes the daemon) and the task, which resets what the
server set up (signals, environment, stdio, argv) and runs cronflow.worker's main() as a cold
worker would, then ends without tearing the shared modules down (`_end_task`).
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import json
import os
import signal
import socket
import sys
import sysconfig
import threading
import time
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import NoReturn

from cronflow import supervisor
from cronflow.forkserver import HEADER, READY, REFUSED

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


@dataclass
class Order:
    """One attempt to start, as the server receives it."""

    env: dict[str, str]
    cwd: str | None
    umask: int
    log_path: Path
    log_fd: int
    reply_fd: int
    daemon_fd: int  # a pidfd of the daemon

    def close(self) -> None:
        for fd in (self.log_fd, self.reply_fd, self.daemon_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


def main(argv: list[str]) -> int:
    """The server: 0 once the daemon is gone or the server is stale, 1 if it cannot serve (an
    import started a thread). A forked task never returns: it ends in `_end_task`."""
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
    if _threads() > 1:
        print(
            f"cronflow fork server: not started: an import started {_threads() - 1} thread(s)"
            " (numpy's OpenBLAS does: OPENBLAS_NUM_THREADS=1 in the daemon's environment)",
            file=sys.stderr,
        )
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
    if _threads() > 1:
        return "a thread is running"
    if _stamp(files) != stamp:
        return "cronflow or a library it loaded changed"
    return None


def _receive(sock: socket.socket) -> Order | None:
    try:
        data, fds, _flags, _addr = socket.recv_fds(sock, 1 << 16, 3)
    except OSError:
        return None
    if len(data) < HEADER.size or len(fds) != 3:
        for fd in fds:
            os.close(fd)
        return None
    (length,) = HEADER.unpack(data[: HEADER.size])
    payload = data[HEADER.size :]
    while len(payload) < length:
        chunk = sock.recv(length - len(payload))
        if not chunk:
            return None
        payload += chunk
    fields = json.loads(payload)
    return Order(fields["env"], fields["cwd"], int(fields["umask"]), Path(fields["log_path"]), *fds)


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
    os.umask(order.umask)
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


def _threads() -> int:
    """This process's threads, those of C libraries included (threading sees only Python's)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


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

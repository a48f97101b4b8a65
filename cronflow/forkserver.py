"""Python attempts started warm: a fork server that has imported cronflow once forks each one.

Why: a Python-side attempt (every task kind but shell) started cold is a new interpreter that
imports cronflow, the store, Jinja and the operators' libraries before the task's first line,
most of its cost. The LocalExecutor starts this server (`python -m cronflow.zygote`, in its own
session) at the first such attempt; it imports all that once, with the modules named by
`warm_imports` in cronflow.toml, and then forks one process tree per attempt:

    daemon -- order: environment, log fd, reply pipe (over a socket) --> fork server
    fork server -- fork --> supervisor: setsid, writes try-N.pid, replies its pid, forks:
    supervisor -- fork --> task: fresh signals, environment and stdio; cronflow.worker's main()
    supervisor: waits for the task, appends its exit status to try-N.status, wakes the
                daemon (SIGCHLD through a pidfd the order carries), exits

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
the interpreter's start-up (PYTHON*, LANG, LC_* in its environment). Differences from a cold
start: the attempts share the server's hash randomization seed, and a task ends without the
teardown of the modules it shares with the server (its threads are joined and its atexit
functions run; the teardown is most of what a cold worker's end costs). The server's process
is cronflow.zygote; this module is the daemon's side.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

log = logging.getLogger("cronflow.forkserver")

WORKER_ARGV_TAIL = ["-m", "cronflow.worker"]  # what ops.launch_for runs for a Python-side task
COLD_ENV_PREFIXES = ("PYTHON", "LANG", "LC_")  # read by the interpreter as it starts
READY = b"R"
REFUSED = b"-\n"  # the server's answer to an order when it is stale: it exits
REPLY_TIMEOUT_S = 10.0  # a supervisor answers in milliseconds; this is for a wedged server
RETRY_AFTER_S = 30.0  # a server that died before it was ready is started again after this,
MAX_RETRY_AFTER_S = 3600.0  # twice as long after each such failure, up to this
HEADER = struct.Struct("!I")  # an order: its length, then its JSON


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
        self, env: dict[str, str], log_path: Path, log_fd: int, cwd: str | None, umask: int
    ) -> int | None:
        """Start an attempt warm and return its supervisor's pid; None if the server is not
        there (yet): start it cold. OSError if the server took the order and then did not
        answer: nothing tells whether the attempt started, so it is not started again."""
        if not self._is_ready():
            return None
        order = {"env": env, "cwd": cwd, "log_path": str(log_path), "umask": umask}
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
            argv = [sys.executable, "-m", "cronflow.zygote", str(theirs.fileno())]
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
        data = HEADER.pack(len(payload)) + payload
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

"""Running task attempts as processes, behind one small interface.

LocalExecutor starts each attempt in its own session (so its own process group), with stdout and
stderr going straight to the attempt's log file: the daemon never reads a pipe from a task, so a
task that prints megabytes or leaves a grandchild behind cannot block it. Every attempt's
environment carries a marker (CRONFLOW_ATTEMPT) so that processes which left the group (setsid,
double fork) are still found and killed on a timeout, and orphans are found after a daemon crash.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from cronflow.logs import open_attempt_log

MARKER_VAR = "CRONFLOW_ATTEMPT"
KILL_GRACE_S = 5.0


@dataclass
class Attempt:
    """One try of one task instance, as the executor sees it."""

    run_id: int
    task_id: str
    try_number: int
    pool: str
    argv: list[str]
    env: dict[str, str]
    cwd: str | None
    log_path: Path
    timeout_s: float | None
    marker: str
    stdin: str | None = None  # standard input text (Shell stdin=), else end-of-file

    @property
    def key(self) -> tuple[int, str]:
        return (self.run_id, self.task_id)


@dataclass
class Finished:
    """How an attempt ended: its exit code (negative = killed by that signal) and why."""

    attempt: Attempt
    exit_code: int
    duration_s: float
    reason: str | None = None


class _Child:
    """A started process: its pid, and its exit code once reaped (negative = signal)."""

    def __init__(self, pid: int, popen: subprocess.Popen[bytes] | None = None) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._popen = popen  # kept so that subprocess never reaps it behind our back

    def poll(self) -> int | None:
        if self._popen is not None:
            self.returncode = self._popen.poll()
        elif self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: its code is lost
                self.returncode = -signal.SIGKILL
                return self.returncode
            if pid == self.pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


@dataclass
class _Running:
    attempt: Attempt
    process: _Child
    started: float
    deadline: float | None
    kill_reason: str | None = None
    kill_at: float | None = None


class LocalExecutor:
    """At most `parallelism` attempts at once, as child processes of the daemon."""

    def __init__(self, parallelism: int) -> None:
        self.parallelism = parallelism
        self._running: dict[tuple[int, str], _Running] = {}
        self._base_env = dict(os.environ)  # read once: os.environ decodes on every access

    @property
    def free_slots(self) -> int:
        return self.parallelism - len(self._running)

    def running(self) -> list[Attempt]:
        return [r.attempt for r in self._running.values()]

    def pool_usage(self) -> dict[str, int]:
        usage: dict[str, int] = {}
        for r in self._running.values():
            usage[r.attempt.pool] = usage.get(r.attempt.pool, 0) + 1
        return usage

    def start(self, attempt: Attempt) -> int:
        """Start an attempt and return its pid; OSError if it cannot be started."""
        env = {**self._base_env, **attempt.env, MARKER_VAR: attempt.marker}
        log_fd = open_attempt_log(attempt.log_path)
        stdin = _stdin_file(attempt.stdin)
        try:
            child = _spawn(attempt, env, stdin.fileno() if stdin else None, log_fd)
        finally:
            os.close(log_fd)
            if stdin is not None:
                stdin.close()
        started = time.monotonic()
        deadline = started + attempt.timeout_s if attempt.timeout_s else None
        self._running[attempt.key] = _Running(attempt, child, started, deadline)
        return child.pid

    def reap(self) -> list[Finished]:
        """Attempts that ended since the last call. Never blocks."""
        finished = []
        for key, r in list(self._running.items()):
            code = r.process.poll()
            if code is None:
                continue
            del self._running[key]
            if r.kill_reason:
                # Whatever the group left behind goes too: a timed-out task ends entirely.
                _kill_everything(r.process.pid, r.attempt.marker, signal.SIGKILL)
            finished.append(Finished(r.attempt, code, time.monotonic() - r.started, r.kill_reason))
        return finished

    def enforce(self) -> None:
        """Stop attempts past their timeout: SIGTERM to the whole group, SIGKILL after a grace."""
        now = time.monotonic()
        for r in self._running.values():
            if r.kill_reason is None and r.deadline is not None and now >= r.deadline:
                self._signal(r, f"timed out after {r.attempt.timeout_s:g}s", signal.SIGTERM)
            elif r.kill_at is not None and now >= r.kill_at:
                _kill_everything(r.process.pid, r.attempt.marker, signal.SIGKILL)
                r.kill_at = None

    def kill(self, key: tuple[int, str], reason: str) -> None:
        """Stop one attempt (e.g. marked by the CLI, or at shutdown)."""
        r = self._running.get(key)
        if r is not None and r.kill_reason is None:
            self._signal(r, reason, signal.SIGTERM)

    def _signal(self, r: _Running, reason: str, sig: signal.Signals) -> None:
        r.kill_reason = reason
        r.deadline = None
        r.kill_at = time.monotonic() + KILL_GRACE_S
        _kill_everything(r.process.pid, r.attempt.marker, sig)

    def next_deadline(self) -> float | None:
        """The monotonic time at which enforce() next has something to do."""
        times = [t for r in self._running.values() for t in (r.deadline, r.kill_at) if t]
        return min(times) if times else None


def _spawn(attempt: Attempt, env: dict[str, str], stdin_fd: int | None, log_fd: int) -> _Child:
    """Start the attempt in a new session with stdout and stderr on its log. posix_spawn costs
    a fraction of subprocess.Popen's fork+exec; every descriptor the daemon holds is
    close-on-exec (Python's default, and SQLite's), so none leaks into the task."""
    if attempt.cwd is not None:  # posix_spawn cannot change directory before Python 3.13
        popen = subprocess.Popen(
            attempt.argv,
            stdin=stdin_fd if stdin_fd is not None else subprocess.DEVNULL,
            stdout=log_fd,
            stderr=subprocess.STDOUT,
            cwd=attempt.cwd,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
        return _Child(popen.pid, popen)
    null_fd = os.open(os.devnull, os.O_RDONLY) if stdin_fd is None else None
    try:
        actions = [
            (os.POSIX_SPAWN_DUP2, stdin_fd if stdin_fd is not None else null_fd, 0),
            (os.POSIX_SPAWN_DUP2, log_fd, 1),
            (os.POSIX_SPAWN_DUP2, log_fd, 2),
        ]
        pid = os.posix_spawnp(attempt.argv[0], attempt.argv, env, file_actions=actions, setsid=True)
        return _Child(pid)
    finally:
        if null_fd is not None:
            os.close(null_fd)


def _stdin_file(text: str | None) -> IO[bytes] | None:
    """An unlinked temporary file holding `text`: the task reads it at its own pace, and the
    daemon never writes to a pipe that could fill up."""
    if text is None:
        return None
    handle = tempfile.TemporaryFile()  # noqa: SIM115 - closed by start() once the task has it
    handle.write(text.encode("utf-8", "surrogateescape"))
    handle.seek(0)
    return handle


def _kill_everything(pgid: int, marker: str, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
    for pid in find_marked(marker):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def find_marked(marker: str, prefix: bool = False) -> list[int]:
    """Pids of this user's processes whose environment carries the attempt marker."""
    return list(_marked(marker, prefix))


def _marked(marker: str, prefix: bool) -> dict[int, str]:
    """pid -> the full marker value, for processes whose marker is (or starts with) `marker`."""
    needle = f"{MARKER_VAR}={marker}".encode()
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as handle:
                environ = handle.read().split(b"\0")
        except OSError:
            continue
        for value in environ:
            if value == needle or (prefix and value.startswith(needle)):
                found[int(entry.name)] = value.decode(errors="replace").split("=", 1)[1]
                break
    return found


def kill_orphans(marker_prefix: str) -> dict[int, str]:
    """Kill (SIGKILL, whole groups) every process left by an earlier daemon for this home;
    returns pid -> marker, so the caller can tell which attempt each one was."""
    found = _marked(marker_prefix, prefix=True)
    for pid in found:
        for kill in (os.killpg, os.kill):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                kill(pid, signal.SIGKILL)
    return found

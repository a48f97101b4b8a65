"""Running task attempts as processes, behind one small interface.

LocalExecutor starts each attempt in its own session (so its own process group), with stdout and
stderr going straight to the attempt's log file: the daemon never reads a pipe from a task, so a
task that prints megabytes or leaves a grandchild behind cannot block it. Every attempt's
environment carries a marker (CRONFLOW_ATTEMPT) so that processes which left the group (setsid,
double fork) are still found and killed on a timeout, and after a daemon crash.

Each attempt runs under its supervisor (cronflow.supervisor), which records the task's exit
status where a daemon crash cannot lose it. A restarted daemon `adopt`s the attempts of the one
before: one still running is tracked to its end (its supervisor is no longer our child, so a
pidfd tells when it ends, and a poll every ADOPTED_POLL_S notices); one that ended meanwhile is
settled from its record.

A Python-side attempt starts warm when it can: forked by a server that has imported cronflow
already (cronflow.forkserver), under a forked supervisor that writes the same record; the
executor follows it by pidfd, like an adopted one. Otherwise, and when the server is not there,
it starts cold as above.

When an attempt's main process ends, whatever it left in its process group (`sleep 300 &`) is
stopped (SIGTERM, SIGKILL after KILL_GRACE_S), unless the attempt keeps its background processes
(Shell's keep_background=True, for a job that starts a daemon). Finished says how many.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

from cronflow import forkserver, supervisor
from cronflow.logs import open_attempt_log

MARKER_VAR = "CRONFLOW_ATTEMPT"
KILL_GRACE_S = 5.0
ADOPTED_POLL_S = 0.5  # how soon the end of an attempt started by an earlier daemon is noticed
LOST = "lost: the daemon stopped and the task left no exit status"
# Every signal a task starts with at its default action, as under cron or systemd. Python
# ignores SIGPIPE and SIGXFSZ, and an ignored signal stays ignored across exec: without this a
# task's `zcat big | head` went on writing into the closed pipe ("Broken pipe", a failure under
# `set -o pipefail`) instead of ending as it does in a terminal.
DEFAULT_SIGNALS = frozenset(signal.valid_signals()) - {signal.SIGKILL, signal.SIGSTOP}
# What systemd gives the daemon itself (its notification socket, watchdog, passed sockets):
# not for its tasks. A task that speaks sd_notify would otherwise write to the daemon's socket
# (systemd refuses it and logs a warning under NotifyAccess=main) or think it has a watchdog.
SERVICE_MANAGER_VARS = frozenset(
    {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"}
)


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
    # A shell script, written to the attempt's private command file whose path ends argv:
    # the rendered command never appears on a command line.
    script: str | None = None
    keep_background: bool = False  # leave what the task started in the background running
    queue: str | None = None  # a Celery queue: run on a worker serving it (cronflow.celery)

    @property
    def key(self) -> tuple[int, str]:
        return (self.run_id, self.task_id)


@dataclass
class Finished:
    """How an attempt ended: its exit code (negative = killed by that signal; None = unknown)
    and why; `stopped` processes it left behind were stopped, `kept` were left running."""

    attempt: Attempt
    exit_code: int | None
    duration_s: float
    reason: str | None = None
    ended_at: float | None = None  # when the record says it ended (an adopted attempt)
    stopped: int = 0
    kept: int = 0
    notes: tuple[str, ...] = ()  # from its exit record, e.g. its output could not be logged
    given_back: bool = False  # it never ran (nobody took it from its queue): not counted


class Executor(Protocol):
    """What the scheduler asks of an executor: LocalExecutor here, CeleryExecutor in
    cronflow.celery (attempts on workers)."""

    @property
    def free_slots(self) -> int: ...
    def running(self) -> list[Attempt]: ...
    def pool_usage(self) -> dict[str, int]: ...
    def hold(self, queue: str | None) -> str | None: ...
    def start(self, attempt: Attempt) -> int: ...
    def adopt(self, attempt: Attempt, pid: int | None, elapsed_s: float) -> None: ...
    def reap(self) -> list[Finished]: ...
    def enforce(self) -> None: ...
    def kill(self, key: tuple[int, str], reason: str) -> None: ...
    def next_deadline(self) -> float | None: ...


class _Child:
    """A process we started: its pid, and its exit code once reaped (negative = signal)."""

    adopted = False
    ending: supervisor.Ending | None = None  # read from the record only for adopted ones

    def __init__(self, pid: int, popen: subprocess.Popen[bytes] | None = None) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._popen = popen  # kept so that subprocess never reaps it behind our back

    def ended(self) -> bool:
        if self._popen is not None:
            self.returncode = self._popen.poll()
        elif self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: its code is lost
                self.returncode = -signal.SIGKILL
                return True
            if pid == self.pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode is not None

    def signal(self, marker: str, sig: signal.Signals) -> None:
        _kill_everything(self.pid, marker, sig)


class _Forked:
    """The supervisor of a warm attempt (cronflow.forkserver): the fork server's child, not
    ours, so a pidfd tells when it ends and its record how (no record: it was killed)."""

    adopted = False
    ending: supervisor.Ending | None = None

    def __init__(self, pid: int, log_path: Path) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._log_path = log_path
        self._pidfd: int | None = None
        with contextlib.suppress(ProcessLookupError):
            self._pidfd = os.pidfd_open(pid)
        if self._pidfd is not None and supervisor.read_ending(log_path) is not None:
            self._close()  # it ended before the pidfd was open: the pid may be another's now

    def ended(self) -> bool:
        if self.returncode is not None:
            return True
        if self._pidfd is not None:
            if not select.select([self._pidfd], [], [], 0)[0]:
                # The SIGCHLD it sends comes just before its exit: once its record is written,
                # it is ending.
                if supervisor.read_ending(self._log_path) is None:
                    return False
                if not select.select([self._pidfd], [], [], 1.0)[0]:
                    return False
            self._close()
        ending = supervisor.read_ending(self._log_path)
        self.returncode = ending.exit_code if ending else -signal.SIGKILL
        return True

    def signal(self, marker: str, sig: signal.Signals) -> None:
        if self._pidfd is not None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, sig)
        _kill_everything(self.pid, marker, sig)

    def _close(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None


class _Adopted:
    """The supervisor of an attempt an earlier daemon started (None: it had ended already).
    Not our child: a pidfd tells when it ends, its record how."""

    adopted = True

    def __init__(self, pid: int | None, log_path: Path) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.ending: supervisor.Ending | None = None
        self._log_path = log_path
        self._pidfd: int | None = None
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                self._pidfd = os.pidfd_open(pid)

    def ended(self) -> bool:
        if self._pidfd is not None:
            if not select.select([self._pidfd], [], [], 0)[0]:
                return False
            os.close(self._pidfd)
            self._pidfd = None
        self.ending = supervisor.read_ending(self._log_path)
        self.returncode = self.ending.exit_code if self.ending else None
        return True

    def signal(self, marker: str, sig: signal.Signals) -> None:
        # Its group: only while it lives (its pid, the group's number, is then reserved); the
        # marker finds the rest, and everything once it has ended.
        if self._pidfd is not None and self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, sig)
                os.killpg(self.pid, sig)
        _kill_marked(marker, sig)


@dataclass
class _Running:
    attempt: Attempt
    process: _Child | _Forked | _Adopted
    started: float
    deadline: float | None
    kill_reason: str | None = None
    kill_at: float | None = None


@dataclass
class _Lingering:
    """Processes a finished attempt left behind: SIGTERM sent, SIGKILL at `kill_at`."""

    pidfds: list[int] = field(default_factory=list)
    kill_at: float = 0.0


class LocalExecutor:
    """At most `parallelism` attempts at once, as child processes of the daemon (or of its
    fork server: Python-side attempts when `warm_imports` is not None, see cronflow.forkserver;
    it imports those modules beside cronflow's)."""

    def __init__(
        self, parallelism: int, warm_imports: list[str] | None = None, umask: int = 0o022
    ) -> None:
        self.parallelism = parallelism
        self.umask = umask  # every attempt's (cronflow.toml's task_umask)
        self.forkserver = None if warm_imports is None else forkserver.ForkServer(warm_imports)
        self._running: dict[tuple[int, str], _Running] = {}
        self._lingering: list[_Lingering] = []
        self._base_env = base_environment()  # read once: os.environ decodes on every access
        self._null_fd: int | None = None  # /dev/null, every attempt's stdin by default

    def _devnull(self) -> int:
        """/dev/null, opened once (close-on-exec; the spawn gives each task its own copy)."""
        if self._null_fd is None:
            self._null_fd = os.open(os.devnull, os.O_RDONLY)
        return self._null_fd

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

    def hold(self, queue: str | None) -> str | None:
        """Why an attempt for `queue` cannot be started now ("" if it needs no saying), or
        None if it can. The local executor runs every queue itself."""
        return None

    def start(self, attempt: Attempt) -> int:
        """Start an attempt under its supervisor and return the supervisor's pid; OSError if it
        cannot be started."""
        env = {**self._base_env, **attempt.env, MARKER_VAR: attempt.marker}
        argv = attempt.argv
        if attempt.script is not None:
            argv = [*argv, str(supervisor.write_command(attempt.log_path, attempt.script))]
        argv = supervisor.supervised(argv, attempt.log_path, self.umask)
        log_fd = open_attempt_log(attempt.log_path)
        stdin = _stdin_file(attempt.stdin)
        try:
            stdin_fd = stdin.fileno() if stdin else self._devnull()
            child = self._start_warm(attempt, env, log_fd) or _spawn(
                argv, attempt.cwd, env, stdin_fd, log_fd
            )
        finally:
            os.close(log_fd)
            if stdin is not None:
                stdin.close()
        started = time.monotonic()
        deadline = started + attempt.timeout_s if attempt.timeout_s else None
        self._running[attempt.key] = _Running(attempt, child, started, deadline)
        return child.pid

    def _start_warm(self, attempt: Attempt, env: dict[str, str], log_fd: int) -> _Forked | None:
        """The attempt forked by the fork server, or None: start it cold."""
        if self.forkserver is None or attempt.stdin is not None:
            return None
        if not forkserver.can_run(attempt.argv, attempt.env, attempt.script is not None):
            return None
        pid = self.forkserver.start(env, attempt.log_path, log_fd, attempt.cwd, self.umask)
        return None if pid is None else _Forked(pid, attempt.log_path)

    def close(self) -> None:
        """Stop the fork server, if any (the attempts it started run on)."""
        if self.forkserver is not None:
            self.forkserver.close()

    def adopt(self, attempt: Attempt, pid: int | None, elapsed_s: float) -> None:
        """Track an attempt an earlier daemon started `elapsed_s` ago: `pid` is its supervisor
        if it still runs, else None (it ended; its record says how, if at all). Its timeout
        counts from its real start."""
        started = time.monotonic() - max(0.0, elapsed_s)
        deadline = started + attempt.timeout_s if attempt.timeout_s else None
        process = _Adopted(pid, attempt.log_path)
        self._running[attempt.key] = _Running(attempt, process, started, deadline)

    def reap(self) -> list[Finished]:
        """Attempts that ended since the last call. Never blocks."""
        finished = []
        for key, r in list(self._running.items()):
            if not r.process.ended():
                continue
            del self._running[key]
            stopped = kept = 0
            if r.kill_reason:
                # Whatever the group left behind goes too: a timed-out task ends entirely.
                r.process.signal(r.attempt.marker, signal.SIGKILL)
            elif r.attempt.keep_background:
                kept = len(self._leftovers(r))
            else:
                stopped = self._stop_leftovers(r)
            finished.append(self._finished(r, stopped, kept))
        return finished

    def _finished(self, r: _Running, stopped: int, kept: int) -> Finished:
        duration_s = time.monotonic() - r.started
        ended = Finished(r.attempt, r.process.returncode, duration_s, r.kill_reason)
        ended.stopped, ended.kept = stopped, kept
        ending = (
            r.process.ending if r.process.adopted else supervisor.read_ending(r.attempt.log_path)
        )
        if ending is not None:
            ended.notes = ending.notes
        if r.process.adopted:  # its record is all there is: when it ended, and how
            if ending is None:
                ended.reason = ended.reason or LOST
            else:
                ended.ended_at = ending.ended_at
                ended.duration_s = max(0.0, duration_s - max(0.0, time.time() - ending.ended_at))
        return ended

    def _leftovers(self, r: _Running) -> list[int]:
        """Processes the attempt left behind: its process group, and anything with its marker.
        The group's number stays reserved while any member lives, so a group that answers
        still is this attempt's; the full scan of /proc runs only then (or when adopted)."""
        pgid = r.process.pid
        if r.process.adopted or pgid is None:
            return find_marked(r.attempt.marker)
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return sorted(set(_group_members(pgid)) | set(find_marked(r.attempt.marker)))

    def _stop_leftovers(self, r: _Running) -> int:
        pids = self._leftovers(r)
        if not pids:
            return 0
        lingering = _Lingering(kill_at=time.monotonic() + KILL_GRACE_S)
        for pid in pids:
            try:
                pidfd = os.pidfd_open(pid)  # pins the process: the SIGKILL cannot hit a new one
            except (ProcessLookupError, PermissionError):
                continue
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(pidfd, signal.SIGTERM)
            lingering.pidfds.append(pidfd)
        if lingering.pidfds:
            self._lingering.append(lingering)
        return len(lingering.pidfds)

    def enforce(self) -> None:
        """Stop attempts past their timeout: SIGTERM to the whole group, SIGKILL after a grace;
        and SIGKILL what finished attempts left behind once its grace is over."""
        now = time.monotonic()
        for r in self._running.values():
            if r.kill_reason is None and r.deadline is not None and now >= r.deadline:
                self._signal(r, f"timed out after {r.attempt.timeout_s:g}s", signal.SIGTERM)
            elif r.kill_at is not None and now >= r.kill_at:
                r.process.signal(r.attempt.marker, signal.SIGKILL)
                r.kill_at = None
        for lingering in [entry for entry in self._lingering if now >= entry.kill_at]:
            self._lingering.remove(lingering)
            for pidfd in lingering.pidfds:
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                os.close(pidfd)

    def kill(self, key: tuple[int, str], reason: str) -> None:
        """Stop one attempt (e.g. marked by the CLI, or at shutdown)."""
        r = self._running.get(key)
        if r is not None and r.kill_reason is None:
            self._signal(r, reason, signal.SIGTERM)

    def _signal(self, r: _Running, reason: str, sig: signal.Signals) -> None:
        r.kill_reason = reason
        r.deadline = None
        r.kill_at = time.monotonic() + KILL_GRACE_S
        r.process.signal(r.attempt.marker, sig)

    def next_deadline(self) -> float | None:
        """The monotonic time at which enforce() or reap() next has something to do."""
        times = [t for r in self._running.values() for t in (r.deadline, r.kill_at) if t]
        times += [entry.kill_at for entry in self._lingering]
        # Nothing wakes the daemon when an adopted attempt ends, nor a warm one that was killed.
        if any(
            r.process.adopted or (r.kill_reason and isinstance(r.process, _Forked))
            for r in self._running.values()
        ):
            times.append(time.monotonic() + ADOPTED_POLL_S)
        return min(times) if times else None


def _spawn(
    argv: list[str], cwd: str | None, env: dict[str, str], stdin_fd: int, log_fd: int
) -> _Child:
    """Start argv in a new session with stdout and stderr on its log. posix_spawn costs
    a fraction of subprocess.Popen's fork+exec; every descriptor the daemon holds is
    close-on-exec (Python's default, and SQLite's), so none leaks into the task."""
    if cwd is not None:  # posix_spawn cannot change directory before Python 3.13
        popen = subprocess.Popen(
            argv,
            stdin=stdin_fd,
            stdout=log_fd,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
        return _Child(popen.pid, popen)
    actions = [
        (os.POSIX_SPAWN_DUP2, stdin_fd, 0),
        (os.POSIX_SPAWN_DUP2, log_fd, 1),
        (os.POSIX_SPAWN_DUP2, log_fd, 2),
    ]
    return _Child(
        os.posix_spawn(
            argv[0], argv, env, file_actions=actions, setsid=True, setsigdef=DEFAULT_SIGNALS
        )
    )


def base_environment() -> dict[str, str]:
    """The environment every task and callback starts from: this process's, without what the
    service manager meant for this process alone."""
    return {key: value for key, value in os.environ.items() if key not in SERVICE_MANAGER_VARS}


def keep_inherited_descriptors() -> None:
    """Make what this process (the daemon, a worker) was started with beyond stdio
    close-on-exec. Tasks start by posix_spawn, which passes every inheritable descriptor on:
    a daemon started from a shell, a CI runner or cron handed each task that parent's
    descriptors, and a pipe among them kept whoever reads it from seeing its end while any
    task ran."""
    for name in os.listdir("/proc/self/fd"):
        if int(name) > 2:
            with contextlib.suppress(OSError):  # the listing's own descriptor, closed by now
                os.set_inheritable(int(name), False)


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
    _kill_marked(marker, sig)


def _kill_marked(marker: str, sig: signal.Signals) -> None:
    for pid in find_marked(marker):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _group_members(pgid: int) -> list[int]:
    """Pids of the processes in process group `pgid` (from /proc/PID/stat)."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid:  # after the name: state, ppid, pgrp
            members.append(int(entry.name))
    return members


def process_start_time(pid: int) -> float | None:
    """When process `pid` started, in seconds since the epoch (from /proc), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            ticks = int(handle.read().rsplit(b")", 1)[1].split()[19])
        with open("/proc/stat", "rb") as handle:
            boot = next(int(line.split()[1]) for line in handle if line.startswith(b"btime "))
    except (OSError, IndexError, ValueError, StopIteration):
        return None
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def find_marked(marker: str, prefix: bool = False) -> list[int]:
    """Pids of this user's processes whose environment carries the attempt marker."""
    return list(marked_processes(marker, prefix))


def marked_processes(marker: str, prefix: bool) -> dict[int, str]:
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


def kill_processes(pids: list[int]) -> None:
    """SIGKILL these processes (and the groups they lead)."""
    for pid in pids:
        for kill in (os.killpg, os.kill):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                kill(pid, signal.SIGKILL)

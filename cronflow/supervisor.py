"""How an attempt ended, recorded where a daemon crash cannot lose it, and the private command
file of a shell attempt. This module owns both files: their names, writing, reading, removal.

Why: the daemon learns of an attempt's end by waiting for its process. If the daemon dies
(kill -9, OOM, a host hiccup), a task that ends meanwhile is reaped by init and its exit status
is gone, so a restarted daemon could not tell a finished `mv` from a killed one. So every attempt
runs under a tiny supervisor, a few lines of POSIX sh (one exec of /bin/sh, no Python start),
that runs the task as its child, waits for it and writes its exit status to `try-N.status` next
to the attempt's log. The file's mtime is the end time. A restarted daemon settles each
unsettled attempt from that record (`read_ending`), adopts one whose supervisor still runs
(`is_supervisor` tells it from a reused pid, and from its own fork before that execs the task),
and fails as lost only one with neither.

The record's last line is the exit status as a POSIX shell reports it (0-255; 128+N when the
task was killed by signal N). Lines before it are notes that the attempt's own cronflow parts
add while it runs (`add_note`): the masking filter and the worker say so there when the task's
output could not be written to its log, since the log is then no place to say it. The record
says nothing of where the attempt ran, so an executor on another host can write the same file
the same way.

The supervisor survives the SIGTERM that the daemon sends to the attempt's whole process group
(a timeout, a stop) long enough to record the task's status; its trap is reset in the task, so
the task still dies of that signal. A SIGKILL ends both: only the daemon sends it, and the
daemon, alive then, knows why.

A shell task's rendered command may hold secrets, and every process's command line is
world-readable (/proc/PID/cmdline): the command goes into `try-N.cmd` instead (0600, in the
log's directory under the owner-only logs/), and the shell reads its script from there. Both
files are removed once the attempt is settled in the store (`discard`).

A warm Python attempt (cronflow.forkserver) has a forked supervisor instead of `sh`: the same
record, written by `record_status`. A forked process shows the fork server's command line and
environment in /proc, so it also leaves `try-N.pid` (its pid and start time): what tells it
from a reused pid (`is_supervisor`) and what finds it after a crash (`forked_supervisor`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cronflow.logs import open_attempt_log

SUPERVISOR_SHELL = "/bin/sh"
SUPERVISOR_TAG = "cronflow-supervisor"  # its $0: what tells a supervisor in /proc/PID/cmdline
RECORD_VAR = "CRONFLOW_STATUS_FILE"  # the record's path, in the environment of the task
_SCRIPT = f"""trap : TERM INT HUP
{RECORD_VAR}=$1
export {RECORD_VAR}
umask $2
shift 2
"$@"
code=$?
echo $code >> "${RECORD_VAR}"
exit $code
"""


@dataclass(frozen=True)
class Ending:
    """How an attempt ended, as its supervisor recorded it."""

    exit_code: int  # 0-255, as the shell reports it
    ended_at: float  # seconds since the epoch (the record's mtime)
    notes: tuple[str, ...] = ()  # what went wrong beside the task, e.g. its output was lost


def status_path(log_path: Path) -> Path:
    return log_path.absolute().with_suffix(".status")  # absolute: the task may change directory


def command_path(log_path: Path) -> Path:
    return log_path.absolute().with_suffix(".cmd")


def pid_path(log_path: Path) -> Path:
    return log_path.absolute().with_suffix(".pid")


def supervised(argv: list[str], log_path: Path, umask: int) -> list[str]:
    """The command line that runs `argv` with `umask` under the supervisor of the attempt
    logging to `log_path` (its record, in the owner-only logs/, gets that umask too)."""
    return [
        SUPERVISOR_SHELL,
        "-c",
        _SCRIPT,
        SUPERVISOR_TAG,
        str(status_path(log_path)),
        f"{umask:03o}",
        *argv,
    ]


def write_command(log_path: Path, text: str) -> Path:
    """Write a shell attempt's command to its private file (owner-only); return its path.
    OSError if it cannot be written."""
    path = command_path(log_path)
    try:
        # A new file, not truncated: on ext4, a file truncated and rewritten is flushed to
        # disk when closed (auto_da_alloc), which made each start and each discard cost a
        # disk write; a new one written and removed within seconds never reaches the disk.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # left by a crash before this try was recorded
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    except FileNotFoundError:  # its directories do not exist yet: owner-only, as the log's
        fd = open_attempt_log(path)
    try:
        data = memoryview(text.encode("utf-8", "surrogateescape"))
        while data:
            data = data[os.write(fd, data) :]
    finally:
        os.close(fd)
    return path


def read_ending(log_path: Path) -> Ending | None:
    """The recorded end of the attempt logging to `log_path`, or None if none was recorded.
    Read it only once the supervisor is gone: it writes the record just before it exits."""
    path = status_path(log_path)
    try:
        with open(path, "rb") as handle:
            text = handle.read()
            ended_at = os.fstat(handle.fileno()).st_mtime
    except OSError:
        return None
    *notes, last = text.decode(errors="replace").rstrip("\n").split("\n")
    try:
        code = int(last)
    except ValueError:  # no status line: killed before it could write one
        return None
    return Ending(code, ended_at, tuple(notes)) if 0 <= code <= 255 else None


def add_note(text: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Add a note to the record of the attempt this process belongs to (best effort: False if
    it is not part of an attempt or the record cannot be written)."""
    path = environ.get(RECORD_VAR)
    if not path:
        return False
    line = " ".join(text.split()) + "\n"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, line.encode(errors="replace"))
        finally:
            os.close(fd)
    except OSError:
        return False
    return True


def discard(log_path: Path) -> None:
    """Remove the attempt's record and command file once the store holds its outcome."""
    for path in (status_path(log_path), command_path(log_path), pid_path(log_path)):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def is_supervisor(pid: int, log_path: Path) -> bool | None:
    """Whether process `pid` is the supervisor of the attempt logging to `log_path` (and not a
    process that reused its pid); None when it cannot be told: the process is this user's, but
    /proc does not show it (another user namespace, e.g. systemd's PrivateUsers=)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            cmdline = handle.read()
    except OSError:
        try:
            os.kill(pid, 0)
        except OSError:  # gone, or another user's
            return False
        return None
    tag = f"\0{SUPERVISOR_TAG}\0{status_path(log_path)}\0".encode()
    # The task's process, between the supervisor's fork and its exec, has the same command
    # line: the supervisor is the one that leads the try's session (it was started setsid).
    return (tag in cmdline and _leads_session(pid)) or _is_recorded_supervisor(pid, log_path)


def record_supervisor(log_path: Path) -> None:
    """Write this process's pid and start time to `try-N.pid`: it is the forked supervisor of
    the attempt logging to `log_path`. OSError if it cannot be written."""
    started = _start_ticks(os.getpid())
    path = pid_path(log_path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, f"{os.getpid()} {started}\n".encode())
    finally:
        os.close(fd)


def record_status(log_path: Path, exit_code: int) -> None:
    """Append the task's exit status (0-255) to the record, as the `sh` supervisor does."""
    fd = os.open(status_path(log_path), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, f"{exit_code}\n".encode())
    finally:
        os.close(fd)


def forked_supervisor(log_path: Path) -> int | None:
    """The pid of the forked supervisor of the attempt logging to `log_path`, if it still runs."""
    try:
        pid = int(pid_path(log_path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if _is_recorded_supervisor(pid, log_path) else None


def _is_recorded_supervisor(pid: int, log_path: Path) -> bool:
    """Whether `try-N.pid` names process `pid`, started when it says (not a reused pid)."""
    try:
        recorded_pid, started = pid_path(log_path).read_text().split()
    except (OSError, ValueError):
        return False
    return recorded_pid == str(pid) and started == str(_start_ticks(pid))


def _leads_session(pid: int) -> bool:
    """Whether process `pid` is the leader of its session (/proc/PID/stat: its session id)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return int(handle.read().rsplit(b")", 1)[1].split()[3]) == pid
    except (OSError, IndexError, ValueError):
        return False


def _start_ticks(pid: int) -> int | None:
    """When process `pid` started, in clock ticks since boot (/proc/PID/stat), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return int(handle.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None

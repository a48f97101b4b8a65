"""Task log files: one per attempt, under logs/FLOW/TASK/LOGICAL_DATE/try-N.log.

The task's own stdout and stderr go straight to the file (the daemon holds no pipe to a task);
cronflow adds a timestamped header and footer line per attempt. Retention may later replace a
log by its compressed copy `try-N.log.gz`; readers go through `existing_log` / `open_log`,
and read in chunks of CHUNK_BYTES: a log may be far bigger than the memory a reader should use.
The last line a failed task wrote is part of its reason ("exit code 4: no such table"), read
from the log's end only.

Names and lines follow two rules. The LOGICAL_DATE directory is the logical date in UTC
(`20240301T013000Z`): a name must be unique and sort in time order, which local wall-clock
times do not across a DST change (an autumn hour happens twice). The lines are read by people:
their stamps are in the flow's timezone with its offset (`2024-03-01T02:30:00.000+01:00`), like
the lines a Python task or a callback logs (TaskLogFormatter).
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import BinaryIO
from zoneinfo import ZoneInfo

from cronflow.timeparse import from_iso, to_utc

TAIL_BYTES = 4096  # read from a log's end to find its last line: enough, and cheap
_NOTE = re.compile(rb"^\[[^\]]*\] cronflow: ")  # a line write_note wrote
_ESCAPES = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")  # terminal colours and cursor moves


def attempt_log_dir(logs_dir: Path, flow_id: str, task_id: str, logical_date: str) -> Path:
    """The directory holding every try's log of one task instance."""
    moment = from_iso(logical_date)
    assert moment is not None
    return logs_dir / flow_id / task_id / to_utc(moment).strftime("%Y%m%dT%H%M%SZ")


def attempt_log_path(
    logs_dir: Path, flow_id: str, task_id: str, logical_date: str, try_number: int
) -> Path:
    return attempt_log_dir(logs_dir, flow_id, task_id, logical_date) / f"try-{try_number}.log"


def existing_log(path: Path) -> Path | None:
    """The log as it is on disk now: itself, or its compressed copy after retention ran."""
    for candidate in (path, path.with_name(path.name + ".gz")):
        if candidate.exists():
            return candidate
    return None


CHUNK_BYTES = 64 * 1024


def open_log(path: Path) -> BinaryIO:
    """A task log opened for reading, compressed or not; FileNotFoundError if neither exists."""
    found = existing_log(path)
    if found is None:
        raise FileNotFoundError(path)
    if found.suffix == ".gz":
        return gzip.open(found, "rb")  # type: ignore[return-value]
    return open(found, "rb")


def read_log(path: Path) -> bytes:
    """A (small) task log's bytes, compressed or not; FileNotFoundError if neither exists."""
    with open_log(path) as handle:
        return handle.read()


def make_private_dirs(directory: Path) -> None:
    """Create missing directories owner-only (mkdir's mode= covers only the last one). The
    usual case, only the last one or two missing, costs one mkdir each and no stat."""
    missing = []
    while True:
        try:
            os.mkdir(directory, 0o700)
            break
        except FileExistsError:
            break
        except FileNotFoundError:
            missing.append(directory)
            directory = directory.parent
            if directory == directory.parent:
                raise
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)


def open_attempt_log(path: Path) -> int:
    """An append-only descriptor for the task's stdout/stderr, owner-readable only; missing
    directories are created (owner-only) when the first open says so, saving a stat per call."""
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    except FileNotFoundError:
        make_private_dirs(path.parent)
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)


def write_note(path: Path, at: datetime, text: str, tz: tzinfo = UTC) -> None:
    """A cronflow line in a task log, e.g. the attempt's start, its end, an orphan kill, stamped
    in `tz` (the flow's timezone). Raises OSError (disk full, bad permissions): the caller
    decides what that means."""
    fd = open_attempt_log(path)
    try:
        os.write(fd, f"[{note_stamp(at, tz)}] cronflow: {text}\n".encode())
    finally:
        os.close(fd)


def last_line(data: bytes) -> str:
    """The last line of output in `data` that says something: not blank, not one of cronflow's
    own notes (a carriage return ends a line too: a progress bar's last state). '' if none."""
    for raw in reversed(data.splitlines()):
        line = _ESCAPES.sub(b"", raw).strip()
        if line and not _NOTE.match(line):
            return line.decode(errors="replace")
    return ""


def last_output_line(path: Path) -> str:
    """The last line a task wrote to its log, reading only the log's end; '' if none or if
    the log cannot be read."""
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - TAIL_BYTES))
            data = handle.read()
    except OSError:
        return ""
    if size > TAIL_BYTES:
        data = data.partition(b"\n")[2]  # the first line read may be cut: not a whole line
    return last_line(data)


def note_stamp(at: datetime, tz: tzinfo) -> str:
    """A moment as task log lines show it: ISO 8601 in `tz` with its offset, to the millisecond."""
    return at.astimezone(tz).isoformat(timespec="milliseconds")


TIMEZONE_ENV = "CRONFLOW_TIMEZONE"  # the flow's timezone, in every attempt's environment


def zone_from_env(environ: Mapping[str, str]) -> tzinfo:
    """The flow's timezone as an attempt's environment gives it (UTC if it does not)."""
    try:
        return ZoneInfo(environ.get(TIMEZONE_ENV) or "UTC")
    except (ValueError, OSError):  # not a zone name: keep logging, in UTC
        return UTC


class TaskLogFormatter(logging.Formatter):
    """Log records of a worker or a callback as task log lines, stamped like write_note's."""

    def __init__(self, fmt: str, tz: tzinfo) -> None:
        super().__init__(fmt)
        self.tz = tz

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return note_stamp(datetime.fromtimestamp(record.created, UTC), self.tz)

"""Task log files: one per attempt, under logs/FLOW/TASK/LOGICAL_DATE/try-N.log.

The task's own stdout and stderr go straight to the file (the daemon holds no pipe to a task);
cronflow adds a timestamped header and footer line per attempt.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from cronflow.timeparse import from_iso, to_utc


def attempt_log_path(
    logs_dir: Path, flow_id: str, task_id: str, logical_date: str, try_number: int
) -> Path:
    moment = from_iso(logical_date)
    assert moment is not None
    stamp = to_utc(moment).strftime("%Y%m%dT%H%M%SZ")
    return logs_dir / flow_id / task_id / stamp / f"try-{try_number}.log"


def open_attempt_log(path: Path) -> int:
    """An append-only descriptor for the task's stdout/stderr, owner-readable only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)


def write_note(path: Path, at: datetime, text: str) -> None:
    """A cronflow line in a task log, e.g. the attempt's start, its end, an orphan kill."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(
            fd, f"[{to_utc(at).isoformat(timespec='milliseconds')}] cronflow: {text}\n".encode()
        )
    finally:
        os.close(fd)

"""How a worker-run attempt tells the daemon how it ended (beyond success or failure) and why.

A worker (`python -m cronflow.worker`, every task kind but shell) exits with:

- 0: success; 1: failure (retried while tries are left);
- EXIT_RESCHEDULE (75, EX_TEMPFAIL): a sensor in reschedule mode is not satisfied yet; the task
  instance goes to up_for_reschedule until its next poke and the try is not counted;
- EXIT_SKIPPED (99): the task chose to be skipped (a sensor's soft_fail, or SkipTask raised in a
  Python callable).

A worker writes the reason of a reschedule, a skip or a failure to the store (the task instance
is still running then) before it exits, so the daemon shows its words rather than an exit code.

Only cronflow's own exceptions below lead to these codes (the worker turns a task's own
`sys.exit(75)` into a failure), and the daemon honours them only for worker-run kinds, so a shell
command that happens to exit 75 or 99 is still a plain failure.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from cronflow.errors import CronflowError

EXIT_RESCHEDULE = 75
EXIT_SKIPPED = 99
REASON_MAX_CHARS = 400  # a reason is one line: a table cell, a mail's field, a log event


class SkipTask(CronflowError):
    """Raise in a task to end it as skipped; the message goes to the task log and its reason."""


class Reschedule(Exception):
    """Raised by a sensor in reschedule mode when it is not satisfied yet (worker exits 75)."""

    def __init__(self, message: str, next_poke_at: datetime) -> None:
        super().__init__(message)
        self.next_poke_at = next_poke_at


class SensorTimeoutError(CronflowError, TimeoutError):
    """A sensor waited longer than its timeout (without soft_fail)."""


def one_line(text: str, limit: int = REASON_MAX_CHARS) -> str:
    """A reason as one line: whitespace (newlines too) collapsed; past `limit`, cut at a word
    boundary and ended with an ellipsis (the whole message stays in the task log)."""
    line = " ".join(text.split())
    if len(line) <= limit:
        return line
    cut = line[: limit - 1]
    space = cut.rfind(" ")
    if line[limit - 1] != " " and space > limit * 0.7:  # a word is cut: drop what is left of it
        cut = cut[:space]
    return cut.rstrip(" ,;:") + "…"


def current_try(ti: Mapping[str, Any]) -> int:
    """The try a task instance is in, or ended last: what `tasks`, `top` and `logs` show.

    A sensor in reschedule mode between two pokes is still in its try (its pokes write to that
    try's log), but the store keeps its try_number one lower while it waits for the next poke,
    because the scheduler adds one as it starts any attempt: so while the task instance is
    up_for_reschedule, or scheduled for that next poke, its try is try_number + 1."""
    resuming = ti["state"] in ("scheduled", "queued") and ti["exit_code"] == EXIT_RESCHEDULE
    if ti["state"] == "up_for_reschedule" or (resuming and ti.get("first_poke_at")):
        return int(ti["try_number"]) + 1
    return int(ti["try_number"])

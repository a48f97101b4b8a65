"""Task-instance and run states, and every allowed transition, in one place.

Task instance (TI) life cycle, as the daemon drives it:

    none ──deps met──▶ scheduled ──slot free──▶ queued ──process started──▶ running
    none ──trigger rule can no longer pass──▶ upstream_failed | skipped
    running ──exit 0──▶ success
    running ──exit≠0 / timeout / orphaned, tries left──▶ up_for_retry ──retry time──▶ scheduled
    running ──exit≠0 / timeout / orphaned, no tries left──▶ failed
    running ──sensor not yet satisfied (reschedule mode)──▶ up_for_reschedule ──poke time──▶ scheduled
        (worker exit 75: next_try_at = now + poke_interval; the try is not counted, so the next
        poke appends to the same try's log; the sensor's timeout counts from first_poke_at)
    running ──the task asked to be skipped (sensor soft_fail, SkipTask; worker exit 99)──▶ skipped
        (exit codes 75 and 99 mean this only for worker-run kinds: a shell's own exit 75 fails)
    running ──daemon shutdown──▶ up_for_retry (the try is given back)
    success | failed | up_for_retry ──▶ the task's callbacks and failure mail run in a child
        process (cronflow.callbacks); the state does not wait for them
    any ──`cronflow mark`──▶ success | failed | skipped;  any ──`cronflow replay`──▶ none

Run life cycle: queued ──max_active_runs and inter-flow waits allow──▶ running ──all TIs
finished──▶ success (no TI failed or upstream_failed) | failed. A wait that gives up
(cronflow.waits) starts the run with its first tasks none ──▶ failed | skipped. A replay puts a
finished run back to queued.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any


class TaskState(StrEnum):
    NONE = "none"
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    UP_FOR_RETRY = "up_for_retry"
    UP_FOR_RESCHEDULE = "up_for_reschedule"
    UPSTREAM_FAILED = "upstream_failed"
    SKIPPED = "skipped"

    @property
    def is_finished(self) -> bool:
        return self in FINISHED_TASK_STATES


FINISHED_TASK_STATES = frozenset(
    {TaskState.SUCCESS, TaskState.FAILED, TaskState.UPSTREAM_FAILED, TaskState.SKIPPED}
)
# States in which a process may exist for the TI.
ACTIVE_TASK_STATES = frozenset({TaskState.QUEUED, TaskState.RUNNING})
# Task instances that run or wait to (re)start (ready, queued, waiting for a retry or a
# sensor's next poke): what `status` and `top` count, in the order `top` lists them.
LIVE_TASK_STATES = (
    TaskState.RUNNING,
    TaskState.QUEUED,
    TaskState.SCHEDULED,
    TaskState.UP_FOR_RETRY,
    TaskState.UP_FOR_RESCHEDULE,
)


def live_counts(tis: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """How many of these live task instances run, and how many wait."""
    running = sum(ti["state"] == TaskState.RUNNING for ti in tis)
    return {"running": running, "waiting": len(tis) - running}


# States a user may set with `cronflow mark`.
MARKABLE_TASK_STATES = frozenset({TaskState.SUCCESS, TaskState.FAILED, TaskState.SKIPPED})


class RunState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"

    @property
    def is_finished(self) -> bool:
        return self in (RunState.SUCCESS, RunState.FAILED)


class RunType(StrEnum):
    SCHEDULED = "scheduled"
    MANUAL = "manual"  # `cronflow trigger`, @reboot flows
    BACKFILL = "backfill"
    TRIGGERED = "triggered"  # by another flow's TriggerFlow task (runs.triggered_by names it)


class TriggerRule(StrEnum):
    ALL_SUCCESS = "all_success"
    ALL_DONE = "all_done"
    ALL_FAILED = "all_failed"
    ONE_SUCCESS = "one_success"
    ONE_FAILED = "one_failed"
    NONE_FAILED = "none_failed"
    # the join after a branch: no upstream failed and at least one succeeded (the others skipped)
    NONE_FAILED_MIN_ONE_SUCCESS = "none_failed_min_one_success"


# Grid cells (`cronflow show`, the web view's grid): short enough for many runs side by side,
# readable without colour.
STATE_CELLS = {
    "success": "ok",
    "failed": "FAIL",
    "running": "run",
    "queued": "queue",
    "scheduled": "sched",
    "up_for_retry": "retry",
    "up_for_reschedule": "poke",
    "upstream_failed": "upfail",
    "skipped": "skip",
    "none": "·",
}

"""depends_on_past and wait_for_downstream: what a task waits for in its flow's previous run.

A task with depends_on_past=True starts in run D only once its own task instance in the run just
before D (by logical date, whatever its run type) succeeded or was skipped; wait_for_downstream=
True also waits for that instance's direct downstream tasks there (every instance of a mapped
one). There is no past, so nothing
to wait for, for the flow's first run, when the previous run is from before the flow's
start_date, and when the previous run has no instance of the task (it was added to the flow
since): Airflow users asked for that last rule for years (apache/airflow#8989, which became
`ignore_first_depends_on_past`), so here it is the only behaviour.

The scheduler asks `past_hold` before it schedules such a task; `cronflow why` asks the same
function, so its words cannot drift from what the daemon does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cronflow.catalog import FlowSpec
from cronflow.states import TaskState
from cronflow.store import Store
from cronflow.timeparse import from_iso

_DONE = {TaskState.SUCCESS.value, TaskState.SKIPPED.value}


@dataclass(frozen=True)
class PastHold:
    """The task instance of the previous run that a task waits for."""

    logical_date: str  # of the previous run, UTC ISO text as stored
    task_id: str  # the task itself, or (wait_for_downstream) one of its direct downstream
    state: str
    own: bool  # the task's own instance (depends_on_past), not a downstream one

    def text(self, day: Callable[[str], str]) -> str:
        """'waiting for its own run of 2026-12-02 10:30 CET (failed)'; `day` renders the
        logical date in the flow's timezone."""
        if self.own:
            return f"waiting for its own run of {day(self.logical_date)} ({self.state})"
        return (
            f"waiting for {self.task_id} of its run of {day(self.logical_date)} ({self.state}), "
            "wait_for_downstream"
        )


def past_hold(store: Store, flow: FlowSpec, run: dict[str, Any], task_id: str) -> PastHold | None:
    """What keeps the task of this run from starting because of its past; None if nothing."""
    task = flow.tasks.get(task_id)
    if task is None or not task.depends_on_past:
        return None
    previous = store.previous_run(flow.flow_id, run["logical_date"])
    if previous is None:
        return None
    previous_at = from_iso(previous["logical_date"])
    if flow.start_at is not None and previous_at is not None and previous_at < flow.start_at:
        return None
    own = store.ti(previous["run_id"], task_id)
    if own is None:  # the task did not exist in that run
        return None
    wanted = [own]
    if task.wait_for_downstream:
        for down in flow.downstream.get(task_id, ()):  # a mapped one: each of its instances
            wanted += store.task_rows(previous["run_id"], down)
    for ti in wanted:
        if ti["state"] not in _DONE:
            return PastHold(previous["logical_date"], ti["task_id"], ti["state"], ti is own)
    return None

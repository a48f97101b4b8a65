"""After a daemon crash: take over what the previous daemon left, so a crash never changes what a
task did. Before a stop ends: leave no process of a task behind.

A crash (kill -9, OOM, a watchdog kill) leaves task instances `running` in the store while their
attempts go on, or end, without a daemon. Each attempt ran under its supervisor
(cronflow.supervisor), which records how the task ended. At start, before its first tick, the
daemon (`recover`):

- adopts every unsettled attempt whose supervisor still runs: the executor tracks it to its end
  and its timeout counts from its real start;
- hands the executor those that ended meanwhile, settled from their exit record at the next
  reap (a success stays a success, a failure is a counted failure with its reason, the end time
  is the real one), or failed as lost when they left no record;
- first records as running a try started just before the crash but not yet written (its
  processes carry its marker, or its record exists), so that it too ends like any other;
- kills processes of attempts that were settled already (a background child that left the
  session), unless their task keeps its background processes.

Processes are told apart by their CRONFLOW_ATTEMPT marker (home, run, task, try) and the
supervisor by its command line, which also guards against a reused pid; a warm attempt's forked
supervisor (cronflow.forkserver), which shows neither, by the pid file it leaves beside the log.
The store is written directly: the scheduler's cache is empty before its first tick.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cronflow import supervisor
from cronflow.catalog import TaskSpec
from cronflow.executor import Attempt, kill_processes, marked_processes, process_start_time
from cronflow.logs import attempt_log_path
from cronflow.scheduler import Scheduler
from cronflow.states import TaskState
from cronflow.timeparse import from_iso, iso

log = logging.getLogger("cronflow.recovery")

TI = dict[str, Any]


def recover(scheduler: Scheduler, now: datetime) -> int:
    """Take over the attempts an earlier daemon left unsettled; return how many."""
    by_marker: dict[str, list[int]] = {}
    for pid, marker in marked_processes(scheduler.marker_prefix, prefix=True).items():
        by_marker.setdefault(marker, []).append(pid)
    tis = scheduler.store.tis_in_states([TaskState.QUEUED, TaskState.RUNNING])
    seen = {(ti["run_id"], ti["task_id"]) for ti in tis}
    tis += _unrecorded_tries(scheduler, by_marker, seen, now)
    still_running = 0
    for ti in tis:
        attempt = _attempt(scheduler, ti)
        found = _supervisor_of(by_marker.pop(attempt.marker, []), attempt.log_path)
        if (
            found is None
            and ti["pid"]
            and supervisor.is_supervisor(ti["pid"], attempt.log_path) is None
        ):
            found = ti["pid"]  # this user's, hidden from us: trust the store rather than rerun
        started = from_iso(ti["start_at"]) or now
        scheduler.executor.adopt(attempt, found, (now - started).total_seconds())
        still_running += found is not None
    stray = [
        pid
        for marker, pids in by_marker.items()
        if not _keeps_background(scheduler, marker)
        for pid in pids
    ]
    kill_processes(stray)
    if tis or stray:
        log.warning(
            "event=attempts_recovered attempts=%s still_running=%s stray_processes_killed=%s",
            len(tis),
            still_running,
            len(stray),
        )
    return len(tis)


def stop_strays(scheduler: Scheduler) -> int:
    """Kill every process left with the home's marker that no running attempt owns (a task's
    child that left its session), unless its task keeps background processes; return how many."""
    running = {attempt.marker for attempt in scheduler.executor.running()}
    stray = [
        pid
        for pid, marker in marked_processes(scheduler.marker_prefix, prefix=True).items()
        if marker not in running and not _keeps_background(scheduler, marker)
    ]
    kill_processes(stray)
    return len(stray)


def _attempt(scheduler: Scheduler, ti: TI) -> Attempt:
    """The executor's view of an attempt an earlier daemon started."""
    task = _task_spec(scheduler, ti)
    log_path = ti["log_path"] or _log_path(scheduler, ti, ti["try_number"])
    return Attempt(
        ti["run_id"],
        ti["task_id"],
        ti["try_number"],
        ti["pool"],
        [],
        {},
        None,
        Path(log_path),
        task.timeout_s if task else None,
        scheduler.marker(ti["run_id"], ti["task_id"], ti["try_number"]),
        keep_background=bool(task and task.op.get("keep_background")),
    )


def _supervisor_of(pids: Sequence[int], log_path: Path) -> int | None:
    """The supervisor of the attempt logging to `log_path`: among its marked processes, or the
    forked supervisor its pid file names."""
    found = next((p for p in pids if supervisor.is_supervisor(p, log_path)), None)
    return found if found is not None else supervisor.forked_supervisor(log_path)


def _task_spec(scheduler: Scheduler, ti: TI) -> TaskSpec | None:
    flow = scheduler.catalog.flows.get(ti["flow_id"])
    return flow.task_of(ti["task_id"]) if flow else None


def _keeps_background(scheduler: Scheduler, marker: str) -> bool:
    parsed = _parse_marker(scheduler, marker)
    ti = scheduler.store.ti(parsed[0], parsed[1]) if parsed else None
    task = _task_spec(scheduler, ti) if ti else None
    return bool(task and task.op.get("keep_background"))


def _parse_marker(scheduler: Scheduler, marker: str) -> tuple[int, str, int] | None:
    """(run_id, task_id, try_number) of a marker of this home."""
    try:
        run_text, task_id, try_text = marker.removeprefix(scheduler.marker_prefix).split("|")
        return int(run_text), task_id, int(try_text)
    except ValueError:
        return None


def _log_path(scheduler: Scheduler, ti: TI, try_number: int) -> Path:
    return attempt_log_path(
        scheduler.settings.logs_dir, ti["flow_id"], ti["task_id"], ti["logical_date"], try_number
    )


def _unrecorded_tries(
    scheduler: Scheduler,
    by_marker: dict[str, list[int]],
    seen: set[tuple[int, str]],
    now: datetime,
) -> list[TI]:
    """Tries started just before a crash but not yet written as running: found by their
    processes' marker, or by the exit record of one that ended since. Each is recorded as
    running, so that it ends like any other (its log says so, and it counts as a try)."""
    found = []
    for marker, pids in by_marker.items():
        parsed = _parse_marker(scheduler, marker)
        if parsed is None or parsed[:2] in seen:
            continue
        ti = _record_running(scheduler, *parsed, now, pids=pids)
        if ti is not None:
            found.append(ti)
            seen.add(parsed[:2])
    for ti in scheduler.store.tis_in_states([TaskState.SCHEDULED]):
        next_try = ti["try_number"] + 1
        if (ti["run_id"], ti["task_id"]) in seen:
            continue
        log_path = _log_path(scheduler, ti, next_try)
        forked = supervisor.forked_supervisor(log_path)
        if forked is not None:  # a warm attempt still running: no marker shows it
            recorded = _record_running(scheduler, ti["run_id"], ti["task_id"], next_try, now)
            if recorded is not None:
                found.append(recorded)
            continue
        ending = supervisor.read_ending(log_path)
        if ending is not None:
            recorded = _record_running(
                scheduler, ti["run_id"], ti["task_id"], next_try, now, started_at=ending.ended_at
            )
            if recorded is not None:
                found.append(recorded)
    return found


def _record_running(
    scheduler: Scheduler,
    run_id: int,
    task_id: str,
    try_number: int,
    now: datetime,
    pids: Sequence[int] = (),
    started_at: float | None = None,
) -> TI | None:
    """Write a try found on the machine as running: its supervisor's pid and start time when it
    still runs, else (it ended) the time its record was written."""
    ti = scheduler.store.ti(run_id, task_id)
    if ti is None or ti["try_number"] >= try_number:
        return None
    log_path = _log_path(scheduler, ti, try_number)
    pid = _supervisor_of(pids, log_path)
    started_at = (process_start_time(pid) if pid else None) or started_at
    fields: dict[str, Any] = {
        "state": TaskState.RUNNING,
        "try_number": try_number,
        "log_path": str(log_path),
        "pid": pid,
        "host": scheduler.host,
        "start_at": iso(datetime.fromtimestamp(started_at, UTC) if started_at else now),
    }
    if not scheduler.store.update_ti(run_id, task_id, expect_state=TaskState.SCHEDULED, **fields):
        return None
    return scheduler.store.ti(run_id, task_id)

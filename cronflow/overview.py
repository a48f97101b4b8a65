"""What the listing commands show, as plain data: every flow, a flow's runs, one flow in depth,
the live tasks. The CLI renders these rows as tables or JSON and adds nothing.

Each function makes a fixed number of indexed queries, whatever the size of the history: the
newest runs of every flow in one query, a flow's runs through its (flow, state, date) index.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from cronflow.catalog import Catalog, FlowSpec, catchup_progress, recorded_fire_holds, sync
from cronflow.config import Settings
from cronflow.errors import InvalidInputError
from cronflow.limits import checked_count
from cronflow.mapping import base_id, fold_instances
from cronflow.outcomes import current_try
from cronflow.past import past_hold
from cronflow.states import ACTIVE_TASK_STATES, LIVE_TASK_STATES, RunState, TaskState, live_counts
from cronflow.store import Store
from cronflow.timeparse import (
    duration_text,
    from_iso,
    iso,
    parse_date_or_datetime,
    start_of_day,
    to_utc,
)

RECENT_RUNS = 10  # how many of each flow's newest runs `list` counts by state


def flow_rows(
    store: Store, cat: Catalog, now: datetime, recent_counts: bool = True
) -> list[dict[str, Any]]:
    """`cronflow list`: broken files first, then every flow with its last run and next fire.
    What the loader and the daemon stored with each flow is used as is; a spec is parsed only
    for a flow whose stored next fire time no longer holds (e.g. while the daemon is down).
    Without `recent_counts` the states of the last runs are left out (the web view shows
    them one by one, from recent_run_squares)."""
    latest = store.latest_runs()
    states = {r["flow_id"]: r for r in store.flow_states()}  # read now, not from a catalog
    counts = store.recent_state_counts(RECENT_RUNS) if recent_counts else {}
    holding = any(_holds(r) for r in states.values())
    active = store.active_run_counts() if holding else {}
    late = store.open_deadline_misses()
    rows: list[dict[str, Any]] = [
        {"flow_id": None, "path": path, "error": error}
        for path, error in sorted(cat.errors.items())
    ]
    for flow_id in sorted(cat.flows):
        stored = cat.rows[flow_id]
        state = states.get(flow_id, stored)  # as loaded, if it went since
        last = latest.get(flow_id, {})
        held = None
        if _holds(state):  # only then is the spec parsed
            held = held_back(cat.flows[flow_id], state, active.get(flow_id, 0))
        rows.append(
            {
                "flow_id": flow_id,
                "schedule": json.loads(stored["timing"])[0],  # [schedule, zone, start, end]
                # (a scratch store of `cronflow test` keeps no schedule text)
                "schedule_text": stored["schedule_text"] or cat.flows[flow_id].schedule_text,
                "paused": bool(state.get("paused")),
                "run_id": last.get("run_id"),
                "logical_date": last.get("logical_date"),
                "state": last.get("state"),
                "next_fire_at": _next_fire_text(cat, flow_id, state, now),
                "catching_up": _catching_up(cat, flow_id, state, now),
                "recent_states": counts.get(flow_id, {}),
                "held_back": held[1] if held else None,
                "held_fire_at": iso(held[0]) if held else None,
                "missed_deadline": _miss_row(late[flow_id]) if flow_id in late else None,
                "path": stored["path"],
            }
        )
    return rows


def _miss_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A missed deadline (cronflow.deadlines) as listings show it."""
    return {
        "flow_id": row["flow_id"],
        "task_id": row["task_id"] or None,
        "fire_at": row["fire_at"],
        "deadline_at": row["deadline_at"],
        "missed_at": row["missed_at"],
        "run_id": row["run_id"],
        "message": row["message"],
    }


def held_back(flow: FlowSpec, row: Mapping[str, Any], active: int) -> tuple[datetime, str] | None:
    """(the oldest fire time held back, 'held back by max_active_runs=3: 3 runs active') while
    fire times of the flow wait for one of its runs to end before theirs are created (the
    planner keeps the newest in flows.held_until); None otherwise."""
    if not _holds(row) or active < flow.max_active_runs or flow.schedule is None:
        return None
    held, cursor = from_iso(row["held_until"]), from_iso(row["last_scheduled_at"])
    assert held is not None
    first = flow.schedule.next_after(cursor) if cursor else held
    if first is None or first > held:
        return None
    runs = "run" if active == 1 else "runs"
    return first, f"held back by max_active_runs={flow.max_active_runs}: {active} {runs} active"


def _holds(row: Mapping[str, Any]) -> bool:
    """Whether the planner's record says fire times of the flow are held back now."""
    held, cursor = from_iso(row.get("held_until")), from_iso(row.get("last_scheduled_at"))
    return held is not None and (cursor is None or cursor < held) and not row.get("paused")


def _next_fire_text(cat: Catalog, flow_id: str, state: dict[str, Any], now: datetime) -> str | None:
    """What the daemon recorded while it holds; otherwise worked out from the spec."""
    if recorded_fire_holds(state, now):
        recorded: str | None = state["next_fire_at"]
        return recorded
    upcoming = cat.flows[flow_id].next_fires(now, 1)
    return iso(upcoming[0]) if upcoming else None


def _catching_up(
    cat: Catalog, flow_id: str, state: dict[str, Any], now: datetime
) -> dict[str, int] | None:
    """A catch-up under way: how many of its runs exist; the spec is parsed only then."""
    if not state.get("catchup_from_at"):
        return None
    progress = catchup_progress(cat.flows[flow_id], state, now)
    return {"created": progress[0], "total": progress[1]} if progress else None


def parse_run_states(texts: list[str]) -> list[RunState]:
    """--state values (repeated or comma-separated) -> run states; a bad one is an error."""
    states = []
    for text in (part.strip() for value in texts for part in value.split(",")):
        try:
            states.append(RunState(text))
        except ValueError:
            known = ", ".join(s.value for s in RunState)
            raise InvalidInputError(f"bad run state '{text}': use {known}") from None
    return states


def since_bound(flow: FlowSpec, text: str | None) -> datetime | None:
    """--since: the start of a local day, or a date-time."""
    if text is None:
        return None
    value = parse_date_or_datetime(text, flow.tz)
    return to_utc(value) if isinstance(value, datetime) else start_of_day(value, flow.tz)


def run_rows(
    store: Store, flow: FlowSpec, states: list[str], since: str | None, limit: int
) -> list[dict[str, Any]]:
    """`cronflow runs`: the flow's runs, newest first."""
    checked_count("--limit", limit)
    runs = store.runs_of_flow(
        flow.flow_id,
        states=parse_run_states(states),
        since=since_bound(flow, since),
        limit=limit,
    )
    return [run_row(run) for run in runs]


def run_row(run: dict[str, Any]) -> dict[str, Any]:
    return {
        "run_id": run["run_id"],
        "flow_id": run["flow_id"],
        "logical_date": run["logical_date"],
        "run_type": run["run_type"],
        "triggered_by": triggered_by(run),
        "state": run["state"],
        "created_at": run["created_at"],
        "started_at": run["started_at"],
        "ended_at": run["ended_at"],
        "duration_s": _seconds_between(run["started_at"], run["ended_at"]),
    }


def triggered_by(run: Mapping[str, Any]) -> dict[str, Any] | None:
    """The run (flow, run id, logical date, task) whose TriggerFlow created this one."""
    return json.loads(run["triggered_by"]) if run.get("triggered_by") else None


def task_rows(
    store: Store, cat: Catalog, flow: FlowSpec, run: dict[str, Any], now: datetime
) -> list[dict[str, Any]]:
    """`cronflow tasks`: a run's task instances in the flow's order. The try is the one the
    task's log has (a sensor between two pokes is still in its try); while the run waits for
    other flows, its first tasks say for what (cronflow.waits)."""
    order = {t: i for i, t in enumerate(flow.tasks)}
    tis = sorted(
        store.tis_of_runs([run["run_id"]]),
        key=lambda t: (order.get(base_id(t["task_id"]), 1e9), t.get("map_index") or 0),
    )
    waiting = ""
    if run["state"] == RunState.QUEUED and flow.waits:
        from cronflow.waits import WaitChecker

        unmet = WaitChecker(store).run_waits(flow, run, cat.flows).unmet
        waiting = "; ".join(status.summary(now) for status in unmet)
    return [
        {
            "flow": flow.flow_id,
            "task": ti["task_id"],
            "run_id": run["run_id"],
            "logical_date": run["logical_date"],
            "run_type": run["run_type"],
            "triggered_by": triggered_by(run),
            "state": ti["state"],
            "try_number": current_try(ti),
            "max_tries": ti["max_tries"],
            "start": ti["start_at"],
            "end": ti["end_at"],
            "duration_s": ti["duration_s"],
            "host": ti["host"],
            "queue": _queue(flow, ti["task_id"]),
            "reason": ti["reason"]
            or _waiting_reason(flow, ti, waiting)
            or _past_reason(store, flow, run, ti),
        }
        for ti in tis
    ]


def _queue(flow: FlowSpec, task_id: str) -> str | None:
    """The Celery queue the task is sent to (None: it runs on the scheduler's host)."""
    task = flow.task_of(task_id)
    return task.remote_queue if task else None


def _past_reason(
    store: Store, flow: FlowSpec, run: dict[str, Any], ti: Mapping[str, Any]
) -> str | None:
    """What a depends_on_past task not yet started waits for in the previous run."""
    task = flow.task_of(ti["task_id"])
    if task is None or not task.depends_on_past or ti["state"] != TaskState.NONE:
        return None
    if run["state"] != RunState.RUNNING:
        return None
    hold = past_hold(store, flow, run, ti["task_id"])
    if hold is None:
        return None
    zone = flow.tz
    return "depends_on_past: " + hold.text(
        lambda stamp: datetime.fromisoformat(stamp).astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")
    )


def _waiting_reason(flow: FlowSpec, ti: Mapping[str, Any], waiting: str) -> str | None:
    task = flow.task_of(ti["task_id"])
    if not waiting or task is None or task.upstream or ti["state"] != TaskState.NONE:
        return None
    return f"the run waits for {waiting}"


def _seconds_between(start: str | None, end: str | None) -> float | None:
    began, ended = from_iso(start), from_iso(end)
    if began is None or ended is None:
        return None
    return round((ended - began).total_seconds(), 3)


def flow_detail(
    store: Store, cat: Catalog, flow: FlowSpec, now: datetime, runs: int
) -> dict[str, Any]:
    """`cronflow show`: the flow's definition, its links to other flows, its next fire times
    and a grid of its last `runs` runs by task."""
    checked_count("--runs", runs)
    downstream: dict[str, list[str]] = {t: [] for t in flow.tasks}
    for task in flow.tasks.values():
        for up in task.upstream:
            downstream[up].append(task.task_id)
    paused = any(r["flow_id"] == flow.flow_id and r["paused"] for r in store.flow_states())
    return {
        "flow_id": flow.flow_id,
        "path": flow.path,
        "doc": flow.raw.get("doc"),
        "schedule": flow.raw["schedule"],
        "schedule_text": flow.schedule_text,
        "timezone": flow.raw["timezone"],
        "paused": paused,
        "start_at": flow.raw["start_at"],
        "end_at": flow.raw["end_at"],
        "catchup": flow.catchup,
        "max_active_runs": flow.max_active_runs,
        "tags": flow.raw.get("tags", []),
        "tasks": [
            {
                "task_id": t.task_id,
                "kind": t.kind,
                "upstream": t.upstream,
                "downstream": downstream[t.task_id],
                "trigger_rule": t.trigger_rule,
                "retries": t.retries,
                "pool": t.pool,
            }
            for t in flow.tasks.values()
        ],
        "wait_for": [
            {
                "flow_id": w.flow_id,
                "offset_days": w.offset_days,
                "wait_timeout_s": w.timeout_s,
                "soft_fail": w.soft_fail,
            }
            for w in flow.waits
        ],
        "waited_by": [
            {"flow_id": other, "offset_days": offset}
            for other, offset in store.flows_waiting_for(flow.flow_id)
            if other in cat.flows
        ],
        "next_fire_at": [iso(t) for t in flow.next_fires(now, 5)],
        "runs": _grid(store, flow, runs),
    }


def _grid(store: Store, flow: FlowSpec, count: int) -> list[dict[str, Any]]:
    """The last `count` runs, oldest first, each with its task states."""
    return _with_task_states(store, store.recent_runs(flow.flow_id, count)[::-1])


MAX_GRID_RUNS = 200  # a page of the web view's grid: bounded whatever the history


def run_grid(
    store: Store,
    flow: FlowSpec,
    states: list[str],
    since: str | None,
    before: str | None,
    limit: int,
) -> dict[str, Any]:
    """One page of a flow's grid of runs x tasks: the newest `limit` runs matching the state
    and date filters (before `before`, a logical date, to page back), oldest first, each with
    its task states; `older` is the logical date to page back from, None on the last page.
    Two indexed queries whatever the history."""
    if not 1 <= limit <= MAX_GRID_RUNS:
        raise InvalidInputError(f"the grid shows 1 to {MAX_GRID_RUNS} runs, not {limit}")
    try:
        cursor = to_utc(datetime.fromisoformat(before)) if before else None
    except ValueError:
        raise InvalidInputError(f"bad page cursor '{before}': expected an ISO date-time") from None
    runs = store.runs_of_flow(
        flow.flow_id,
        states=parse_run_states(states),
        since=since_bound(flow, since),
        before=cursor,
        limit=limit + 1,
    )
    older = runs[limit - 1]["logical_date"] if len(runs) > limit else None
    return {
        "tasks": flow.order,
        "runs": _with_task_states(store, runs[:limit][::-1]),
        "older": older,
    }


def recent_run_squares(
    store: Store, per_flow: int = RECENT_RUNS
) -> dict[str, list[dict[str, Any]]]:
    """flow id -> its `per_flow` newest runs (run id, logical date, state), oldest first: the
    coloured squares of the web view's flow list. One query for every flow."""
    return {flow: runs[::-1] for flow, runs in store.recent_run_states(per_flow).items()}


def run_states(store: Store, run_ids: list[int]) -> dict[int, dict[str, Any]]:
    """run id -> its state and its tasks' states, for the runs asked about that still exist:
    what a page showing unfinished runs polls, and nothing more."""
    return {
        row["run_id"]: {"state": row["state"], "tasks": row["task_states"]}
        for row in _with_task_states(store, store.runs_with_ids(run_ids))
    }


def _with_task_states(store: Store, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    states: dict[int, dict[str, str]] = {r["run_id"]: {} for r in runs}
    for ti in store.tis_of_runs(list(states)):
        states[ti["run_id"]][ti["task_id"]] = ti["state"]
    for run_id, by_task in states.items():  # a mapped task: one cell for its instances
        if any(task_id.endswith("]") for task_id in by_task):
            states[run_id] = fold_instances(by_task)
    return [
        {
            "run_id": run["run_id"],
            "logical_date": run["logical_date"],
            "run_type": run["run_type"],
            "triggered_by": triggered_by(run),
            "state": run["state"],
            "task_states": states[run["run_id"]],
        }
        for run in runs
    ]


def live_tasks(store: Store, now: datetime, failures: int) -> dict[str, Any]:
    """`cronflow top`: task instances running or about to, the latest failures and the
    latest missed deadlines (with the state of their run now: None, no run)."""
    checked_count("--failures", failures, low=0)
    order = {s.value: i for i, s in enumerate(LIVE_TASK_STATES)}
    active = sorted(
        store.tis_in_states(LIVE_TASK_STATES),
        key=lambda ti: (order[ti["state"]], ti["start_at"] or "", ti["logical_date"]),
    )
    return {
        "counts": live_counts(active),
        "active": [_ti_row(ti, now) for ti in active],
        "failures": [_ti_row(ti, now) for ti in store.recent_task_failures(failures)],
        "missed_deadlines": [
            {**_miss_row(row), "run_state": row["run_state"]}
            for row in store.recent_deadline_misses(failures)
        ],
    }


def _ti_row(ti: dict[str, Any], now: datetime) -> dict[str, Any]:
    started = from_iso(ti["start_at"])
    elapsed = ti["duration_s"]
    if ti["state"] == TaskState.RUNNING and started is not None:
        elapsed = round((now - started).total_seconds(), 1)
    return {
        "flow_id": ti["flow_id"],
        "task_id": ti["task_id"],
        "run_id": ti["run_id"],
        "logical_date": ti["logical_date"],
        "state": ti["state"],
        "try_number": current_try(ti),
        "max_tries": ti["max_tries"],
        "pool": ti["pool"],
        "start_at": ti["start_at"],
        "end_at": ti["end_at"],
        "elapsed_s": elapsed,
        "next_try_at": ti["next_try_at"],
        # a task waiting for its retry or next poke has no process: not the old try's pid
        "pid": ti["pid"] if ti["state"] in ACTIVE_TASK_STATES else None,
        "host": ti["host"],
        "reason": ti["reason"],
    }


def queue_waits(store: Store, cat: Catalog) -> dict[str, dict[str, Any]]:
    """queue -> {"tasks": how many scheduled TIs wait to be sent there, "since": the oldest
    time one of them was held (None if not held yet)}: what `status` and `top` compare with the
    live workers. One indexed query; only the flows with a scheduled TI are parsed."""
    waits: dict[str, dict[str, Any]] = {}
    for ti in store.tis_in_states([TaskState.SCHEDULED]):
        flow = cat.flows.get(ti["flow_id"])
        queue = _queue(flow, ti["task_id"]) if flow else None
        if queue is None:
            continue
        wait = waits.setdefault(queue, {"tasks": 0, "since": None})
        wait["tasks"] += 1
        # the scheduler stamps queued_at with each hold reason ("waiting: ..."); without one,
        # queued_at is the previous try's start
        held = ti["queued_at"] if (ti["reason"] or "").startswith("waiting: ") else None
        if held and (wait["since"] is None or held < wait["since"]):
            wait["since"] = held
    return waits


def unserved_queue_text(queue: dict[str, Any]) -> str:
    """One queue of farm_overview's "unserved_queues", in words (status, top and doctor)."""
    tasks = "1 task waits" if queue["tasks"] == 1 else f"{queue['tasks']} tasks wait"
    since = (
        f" since {queue['waiting_since']} ({duration_text(queue['waited_s'])})"
        if queue["waiting_since"]
        else ""
    )
    return f"queue '{queue['queue']}': no live worker serves it, {tasks}{since}"


def farm_overview(
    settings: Settings, store: Store | None, cat: Catalog | None = None
) -> dict[str, Any] | None:
    """The broker, the workers and the queues no live worker serves, for a home whose
    executor is "celery" (cronflow.celery.farm); None otherwise, without importing Celery."""
    if settings.executor != "celery":
        return None
    try:
        from cronflow.celery.farm import farm_status
    except ImportError:
        error = 'the celery extra is not installed: pip install "cronflow[celery]"'
        return {
            "broker": {"url": None, "reachable": False, "error": error},
            "workers": [],
            "unserved_queues": [],
        }
    waits: dict[str, dict[str, Any]] = {}
    if store is not None:
        waits = queue_waits(store, cat if cat is not None else sync(store, settings))
    return farm_status(settings, waits)

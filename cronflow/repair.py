"""Repairing history by hand: replay (clear) task instances, mark them, backfill missing runs.

Every function checks all of its input first (flow, tasks, dates, states) and raises a
CronflowError naming what is wrong, so nothing is written on bad input. Each change is one store
transaction; the caller then pokes the daemon, which does the actual running.

Marking a task success (without --downstream) also puts its downstream tasks that are
upstream_failed back to `none`: the daemon decides them again by their trigger rules, as if the
task had succeeded (with --downstream they are marked success instead, and do not run).

Marking a whole run: `success` turns every task instance that did not succeed (failed, waiting,
running...) into success, skipped ones stay skipped; `failed` turns the unfinished ones into
failed and keeps those that already finished. The run then takes the state given.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import islice
from typing import Any

from cronflow import control
from cronflow.audit import Actor, listed
from cronflow.catalog import FlowSpec
from cronflow.errors import InvalidInputError, NotFoundError
from cronflow.mapping import base_id
from cronflow.states import (
    FINISHED_TASK_STATES,
    MARKABLE_TASK_STATES,
    RunState,
    RunType,
    TaskState,
)
from cronflow.store import RunExistsError, Store
from cronflow.timeparse import iso, parse_date_or_datetime, start_of_day, to_utc

MAX_BACKFILL_RUNS = 10_000
TINY = timedelta(microseconds=1)
FAILED_STATES = (TaskState.FAILED, TaskState.UPSTREAM_FAILED)


# --- choosing runs and tasks -------------------------------------------------------------------
def range_bounds(flow: FlowSpec, start_text: str, end_text: str) -> tuple[datetime, datetime]:
    """[start, end) from two --date values: a date covers its whole local day, a date-time is
    one instant; both ends are included."""
    start_value = parse_date_or_datetime(start_text, flow.tz)
    end_value = parse_date_or_datetime(end_text, flow.tz)
    if isinstance(start_value, datetime):
        start = to_utc(start_value)
    else:
        start = start_of_day(start_value, flow.tz)
    if isinstance(end_value, datetime):
        end = to_utc(end_value) + TINY
    else:
        end = start_of_day(end_value + timedelta(days=1), flow.tz)
    if end <= start:
        raise InvalidInputError(f"the range {start_text} .. {end_text} is empty: the end is first")
    return start, end


def runs_in_range(
    store: Store, flow: FlowSpec, start_text: str, end_text: str | None
) -> list[dict[str, Any]]:
    """Every run of --date (all runs of that day), or of --date .. --to."""
    if end_text is None:
        return control.find_runs(store, flow, start_text)
    runs = store.runs_between(flow.flow_id, *range_bounds(flow, start_text, end_text))
    if not runs:
        raise NotFoundError(f"flow '{flow.flow_id}' has no run from {start_text} to {end_text}")
    return runs


def related_tasks(
    flow: FlowSpec, task_ids: Iterable[str], downstream: bool, upstream: bool
) -> list[str]:
    """The named tasks (all if none), plus every task downstream and/or upstream of them.

    A mapped task named as a whole (`process`) means all its instances; one instance
    (`process[3]`) stays itself, and what is after or before it is its task's."""
    named = [(flow.task(t).task_id, t) for t in task_ids]  # (task, as named)
    instances = [t for base, t in named if t != base]
    chosen = {base for base, t in named if t == base} or (set() if named else set(flow.tasks))
    ups = {t.task_id: set(t.upstream) for t in flow.tasks.values()}
    downs: dict[str, set[str]] = {t: set() for t in flow.tasks}
    for task_id, parents in ups.items():
        for parent in parents:
            downs[parent].add(task_id)
    start = chosen | {base_id(t) for t in instances}
    if downstream:
        chosen |= _reachable(downs, start)
    if upstream:
        chosen |= _reachable(ups, start)
    return [t for t in flow.tasks if t in chosen] + [
        t for t in dict.fromkeys(instances) if base_id(t) not in chosen
    ]


def _selects(tasks: set[str] | dict[str, int], ti_id: str) -> bool:
    """Whether a task instance is among `tasks` (a mapped instance through its task too)."""
    return ti_id in tasks or base_id(ti_id) in tasks


def _order_key(order: dict[str, int], ti: dict[str, Any]) -> tuple[int, int]:
    """Flow order, then map index."""
    return order.get(base_id(ti["task_id"]), len(order)), ti.get("map_index") or 0


def _reachable(edges: dict[str, set[str]], start: set[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(start)
    while todo:
        for nxt in edges[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


# --- replay ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReplayPlan:
    """The task instances a replay clears, run by run, as they are now."""

    flow: FlowSpec
    runs: list[tuple[dict[str, Any], list[dict[str, Any]]]]
    only_failed: bool
    whole: frozenset[str] = frozenset()  # mapped tasks replayed as a whole: mapped again

    @property
    def count(self) -> int:
        return sum(len(tis) for _, tis in self.runs)


def plan_replay(
    store: Store,
    flow: FlowSpec,
    date_text: str,
    to_text: str | None = None,
    task_ids: Iterable[str] = (),
    downstream: bool = False,
    upstream: bool = False,
    only_failed: bool = False,
) -> ReplayPlan:
    """What `cronflow replay` would clear; nothing is written."""
    tasks = set(related_tasks(flow, task_ids, downstream, upstream))
    runs = runs_in_range(store, flow, date_text, to_text)
    by_run: dict[int, list[dict[str, Any]]] = {r["run_id"]: [] for r in runs}
    for ti in store.tis_of_runs(list(by_run)):
        if _selects(tasks, ti["task_id"]) and (not only_failed or ti["state"] in FAILED_STATES):
            by_run[ti["run_id"]].append(ti)
    order = {t: i for i, t in enumerate(flow.tasks)}
    chosen = [
        (run, sorted(by_run[run["run_id"]], key=lambda ti: _order_key(order, ti)))
        for run in sorted(runs, key=lambda r: r["logical_date"])
        if by_run[run["run_id"]]
    ]
    whole = frozenset(t for t in flow.mapped_tasks if t in tasks and not only_failed)
    return ReplayPlan(flow, chosen, only_failed, whole)


def replay(store: Store, plan: ReplayPlan, now: datetime, actor: Actor | None = None) -> int:
    """Clear the planned task instances in one transaction, with its audit entry (`actor`:
    who; default the Unix user); returns how many were cleared."""
    selection = {
        run["run_id"]: {_cleared_as(plan, ti): plan.flow.task(ti["task_id"]).retries for ti in tis}
        for run, tis in plan.runs
    }
    flow = plan.flow
    dates = [run["logical_date"] for run, _ in plan.runs]
    replayed = {ti["task_id"] for _, tis in plan.runs for ti in tis}
    tasks = [t for t in flow.tasks if _selects(replayed, t)] + sorted(
        t for t in replayed if t.endswith("]") and base_id(t) not in plan.whole
    )
    with store.atomic():
        cleared = store.clear_tis(selection, now, FAILED_STATES if plan.only_failed else ())
        shown = ", ".join(control.local_time(flow, d) for d in dates[:3])
        more = f" and {len(dates) - 3} more" if len(dates) > 3 else ""
        which = "failed tasks" if plan.only_failed else f"tasks {', '.join(tasks[:10])}"
        summary = f"replayed {cleared} task instance(s) of {shown}{more} ({which})"
        details = {
            "runs": listed(dates),
            "tasks": listed(tasks),
            "only_failed": plan.only_failed,
            "cleared": cleared,
        }
        store.record_audit("replay", flow.flow_id, summary, details, actor)
    return cleared


def _cleared_as(plan: ReplayPlan, ti: dict[str, Any]) -> str:
    """The id the store clears: a mapped task replayed as a whole by its own name, so its
    instances give way to one placeholder that maps the list again (cronflow.mapping)."""
    base = base_id(ti["task_id"])
    return base if base in plan.whole else str(ti["task_id"])


# --- mark --------------------------------------------------------------------------------------
RUN_MARK_STATES = (TaskState.SUCCESS, TaskState.FAILED)


def parse_mark_state(text: str, whole_run: bool) -> TaskState:
    allowed = RUN_MARK_STATES if whole_run else tuple(sorted(MARKABLE_TASK_STATES))
    try:
        state = TaskState(text)
    except ValueError:
        state = None
    if state not in allowed:
        what = "a run" if whole_run else "a task"
        names = ", ".join(s.value for s in allowed)
        raise InvalidInputError(f"bad state '{text}' for {what}: use {names}")
    return state


@dataclass(frozen=True)
class MarkResult:
    run: dict[str, Any]
    task_ids: list[str]
    changed: int
    cleared: list[str]  # downstream tasks put back to `none` (they were upstream_failed)
    failed: list[str]  # tasks of the run still failed or upstream_failed afterwards


def mark(
    store: Store,
    flow: FlowSpec,
    task_id: str | None,
    date_text: str,
    state_text: str,
    downstream: bool,
    now: datetime,
    actor: Actor | None = None,
) -> MarkResult:
    """`cronflow mark`: one task (and its downstream tasks) or a whole run, in one transaction
    with its audit entry (`actor`: who; default the Unix user)."""
    plan = plan_mark(store, flow, task_id, date_text, state_text, downstream)
    run, tasks, state = plan.run, plan.task_ids, plan.state
    with store.atomic():
        changed, cleared = _mark(store, flow, run, task_id, tasks, state, downstream, now)
        what = ", ".join(tasks[:10]) if task_id else "the run"
        summary = (
            f"marked {what} of {control.local_time(flow, run['logical_date'])} {state.value}"
            f" ({changed} changed)"
        )
        details = {
            "run_id": run["run_id"],
            "logical_date": run["logical_date"],
            "tasks": listed(tasks if task_id else []),
            "state": state.value,
            "downstream": downstream,
            "changed": changed,
            "cleared": cleared,
        }
        store.record_audit("mark", flow.flow_id, summary, details, actor)
    failed = [
        ti["task_id"]
        for ti in store.tis_of_runs([run["run_id"]])
        if ti["state"] in FAILED_STATES and not _selects(set(tasks), ti["task_id"])
    ]
    return MarkResult(store.run(run["run_id"]), tasks, changed, cleared, failed)


def _mark(
    store: Store,
    flow: FlowSpec,
    run: dict[str, Any],
    task_id: str | None,
    tasks: list[str],
    state: TaskState,
    downstream: bool,
    now: datetime,
) -> tuple[int, list[str]]:
    """Mark the task instances (or the whole run); how many changed, and the downstream tasks
    put back to `none`."""
    cleared: list[str] = []
    present = [ti["task_id"] for ti in store.tis_of_runs([run["run_id"]])]
    tasks = [t for t in present if _selects(set(tasks), t)]  # a mapped task: its instances
    if task_id is not None:
        clear = {}
        if state is TaskState.SUCCESS and not downstream:
            # what failed below it because it failed is decided again by the trigger rules
            below = related_tasks(flow, [task_id], downstream=True, upstream=False)
            before = {ti["task_id"]: ti["state"] for ti in store.tis_of_runs([run["run_id"]])}
            cleared = [
                t
                for t in before
                if _selects(set(below), t)
                and t not in tasks
                and before[t] == TaskState.UPSTREAM_FAILED
            ]
            clear = {t: flow.task(t).retries for t in cleared}
        changed = store.mark_tis(run["run_id"], tasks, state, now, clear=clear)
    else:
        changed = store.mark_tis(
            run["run_id"],
            tasks,
            state,
            now,
            except_states=_kept_by_run_mark(state),
            run_state=RunState(state.value),
        )
    return changed, cleared


def _kept_by_run_mark(state: TaskState) -> tuple[TaskState, ...]:
    """Marking a whole run success keeps what succeeded or was skipped; failed keeps what
    already finished."""
    if state is TaskState.SUCCESS:
        return (TaskState.SUCCESS, TaskState.SKIPPED)
    return tuple(FINISHED_TASK_STATES)


@dataclass(frozen=True)
class MarkPlan:
    """What `mark` would change, as it is now: the run, the tasks named, their task instances
    that would take the state (the web view's confirmation lists them)."""

    run: dict[str, Any]
    task_ids: list[str]
    state: TaskState
    tis: list[dict[str, Any]]


def plan_mark(
    store: Store,
    flow: FlowSpec,
    task_id: str | None,
    date_text: str,
    state_text: str,
    downstream: bool,
) -> MarkPlan:
    """Check a mark's input and list what it would change; nothing is written."""
    state = parse_mark_state(state_text, whole_run=task_id is None)
    if task_id is None and downstream:
        raise InvalidInputError("--downstream needs a task: FLOW.TASK")
    tasks = related_tasks(flow, [task_id] if task_id else [], downstream, upstream=False)
    run = control.find_one_run(store, flow, date_text)
    kept = () if task_id is not None else _kept_by_run_mark(state)
    order = {t: i for i, t in enumerate(flow.tasks)}
    named, present = set(tasks), store.tis_of_runs([run["run_id"]])
    mapped_instance = task_id is not None and task_id != base_id(task_id)
    if mapped_instance and not any(ti["task_id"] == task_id for ti in present):
        local = control.local_time(flow, run["logical_date"])  # an instance it did not map
        raise NotFoundError(f"the run of {local} has no task '{task_id}'")
    tis = sorted(
        (ti for ti in present if _selects(named, ti["task_id"]) and ti["state"] not in kept),
        key=lambda ti: _order_key(order, ti),
    )
    return MarkPlan(run, tasks, state, tis)


# --- backfill ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class BackfillResult:
    created: list[tuple[int, datetime]]
    existing: int
    future: bool


def backfill(
    store: Store,
    flow: FlowSpec,
    from_text: str,
    to_text: str,
    now: datetime,
    actor: Actor | None = None,
) -> BackfillResult:
    """Create a backfill run for every fire time in [from, to] (and not after now) that has no
    run yet; the daemon starts them, oldest first, within max_active_runs. Each run is its own
    transaction (a long backfill never holds the daemon up); the audit entry (`actor`: who,
    default the Unix user) follows them."""
    if flow.schedule is None:
        raise InvalidInputError(
            f"flow '{flow.flow_id}' has no schedule, so no fire times to backfill; "
            "use `cronflow trigger --date`"
        )
    start, end = range_bounds(flow, from_text, to_text)
    future = end > now + TINY
    end = min(end, now + TINY)
    fires = list(islice(flow.schedule.fires(start - TINY, end - TINY), MAX_BACKFILL_RUNS + 1))
    if len(fires) > MAX_BACKFILL_RUNS:
        raise InvalidInputError(
            f"{from_text} .. {to_text} holds more than {MAX_BACKFILL_RUNS} fire times of "
            f"'{flow.flow_id}'; backfill a shorter range at a time"
        )
    taken = {r["logical_date"] for r in store.runs_between(flow.flow_id, start, end)}
    created, existing = [], 0
    for fire in fires:
        if iso(fire) in taken:
            existing += 1
            continue
        try:
            run_id = control.trigger(store, flow, fire, run_type=RunType.BACKFILL)
        except RunExistsError:  # the daemon created it meanwhile
            existing += 1
            continue
        created.append((run_id, fire))
    summary = (
        f"backfill {from_text} .. {to_text}: {len(created)} run(s) created, {existing} existed"
    )
    details = {
        "from": from_text,
        "to": to_text,
        "created": listed(iso(at) for _, at in created),
        "existing": existing,
    }
    store.record_audit("backfill", flow.flow_id, summary, details, actor)
    return BackfillResult(created, existing, future)

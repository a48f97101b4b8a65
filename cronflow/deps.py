"""Dependencies: within a flow (graph, cycles, trigger rules) and between flows. Pure.

The daemon asks two questions of a run:
- which waiting tasks may start now, and which can never start (upstream_failed / skipped);
- whether the run may start at all, given the flows it waits for: how far the other flow's
  day is (`day_progress`; reading the store and the schedules is cronflow.waits' job).
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from enum import Enum

from cronflow.errors import FlowDefinitionError
from cronflow.states import FINISHED_TASK_STATES, RunState, TaskState, TriggerRule

_FAILED = {TaskState.FAILED, TaskState.UPSTREAM_FAILED}
DEFAULT_WAIT_TIMEOUT_S = 24 * 3600.0  # how long a run waits for another flow's day, by default


def topological_order(upstreams: Mapping[str, Iterable[str]]) -> list[str]:
    """Task ids so that each comes after its upstreams; FlowDefinitionError names a cycle."""
    for task_id, ups in upstreams.items():
        for up in ups:
            if up not in upstreams:
                raise FlowDefinitionError(f"task '{task_id}' depends on unknown task '{up}'")
    order: list[str] = []
    mark: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> None:
        if mark.get(node) == 2:
            return
        if mark.get(node) == 1:
            # the walk follows upstream edges; reversed, it reads as the user wrote it (a >> b)
            cycle = [node, *reversed(path[path.index(node) :])]
            raise FlowDefinitionError(f"dependency cycle: {' >> '.join(cycle)}")
        mark[node] = 1
        for up in upstreams[node]:
            visit(up, [*path, node])
        mark[node] = 2
        order.append(node)

    for node in upstreams:
        visit(node, [])
    return order


def find_flow_cycle(waits: Mapping[str, Iterable[tuple[str, int]]]) -> list[str] | None:
    """A cycle of same-day waits between flows (offset 0), which could never start; else None.

    Waits with a negative offset point to earlier days and so cannot deadlock."""
    graph = {f: [up for up, offset in ws if offset >= 0 and up in waits] for f, ws in waits.items()}
    try:
        topological_order(graph)
    except FlowDefinitionError as exc:
        # the message reads upstream >> downstream; the result lists each flow before its upstream
        return str(exc).removeprefix("dependency cycle: ").split(" >> ")[::-1]
    return None


def flow_wait_problems(waits: Mapping[str, Iterable[tuple[str, int]]]) -> list[tuple[str, str]]:
    """(flow id, problem) for each wait on an unknown flow and each flow in a cycle of same-day
    waits: what only shows across flow files (the catalog and `cronflow check` both ask)."""
    problems = [
        (flow_id, f"flow '{flow_id}' waits for unknown flow '{upstream}'")
        for flow_id, ws in waits.items()
        for upstream, _ in ws
        if upstream not in waits
    ]
    cycle = find_flow_cycle(waits)
    if cycle:
        text = " -> ".join(cycle)
        problems += [
            (f, f"flow '{f}' is in a cycle of flow waits: {text}") for f in sorted(set(cycle))
        ]
    return problems


class Decision(Enum):
    WAIT = "wait"
    RUN = "run"
    SKIP = "skip"
    UPSTREAM_FAILED = "upstream_failed"


def decide(rule: TriggerRule | str, upstream_states: list[TaskState]) -> Decision:
    """What a not-yet-started task does, given its trigger rule and its upstreams' states."""
    if not upstream_states:
        return Decision.RUN
    done = all(s in FINISHED_TASK_STATES for s in upstream_states)
    successes = sum(s == TaskState.SUCCESS for s in upstream_states)
    failures = sum(s in _FAILED for s in upstream_states)
    skips = sum(s == TaskState.SKIPPED for s in upstream_states)
    rule = TriggerRule(rule)
    if rule is TriggerRule.ALL_SUCCESS:
        if failures:
            return Decision.UPSTREAM_FAILED
        if skips:
            return Decision.SKIP
        return Decision.RUN if done else Decision.WAIT
    if rule is TriggerRule.ALL_DONE:
        return Decision.RUN if done else Decision.WAIT
    if rule is TriggerRule.ALL_FAILED:
        if successes or skips:
            return Decision.SKIP
        return Decision.RUN if done else Decision.WAIT
    if rule is TriggerRule.ONE_SUCCESS:
        if successes:
            return Decision.RUN
        if not done:
            return Decision.WAIT
        return Decision.UPSTREAM_FAILED if failures else Decision.SKIP
    if rule is TriggerRule.ONE_FAILED:
        if failures:
            return Decision.RUN
        return Decision.SKIP if done else Decision.WAIT
    # NONE_FAILED: runs once upstreams are done, skipped ones included, unless one failed;
    # NONE_FAILED_MIN_ONE_SUCCESS: the same, but skipped when every upstream was skipped.
    if failures:
        return Decision.UPSTREAM_FAILED
    if not done:
        return Decision.WAIT
    if rule is TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS and not successes:
        return Decision.SKIP
    return Decision.RUN


def branch_skips(
    downstream: Mapping[str, Iterable[str]],
    followed: Mapping[str, Iterable[str]],
    cut: Iterable[str] = (),
) -> dict[str, str]:
    """Tasks a branch skips whatever their trigger rule, each with the reason it shows.

    `followed` maps each branch task that succeeded to the direct downstream tasks it chose:
    its other direct downstream tasks are skipped (their own downstream then follow their
    trigger rules, as in Airflow: an all_success join after a branch is skipped too).
    `cut` are the short-circuit tasks that returned False: everything downstream of them is
    skipped."""
    skips: dict[str, str] = {}
    for branch, chosen in followed.items():
        chosen = list(chosen)
        names = ", ".join(chosen) or "none"
        for task_id in downstream.get(branch, ()):
            if task_id not in chosen:
                skips.setdefault(task_id, f"skipped: branch '{branch}' chose {names}")
    for gate in cut:
        pending, seen = list(downstream.get(gate, ())), set()
        while pending:
            task_id = pending.pop()
            if task_id not in seen:
                seen.add(task_id)
                skips[task_id] = f"skipped: short-circuit '{gate}' returned False"
                pending.extend(downstream.get(task_id, ()))
    return skips


def resolve_run(
    tasks: Mapping[str, tuple[list[str], str]],
    states: Mapping[str, TaskState],
    order: Iterable[str] | None = None,
    skips: Mapping[str, str] | None = None,
    groups: Mapping[str, Iterable[TaskState]] | None = None,
) -> dict[str, Decision]:
    """Decisions for every task still in state `none`, propagated through the graph at once.

    `tasks` maps task id -> (upstream ids, trigger rule). A task decided SKIP or UPSTREAM_FAILED
    counts as such for its downstreams in the same pass, so a failure reaches the leaves at once.
    `order` (a topological order of `tasks`, or of just the tasks to look at) saves
    recomputing it. `skips` (see `branch_skips`) are skipped whatever their trigger rule.
    `groups`: upstream ids that stand for several task instances (a mapped task's), with the
    distinct states those are in; a trigger rule depends only on which states occur.
    """
    # No copy: runs can be large. typeshed types every map of a ChainMap as mutable; only the
    # first (the decisions of this pass) is ever written.
    current: ChainMap[str, TaskState] = ChainMap({}, states)  # type: ignore[arg-type]
    decisions: dict[str, Decision] = {}
    if order is None:
        order = topological_order({t: ups for t, (ups, _) in tasks.items()})
    for task_id in order:
        if current.get(task_id, TaskState.NONE) != TaskState.NONE:
            continue
        ups, rule = tasks[task_id]
        if skips and task_id in skips:
            decision = Decision.SKIP
        else:
            if groups:
                found = [
                    [*groups[u]] if u in groups else [current.get(u, TaskState.NONE)] for u in ups
                ]
                decision = decide(rule, [state for states_of in found for state in states_of])
            else:
                decision = decide(rule, [current.get(u, TaskState.NONE) for u in ups])
        decisions[task_id] = decision
        if decision is Decision.SKIP:
            current[task_id] = TaskState.SKIPPED
        elif decision is Decision.UPSTREAM_FAILED:
            current[task_id] = TaskState.UPSTREAM_FAILED
    return decisions


def branch_joins(
    tasks: Mapping[str, tuple[list[str], str]], branches: Iterable[str]
) -> list[tuple[str, str]]:
    """(branch, join) for each all_success task that joins two or more paths of a branch: it
    is skipped whenever the branch skips one of them, which is rarely meant (`cronflow check`
    notes it; the rule for such a join is none_failed_min_one_success)."""
    downstream: dict[str, list[str]] = {t: [] for t in tasks}
    for task_id, (ups, _) in tasks.items():
        for up in ups:
            downstream.setdefault(up, []).append(task_id)
    found = []
    for branch in branches:
        paths: dict[str, set[str]] = {}  # task -> the branch's direct downstream it is after
        for child in downstream.get(branch, ()):
            pending = [child]
            while pending:
                task_id = pending.pop()
                if child not in paths.setdefault(task_id, set()):
                    paths[task_id].add(child)
                    pending.extend(downstream.get(task_id, ()))
        for task_id, (ups, rule) in tasks.items():
            on_paths = [paths[u] for u in ups if paths.get(u)]
            joined = set().union(*on_paths) if len(on_paths) > 1 else set()
            if rule == TriggerRule.ALL_SUCCESS and len(joined) > 1:
                found.append((branch, task_id))
    return found


def run_outcome(states: Iterable[TaskState]) -> RunState | None:
    """The run's final state once every task has finished; None while any has not.

    A run fails if any task failed or could not run because of a failure, even when a cleanup
    task with trigger rule all_done succeeded afterwards: a failure must never look green."""
    states = list(states)
    if not all(s in FINISHED_TASK_STATES for s in states):
        return None
    return RunState.FAILED if any(s in _FAILED for s in states) else RunState.SUCCESS


def upstream_day(day: date, offset_days: int) -> date:
    """The day of the upstream flow's run that a run of `day` waits for."""
    return day + timedelta(days=offset_days)


@dataclass(frozen=True)
class DayProgress:
    """Another flow's day as a wait sees it: its fire times of that day by its schedule, and
    every run it has that day (manual and triggered ones too), sorted by what they still lack.
    Moments are logical dates as the store keeps them (UTC ISO text, which sorts by time).

    The day is done when every fire time has a run, every run succeeded, and (for a flow
    without schedule, which has no fire times) at least one run exists. Manual runs count when
    they exist but cannot stand in for a fire time that has no run."""

    expected: int  # fire times of the day by the schedule, within the flow's dates
    succeeded: int  # runs of the day that succeeded
    failed: tuple[str, ...] = ()  # logical dates of the runs that failed
    unfinished: tuple[tuple[str, str], ...] = ()  # (logical date, queued | running)
    missing: tuple[str, ...] = ()  # fire times with no run (yet)
    needs_a_run: bool = False  # no schedule: only a run of that day can complete it
    extra: int = 0  # runs at other times than the fire times (manual, triggered)

    @property
    def total(self) -> int:
        """The runs the day should have: its fire times, plus the other runs it has."""
        return self.expected + self.extra

    @property
    def done(self) -> bool:
        if self.failed or self.unfinished or self.missing:
            return False
        return self.succeeded > 0 or not self.needs_a_run

    @property
    def nothing_to_wait_for(self) -> bool:
        """No fire time and no run that day: the wait holds at once."""
        return not self.expected and not self.succeeded and self.done


_SUCCESS, _FAILED_RUN = RunState.SUCCESS.value, RunState.FAILED.value


def day_progress(
    expected: Iterable[str], runs: Iterable[tuple[str, str]], scheduled: bool = True
) -> DayProgress:
    """How far a day of another flow is: `expected` are its fire times that day, `runs` the
    (logical date, state) of each of its runs that day, both UTC ISO text as the store keeps
    them; `scheduled` is False for a flow without schedule. Asked at every tick for each
    waiting run, with up to a day of runs: plain strings, no parsing."""
    fires = sorted(set(expected))
    seen: set[str] = set()
    succeeded, failed, unfinished = 0, [], []
    for logical, state in runs:
        seen.add(logical)
        if state == _SUCCESS:
            succeeded += 1
        elif state == _FAILED_RUN:
            failed.append(logical)
        else:
            unfinished.append((logical, RunState(state).value))  # an unknown state: ValueError
    return DayProgress(
        expected=len(fires),
        succeeded=succeeded,
        failed=tuple(sorted(failed)),
        unfinished=tuple(sorted(unfinished)),
        missing=tuple(f for f in fires if f not in seen),
        needs_a_run=not scheduled,
        extra=len(seen.difference(fires)),
    )

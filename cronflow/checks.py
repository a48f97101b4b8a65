"""`cronflow check`: validate a directory of flow files, e.g. in a CI pipeline, without a daemon.

Each file is imported in a child process with the daemon's time limit (cronflow.loader), so a
file that hangs or exits cannot stop the check. Problems found:

* a file that does not import, or a flow that does not validate: syntax errors, exceptions, a bad
  cron expression or timezone, a cycle of tasks, an unknown upstream task (with file and line);
* across files: a flow id defined twice (the newcomer is blamed, as the daemon does: the file
  the home's store has it from, else the older file), a wait for an unknown flow, a cycle of
  same-day waits, a TriggerFlow or FlowSensor whose target flow (or task) is unknown;
* per task: a pool missing from cronflow.toml (when there is one), a connection id that is
  neither in the store nor in a CRONFLOW_CONN_* variable (when connections can be known), a
  template with a syntax error or a value that does not exist (`{{ dss }}`), each named with
  its task and argument.

Notes, which are no problem: an all_success task that joins paths of a branch (it is skipped
whenever the branch skips one of them, as in Airflow); days on which a wait has nothing to wait
for (the other flow does not fire that day, or it is before its start date or after its end
date: such runs start without waiting, cronflow.waits), and waits for a flow without schedule.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from cronflow import deps
from cronflow.catalog import SPEC_FORMAT, FlowSpec, FlowWait, claim_ids
from cronflow.connections import env_name
from cronflow.context import TEMPLATE_NAMES
from cronflow.errors import CronflowError, InvalidInputError
from cronflow.loader import flow_file_paths, load_files
from cronflow.templates import template_problems
from cronflow.timeparse import start_of_day

_NOT_TEMPLATES = {"stdin", "callable"}  # op fields passed as they are


@dataclass(frozen=True)
class Problem:
    path: str
    message: str
    flow: str | None = None

    @property
    def text(self) -> str:
        """One line naming the file (loader messages already start with it)."""
        return (
            self.message if self.message.startswith(self.path) else f"{self.path}: {self.message}"
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CheckReport:
    files: list[str] = field(default_factory=list)
    flows: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what could not be checked, and why

    def as_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "flows": self.flows,
            "problems": [p.as_dict() for p in self.problems],
            "notes": self.notes,
        }


def check_flows(
    target: Path,
    *,
    timeout_s: float,
    pools: Mapping[str, int] | None = None,
    connections: set[str] | None = None,
    owners: Mapping[str, str] | None = None,
    now: datetime | None = None,
) -> CheckReport:
    """Check every flow file of `target` (a directory, or one file).

    `pools`: the configured pools, or None to skip the pool check; `connections`: the known
    connection ids, or None to skip that check; `owners`: flow id -> the file the home's store
    has it from (a duplicate id is then blamed on the other file); `now`: where the wait notes'
    year of days starts (default: now)."""
    paths = _paths(target)
    report = CheckReport(files=[str(p) for p in paths])
    if not paths:
        report.problems.append(Problem(str(target), "no flow files (*.py) in this directory"))
        return report
    flows = _load(paths, timeout_s, report, owners or {})
    report.flows = sorted(flows)
    waits = {f.flow_id: f.wait_for for f in flows.values()}
    for flow_id, problem in deps.flow_wait_problems(waits):
        report.problems.append(Problem(flows[flow_id].path, problem, flow_id))
    for flow in flows.values():
        report.problems += _target_problems(flow, flows)
        report.problems += _task_problems(flow, pools, connections)
    for flow in flows.values():
        for branch, join in deps.branch_joins(flow.graph, flow.branch_tasks):
            report.notes.append(
                f"flow '{flow.flow_id}': task '{join}' joins paths of branch '{branch}' with "
                "trigger_rule all_success, so it is skipped whenever the branch skips one of "
                "them; trigger_rule='none_failed_min_one_success' runs it after the path taken"
            )
        for wait in flow.waits:
            if wait.flow_id in flows:
                report.notes += _wait_notes(flow, wait, flows[wait.flow_id], now or _utcnow())
    if pools is None:
        report.notes.append("pools not checked: no cronflow.toml in the home")
    if connections is None:
        report.notes.append(
            "connections not checked: no state database in the home, no CRONFLOW_CONN_* variable"
        )
    return report


WAIT_NOTE_DAYS = 366  # how far ahead the days of a wait are looked at


def _wait_notes(flow: FlowSpec, wait: FlowWait, other: FlowSpec, now: datetime) -> list[str]:
    """Days on which `flow`'s runs have nothing to wait for from `other` (cronflow.waits):
    before its start date, after its end date, and the days of the coming year it does not
    fire (looked at with one next-fire query per day and flow)."""
    head = f"flow '{flow.flow_id}' waits for '{other.flow_id}'"
    if other.schedule is None:
        return [
            f"{head}, which has no schedule: each run waits until a run of '{other.flow_id}' of "
            f"its day succeeded (at most wait_timeout)"
        ]
    if flow.schedule is None:
        return []
    notes = []
    shift = timedelta(days=wait.offset_days)
    if other.start_at and (flow.start_at is None or flow.start_at < other.start_at):
        first = other.start_at.astimezone(other.tz).date() - shift
        notes.append(
            f"{head}: its runs before {first} have nothing to wait for (the start date of "
            f"'{other.flow_id}')"
        )
    if other.end_at and (flow.end_at is None or flow.end_at > other.end_at):
        last = (other.end_at - timedelta(microseconds=1)).astimezone(other.tz).date() - shift
        notes.append(
            f"{head}: its runs after {last} have nothing to wait for (the end date of "
            f"'{other.flow_id}')"
        )
    start = max(now, flow.start_at or now, (other.start_at or now) - shift)
    ends = [d for d in (flow.end_at, other.end_at and other.end_at - shift) if d]
    end = min(ends, default=None)
    day, days, quiet = start.astimezone(flow.tz).date(), 0, []
    for _ in range(WAIT_NOTE_DAYS):
        if end is not None and start_of_day(day, flow.tz) >= end:
            break
        if _fires_between(flow, *_day_bounds(day, flow.tz)):
            days += 1
            target = day + shift
            if not _fires_between(other, *_day_bounds(target, other.tz)):
                quiet.append(target)
        day += timedelta(days=1)
    if quiet:
        notes.append(
            f"{head}: '{other.flow_id}' does not fire on {len(quiet)} of the {days} days waited "
            f"for in the coming year (first {quiet[0]}): those runs have nothing to wait for"
        )
    return notes


def _day_bounds(day: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    return start_of_day(day, tz), start_of_day(day + timedelta(days=1), tz)


def _fires_between(flow: FlowSpec, start: datetime, end: datetime) -> bool:
    """Whether the flow fires in [start, end), within its dates."""
    assert flow.schedule is not None
    after = max(start, flow.start_at or start) - timedelta(microseconds=1)
    fire = flow.schedule.next_after(after)
    return fire is not None and fire < end and not (flow.end_at and fire > flow.end_at)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _paths(target: Path) -> list[Path]:
    if target.is_dir():
        return flow_file_paths(target)
    if target.is_file():
        return [target]
    raise InvalidInputError(f"{target}: no such file or directory (give a flows directory)")


def _load(
    paths: list[Path], timeout_s: float, report: CheckReport, owners: Mapping[str, str]
) -> dict[str, FlowSpec]:
    """Import the files; a flow id defined twice is the newcomer's problem (catalog.claim_ids:
    the file the store has it from, else the older file, then name order)."""
    results = {str(path): result for path, result in load_files(paths, timeout_s).items()}
    files = {path: (_mtime_ns(Path(path)), 0, SPEC_FORMAT) for path in results}
    claimed = claim_ids(results, {f: p for f, p in owners.items() if p in results}, files)
    flows: dict[str, FlowSpec] = {}
    for path in map(str, paths):
        specs, error = claimed[path]
        if error:
            report.problems.append(Problem(path, error))
        for spec in specs:
            try:
                flows[spec["flow_id"]] = FlowSpec.from_spec(spec, path)
            except CronflowError as exc:
                report.problems.append(Problem(path, str(exc), spec["flow_id"]))
    return flows


def _mtime_ns(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def _target_problems(flow: FlowSpec, flows: Mapping[str, FlowSpec]) -> list[Problem]:
    """TriggerFlow and FlowSensor tasks whose target flow (or task) is not among the flows
    checked; a templated target is known only when the task runs."""
    problems = []
    for task in flow.tasks.values():
        if task.kind not in ("trigger_flow", "flow_sensor"):
            continue
        target, target_task = task.op.get("flow_id", ""), task.op.get("task")
        where = f"flow '{flow.flow_id}' task '{task.task_id}'"
        if "{{" in target:
            continue
        if target not in flows:
            known = ", ".join(sorted(flows)) or "none"
            message = f"{where}: unknown target flow '{target}' (known: {known})"
            problems.append(Problem(flow.path, message, flow.flow_id))
        elif target_task and target_task not in flows[target].tasks:
            known = ", ".join(flows[target].tasks)
            message = f"{where}: flow '{target}' has no task '{target_task}' (known: {known})"
            problems.append(Problem(flow.path, message, flow.flow_id))
    return problems


def _task_problems(
    flow: FlowSpec, pools: Mapping[str, int] | None, connections: set[str] | None
) -> list[Problem]:
    problems = []

    def add(task_id: str, message: str) -> None:
        problems.append(Problem(flow.path, f"flow '{flow.flow_id}' task '{task_id}': {message}"))

    for task in flow.tasks.values():
        if pools is not None and task.pool not in pools:
            known = ", ".join(sorted(pools))
            add(task.task_id, f"pool '{task.pool}' is not in cronflow.toml (known: {known})")
        for key, value in _strings(task.op):
            if key.endswith("conn_id") and connections is not None and "{{" not in value:
                if env_name(value) not in {env_name(c) for c in connections}:
                    known = ", ".join(sorted(connections)) or "none"
                    add(task.task_id, f"unknown connection '{value}' (known: {known})")
            elif key not in _NOT_TEMPLATES:
                for problem in template_problems(value, TEMPLATE_NAMES):
                    add(task.task_id, f"{key}: {problem}")
    return problems


def _strings(op: Any, key: str = "") -> Iterator[tuple[str, str]]:
    """(field name, text) of every string in an op's arguments, nested ones included."""
    if isinstance(op, str):
        yield key, op
    elif isinstance(op, Mapping):
        for name, value in op.items():
            if name not in _NOT_TEMPLATES:
                yield from _strings(value, name if not key else f"{key}.{name}")
    elif isinstance(op, list | tuple):
        for value in op:
            yield from _strings(value, key)

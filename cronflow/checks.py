"""`cronflow check`: validate a directory of flow files, e.g. in a CI pipeline, without a daemon.

Each file is imported in a child process with the daemon's time limit (cronflow.loader), so a
file that hangs or exits cannot stop the check. Problems found:

* a file that does not import, or a flow that does not validate: syntax errors, exceptions, a bad
  cron expression or timezone, a cycle of tasks, an unknown upstream task (with file and line);
* across files: a flow id defined twice, a wait for an unknown flow, a cycle of same-day waits;
* per task: a pool missing from cronflow.toml (when there is one), a connection id that is
  neither in the store nor in a CRONFLOW_CONN_* variable (when connections can be known), a
  template value that does not exist (`{{ dss }}`).

Notes, which are no problem: days on which a wait has nothing to wait for (the other flow does
not fire that day, or it is before its start date or after its end date: such runs start
without waiting, cronflow.waits), and waits for a flow without schedule.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from cronflow import deps
from cronflow.catalog import FlowSpec, FlowWait
from cronflow.connections import env_name
from cronflow.errors import CronflowError, InvalidInputError
from cronflow.loader import flow_file_paths, load_files
from cronflow.templates import date_context, placeholders
from cronflow.timeparse import start_of_day

# names a task's templates may use besides the dates (cronflow.context.task_context)
_CONTEXT_NAMES = {"flow_id", "task_id", "run_id", "run_type", "try_number", "params", "conf"}
_CONTEXT_NAMES |= {"var", "conn", "xcom"}
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
    now: datetime | None = None,
) -> CheckReport:
    """Check every flow file of `target` (a directory, or one file).

    `pools`: the configured pools, or None to skip the pool check; `connections`: the known
    connection ids, or None to skip that check; `now`: where the wait notes' year of days
    starts (default: now)."""
    paths = _paths(target)
    report = CheckReport(files=[str(p) for p in paths])
    if not paths:
        report.problems.append(Problem(str(target), "no flow files (*.py) in this directory"))
        return report
    flows = _load(paths, timeout_s, report)
    report.flows = sorted(flows)
    waits = {f.flow_id: f.wait_for for f in flows.values()}
    for flow_id, problem in deps.flow_wait_problems(waits):
        report.problems.append(Problem(flows[flow_id].path, problem, flow_id))
    for flow in flows.values():
        report.problems += _task_problems(flow, pools, connections)
    for flow in flows.values():
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


def _load(paths: list[Path], timeout_s: float, report: CheckReport) -> dict[str, FlowSpec]:
    """Import the files; a flow id belongs to the first file (in name order) defining it."""
    flows: dict[str, FlowSpec] = {}
    results = load_files(paths, timeout_s)
    for path in paths:
        result = results[path]
        if result.error:
            report.problems.append(Problem(str(path), result.error))
        for spec in result.specs:
            flow_id = spec["flow_id"]
            if flow_id in flows:
                message = f"flow '{flow_id}' is already defined in {flows[flow_id].path}"
                report.problems.append(Problem(str(path), message, flow_id))
                continue
            try:
                flows[flow_id] = FlowSpec.from_spec(spec, str(path))
            except CronflowError as exc:
                report.problems.append(Problem(str(path), str(exc), flow_id))
    return flows


def _task_problems(
    flow: FlowSpec, pools: Mapping[str, int] | None, connections: set[str] | None
) -> list[Problem]:
    known_names = set(_template_names()) | _CONTEXT_NAMES
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
                for name in placeholders(value):
                    if name.partition(".")[0] not in known_names:
                        add(task.task_id, f"{key}: unknown template value '{{{{ {name} }}}}'")
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


def _template_names() -> list[str]:
    """The date names of templates, asked of cronflow.templates itself so they cannot drift."""
    at = datetime(2000, 1, 1, tzinfo=UTC)
    return list(date_context(at, (at, at), ZoneInfo("UTC"), None, at + timedelta(days=1)))

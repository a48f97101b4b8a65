"""`cronflow check`: validate a directory of flow files, e.g. in a CI pipeline, without a daemon.

Each file is imported in a child process with the daemon's time limit (cronflow.loader), so a
file that hangs or exits cannot stop the check. Problems found:

* a file that does not import, or a flow that does not validate: syntax errors, exceptions, a bad
  cron expression or timezone, a cycle of tasks, an unknown upstream task (with file and line);
* across files: a flow id defined twice, a wait for an unknown flow, a cycle of same-day waits;
* per task: a pool missing from cronflow.toml (when there is one), a connection id that is
  neither in the store nor in a CRONFLOW_CONN_* variable (when connections can be known), a
  template with a syntax error or a value that does not exist (`{{ dss }}`), each named with
  its task and argument.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cronflow import deps
from cronflow.catalog import FlowSpec
from cronflow.connections import env_name
from cronflow.context import TEMPLATE_NAMES
from cronflow.errors import CronflowError, InvalidInputError
from cronflow.loader import flow_file_paths, load_files
from cronflow.templates import template_problems

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
) -> CheckReport:
    """Check every flow file of `target` (a directory, or one file).

    `pools`: the configured pools, or None to skip the pool check; `connections`: the known
    connection ids, or None to skip that check."""
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
    if pools is None:
        report.notes.append("pools not checked: no cronflow.toml in the home")
    if connections is None:
        report.notes.append(
            "connections not checked: no state database in the home, no CRONFLOW_CONN_* variable"
        )
    return report


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

"""Flow and Task: what a flow file declares, validated as it is built.

A flow file needs little boilerplate:

    from cronflow import Flow, Shell

    with Flow("ingest", schedule="30 2 * * *", timezone="Europe/Paris", start_date="2024-03-01"):
        fetch = Shell("fetch", "fetch-station --day {{ ds }}", retries=2)
        load = Shell("load", "load-db {{ ds_nodash }}")
        fetch >> load

Everything here is pure: a Flow turns into a JSON-able spec (`Flow.spec()`) that the daemon keeps,
so the daemon never imports user code itself.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import partial
from types import FrameType
from typing import Any

from cronflow import deps
from cronflow.errors import CronflowError, FlowDefinitionError
from cronflow.mapping import DEFAULT_ARG
from cronflow.states import TriggerRule
from cronflow.timeparse import iso, parse_date_or_datetime, parse_duration, start_of_day, to_utc
from cronflow.timetable import Schedule, parse_timezone

# Flow(schedule=AT_DAEMON_START): no time schedule; the daemon runs the flow once each time it
# starts (what crontab's @reboot becomes)
AT_DAEMON_START = "@reboot"
ID_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")

_current_flow: ContextVar[Flow | None] = ContextVar("cronflow_current_flow", default=None)
# Set by the loader while it imports a flow file, so `with Flow(...):` needs no `as` name.
_collector: ContextVar[list[Flow] | None] = ContextVar("cronflow_flow_collector", default=None)


@contextmanager
def collecting_flows() -> Iterator[list[Flow]]:
    """Collect every Flow created inside this block (used around a flow file's import)."""
    flows: list[Flow] = []
    token = _collector.set(flows)
    try:
        yield flows
    finally:
        _collector.reset(token)


# Defaults a flow's `defaults=` may override, then each task's own arguments.
TASK_DEFAULTS: dict[str, Any] = {
    "retries": 0,
    "retry_delay": 300.0,
    "retry_exponential_backoff": False,
    "max_retry_delay": 3600.0,
    "timeout": None,
    "pool": "default",
    "queue": None,  # a Celery queue: the servers that run the task (executor = "celery")
    "priority": 1,
    "trigger_rule": TriggerRule.ALL_SUCCESS.value,
    # the same task of the previous run (by logical date) must have succeeded or been skipped;
    # wait_for_downstream: its direct downstream tasks there too (cronflow.past)
    "depends_on_past": False,
    "wait_for_downstream": False,
}
# Alerts: callables run (in a child process) when a task instance reaches failed, up_for_retry or
# success, and mail to send on failure. Set on a task, or for all tasks of a flow.
CALLBACK_EVENTS = ("on_failure", "on_retry", "on_success")
ALERT_KEYS = (*CALLBACK_EVENTS, "email_on_failure")


def _check_id(kind: str, value: object) -> str:
    if not isinstance(value, str) or not ID_PATTERN.match(value):
        raise FlowDefinitionError(
            f"bad {kind} id {value!r}: use letters, digits, '_' and '-' (no dots or spaces)"
        )
    return value


@dataclass(frozen=True)
class FlowDependency:
    """This flow's run for day D waits until every run `flow_id` has (or should have, by its
    schedule) on day D + offset_days has succeeded. `wait_timeout` and `soft_fail` override the
    flow's `wait_timeout` / `wait_soft_fail` for this wait."""

    flow_id: str
    offset_days: int = 0
    wait_timeout: float | str | timedelta | None = None
    soft_fail: bool | None = None

    def spec(self, timeout_s: float, soft_fail: bool) -> dict[str, Any]:
        """The wait as stored, with the flow's defaults filled in (validated)."""
        where = f"wait for '{self.flow_id}'"
        if not isinstance(self.offset_days, int) or isinstance(self.offset_days, bool):
            raise FlowDefinitionError(f"{where}: offset_days must be a whole number of days")
        if self.wait_timeout is not None:
            timeout_s = parse_duration(self.wait_timeout, f"{where}: wait_timeout")
        return {
            "flow_id": self.flow_id,
            "offset_days": self.offset_days,
            "timeout_s": timeout_s,
            "soft_fail": bool(soft_fail if self.soft_fail is None else self.soft_fail),
        }


class Task:
    """One node of a flow. Operators (cronflow.ops) subclass it and add their own arguments."""

    kind = "task"

    def __init__(
        self,
        task_id: str,
        *,
        retries: int | None = None,
        retry_delay: float | str | timedelta | None = None,
        retry_exponential_backoff: bool | None = None,
        max_retry_delay: float | str | timedelta | None = None,
        timeout: float | str | timedelta | None = None,
        pool: str | None = None,
        queue: str | None = None,
        priority: int | None = None,
        trigger_rule: str | TriggerRule | None = None,
        depends_on_past: bool | None = None,
        wait_for_downstream: bool | None = None,
        params: Mapping[str, Any] | None = None,
        on_failure: Callable[..., Any] | None = None,
        on_retry: Callable[..., Any] | None = None,
        on_success: Callable[..., Any] | None = None,
        email_on_failure: str | Iterable[str] | None = None,
        deadline: float | str | timedelta | None = None,
        flow: Flow | None = None,
    ) -> None:
        owner = flow or _current_flow.get()
        if owner is None:
            raise FlowDefinitionError(
                f"task '{task_id}' is not inside a flow: create it within `with Flow(...):`"
            )
        self.flow: Flow = owner
        self.line = _flow_file_line()  # errors found later (spec) still say where
        try:
            self.task_id = _check_id("task", task_id)
        except FlowDefinitionError as exc:
            raise FlowDefinitionError(f"flow '{self.flow.flow_id}': {exc}") from None
        self._own = {
            "retries": retries,
            "retry_delay": retry_delay,
            "retry_exponential_backoff": retry_exponential_backoff,
            "max_retry_delay": max_retry_delay,
            "timeout": timeout,
            "pool": pool,
            "queue": queue,
            "priority": priority,
            "trigger_rule": trigger_rule,
            "depends_on_past": depends_on_past,
            "wait_for_downstream": wait_for_downstream,
        }
        self.params = dict(params or {})
        self._alerts = {
            "on_failure": on_failure,
            "on_retry": on_retry,
            "on_success": on_success,
            "email_on_failure": email_on_failure,
        }
        self.deadline = deadline
        self.upstream_ids: list[str] = []
        self.map_over: str | None = None  # mapped: one task instance per item (cronflow.mapping)
        self.map_arg = DEFAULT_ARG
        # Operators add theirs here rather than raise: spec() then names every bad option.
        self.bad_options: list[str] = []
        self.flow.add(self)

    # --- dependencies: a >> b, a >> [b, c], [a, b] >> c, a << b ---
    def __rshift__(self, other: Task | Iterable[Task]) -> Task | Iterable[Task]:
        for task in _as_list(other):
            task.set_upstream(self)
        return other

    def __lshift__(self, other: Task | Iterable[Task]) -> Task | Iterable[Task]:
        for task in _as_list(other):
            self.set_upstream(task)
        return other

    def __rrshift__(self, other: Iterable[Task]) -> Task:
        for task in _as_list(other):
            self.set_upstream(task)
        return self

    def __rlshift__(self, other: Iterable[Task]) -> Task:
        for task in _as_list(other):
            task.set_upstream(self)
        return self

    def set_upstream(self, task: Task) -> None:
        if task.flow is not self.flow:
            raise FlowDefinitionError(
                f"task '{self.task_id}' of flow '{self.flow.flow_id}' cannot depend on task "
                f"'{task.task_id}' of another flow, flow '{task.flow.flow_id}'; "
                "use Flow(wait_for=...) for dependencies between flows"
            )
        if task.task_id not in self.upstream_ids:
            self.upstream_ids.append(task.task_id)

    def map(self, over: Task | str, *, arg: str = DEFAULT_ARG) -> Task:
        """Run this task once per item of the list `over` returns (Airflow's
        `.expand(arg=over)`): instances `task[0]`, `task[1]`, ... each get their item as the
        keyword argument `arg` (Python tasks) and as `{{ item }}` in templates, with
        `{{ map_index }}`. `over` becomes an upstream of this task."""
        over_id = over.task_id if isinstance(over, Task) else over
        if isinstance(over, Task) and over.flow is not self.flow:
            raise FlowDefinitionError(
                f"task '{self.task_id}' cannot map over task '{over_id}' of another flow, "
                f"flow '{over.flow.flow_id}'"
            )
        self.map_over = _check_id("task", over_id)
        self.map_arg = arg if isinstance(arg, str) and arg.isidentifier() else DEFAULT_ARG
        if arg != self.map_arg:
            self.bad_options.append(f"map arg must be a Python name, got {arg!r}")
        if over_id not in self.upstream_ids:
            self.upstream_ids.append(over_id)
        return self

    def op_spec(self) -> dict[str, Any]:
        """The operator's own arguments, JSON-able. Subclasses extend it."""
        return {}

    def resolved(self, flow_defaults: Mapping[str, Any], problems: list[str]) -> dict[str, Any]:
        """Task settings after task > flow defaults > built-in defaults; each bad one is added
        to `problems`."""
        merged = dict(TASK_DEFAULTS)
        merged.update({k: v for k, v in flow_defaults.items() if v is not None})
        merged.update({k: v for k, v in self._own.items() if v is not None})
        retries = merged["retries"]
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            problems.append("retries must be a whole number >= 0")
        rule = merged["trigger_rule"]
        if rule not in {r.value for r in TriggerRule}:
            known = ", ".join(r.value for r in TriggerRule)
            problems.append(f"unknown trigger_rule {rule!r} (known: {known})")
        priority = merged["priority"]
        if not isinstance(priority, int) or isinstance(priority, bool):
            problems.append("priority must be a whole number")
        pool = _checked(problems, lambda: _check_id("pool", merged["pool"]))
        queue = merged["queue"]
        if queue is not None:
            queue = _checked(problems, lambda: _check_id("queue", merged["queue"]))
        durations: dict[str, float | None] = {}
        for key in ("retry_delay", "max_retry_delay", "timeout"):
            if merged[key] is not None:
                durations[key] = _checked(problems, partial(parse_duration, merged[key], key))
        past = {}
        for key in ("depends_on_past", "wait_for_downstream"):
            if not isinstance(merged[key], bool):
                problems.append(f"{key} must be True or False, got {merged[key]!r}")
            elif merged[key]:  # kept out of the spec when off: specs stored before stay equal
                past[key] = True
        if past.get("wait_for_downstream"):  # as in Airflow: it implies depends_on_past
            past["depends_on_past"] = True
        return {
            "retries": retries,
            "retry_delay_s": durations["retry_delay"],
            "retry_exponential_backoff": bool(merged["retry_exponential_backoff"]),
            "max_retry_delay_s": durations["max_retry_delay"],
            "timeout_s": durations.get("timeout"),
            "pool": pool,
            "priority": priority,
            "trigger_rule": rule,
            **past,
            # only when set: specs of flows without queues stay as they were
            **({"queue": queue} if queue is not None else {}),
        }

    def spec(self, flow_defaults: Mapping[str, Any]) -> dict[str, Any]:
        """The task's JSON-able description; a FlowDefinitionError names every bad option
        (its settings, alerts and operator arguments), not only the first."""
        problems = list(self.bad_options)
        settings = self.resolved(flow_defaults, problems)
        alerts = self.alert_spec(flow_defaults, problems)
        deadline_s = _checked(problems, lambda: _deadline(self.deadline, self.flow.schedule))
        if problems:
            where = f"task '{self.task_id}'" + (f" (line {self.line})" if self.line else "")
            raise FlowDefinitionError(f"{where}: {'; '.join(problems)}")
        return {
            "task_id": self.task_id,
            "kind": self.kind,
            "upstream": list(self.upstream_ids),
            "params": self.params,
            **settings,
            "op": self.op_spec(),
            **alerts,
            **({"deadline_s": deadline_s} if deadline_s is not None else {}),
            # only when mapped: specs of other tasks stay as they were
            **({"map_over": self.map_over, "map_arg": self.map_arg} if self.map_over else {}),
        }

    def alert(self, key: str) -> Any:
        """A callback or email_on_failure: the task's own, else its flow's."""
        own = self._alerts.get(key)
        return own if own is not None else self.flow.defaults.get(key)

    def alert_spec(self, flow_defaults: Mapping[str, Any], problems: list[str]) -> dict[str, Any]:
        """{"callbacks": {event: name}, "email_on_failure": [...]}, keys only when set; each
        bad one is added to `problems`."""
        merged = {
            key: own if own is not None else flow_defaults.get(key)
            for key, own in self._alerts.items()
        }
        return alert_spec(merged, problems)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.task_id}>"


def alert_spec(alerts: Mapping[str, Any], problems: list[str]) -> dict[str, Any]:
    """Callbacks by name and failure mail addresses, as stored: {"callbacks": {event: name},
    "email_on_failure": [...]}, keys only when set; each bad one is added to `problems`."""
    spec: dict[str, Any] = {}
    callbacks = {}
    for event in CALLBACK_EVENTS:
        fn = alerts.get(event)
        if fn is None:
            continue
        if not callable(fn):
            problems.append(f"{event} must be a function, got {fn!r}")
            continue
        callbacks[event] = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', fn)}"
    if callbacks:
        spec["callbacks"] = callbacks
    emails = alerts.get("email_on_failure")
    if emails:
        addresses = [emails] if isinstance(emails, str) else list(emails)
        for address in addresses:
            if not isinstance(address, str) or "@" not in address:
                problems.append(f"email_on_failure needs e-mail addresses, got {address!r}")
        spec["email_on_failure"] = addresses
    return spec


_PACKAGE_DIR = __file__.rsplit("/", 1)[0] + "/"


def _flow_file_line() -> int | None:
    """The line of the flow file that is creating a task: the first caller outside cronflow
    (an operator's constructor is inside it)."""
    frame: FrameType | None = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back
    return frame.f_lineno if frame is not None else None


def _deadline(value: float | str | timedelta | None, schedule: Schedule | None) -> float | None:
    """A deadline in seconds after each fire time; it needs a schedule to count from."""
    if value is None:
        return None
    seconds = parse_duration(value, "deadline")
    if seconds <= 0:
        raise FlowDefinitionError(f"deadline must be longer than 0, got {value!r}")
    if schedule is None:
        raise FlowDefinitionError(
            "deadline counts from each fire time of the schedule, and the flow has none"
        )
    return seconds


def _checked(problems: list[str], check: Callable[[], Any]) -> Any:
    """check()'s value; its error goes to `problems` (and the value is None)."""
    try:
        return check()
    except CronflowError as exc:
        problems.append(str(exc))
        return None


_UNMAPPABLE_KINDS = ("branch", "short_circuit")  # their decision is one task's XCom


def _mapping_problems(tasks: Mapping[str, dict[str, Any]]) -> list[str]:
    """What is wrong with the flow's mapped tasks: a map over an unknown or mapped task,
    a kind or setting that mapping does not support."""
    problems = []
    for task_id, task in tasks.items():
        over = task.get("map_over")
        if over is None:
            continue
        where = f"task '{task_id}' maps over"
        if over not in tasks:
            problems.append(f"{where} unknown task '{over}' (known: {', '.join(tasks)})")
        elif tasks[over].get("map_over"):
            problems.append(f"{where} '{over}', itself mapped: map over a task that returns a list")
        if task["kind"] in _UNMAPPABLE_KINDS:
            problems.append(f"task '{task_id}': a {task['kind']} task cannot be mapped")
        if task.get("depends_on_past"):
            problems.append(f"task '{task_id}': a mapped task cannot use depends_on_past")
    return problems


def _as_list(value: Task | Iterable[Task]) -> list[Task]:
    items = list(value) if isinstance(value, Iterable) else [value]
    for item in items:
        if not isinstance(item, Task):
            raise FlowDefinitionError(f"cannot make a dependency on {item!r}: not a task")
    return items


class Flow:
    """A DAG of tasks with a schedule. Use as a context manager to add tasks to it."""

    def __init__(
        self,
        flow_id: str,
        *,
        schedule: str | None = None,
        timezone: str = "UTC",
        start_date: str | date | datetime | None = None,
        end_date: str | date | datetime | None = None,
        catchup: bool = False,
        max_active_runs: int = 1,
        tags: Iterable[str] = (),
        doc: str = "",
        params: Mapping[str, Any] | None = None,
        defaults: Mapping[str, Any] | None = None,
        wait_for: Iterable[str | FlowDependency] = (),
        wait_timeout: float | str | timedelta = deps.DEFAULT_WAIT_TIMEOUT_S,
        wait_soft_fail: bool = False,
        on_failure: Callable[..., Any] | None = None,
        on_retry: Callable[..., Any] | None = None,
        on_success: Callable[..., Any] | None = None,
        email_on_failure: str | Iterable[str] | None = None,
        deadline: float | str | timedelta | None = None,
        queue: str | None = None,
    ) -> None:
        self.flow_id = _check_id("flow", flow_id)
        where = f"flow '{flow_id}'"
        if schedule is not None and not isinstance(schedule, str):
            raise FlowDefinitionError(f"{where}: schedule must be text or None, not {schedule!r}")
        if schedule == "":
            raise FlowDefinitionError(
                f"{where}: schedule is empty; write schedule=None for a flow run only by hand"
            )
        try:
            self.tz = parse_timezone(timezone)
            # "@reboot" is no time schedule: a manual-only flow the daemon runs at each start
            self.run_at_daemon_start = schedule == AT_DAEMON_START
            timed = schedule if not self.run_at_daemon_start else None
            self.schedule = Schedule.parse(timed, timezone) if timed else None
            self.start_at = self._instant(start_date, "start_date")
            self.end_at = self._instant(end_date, "end_date")
            self.deadline_s = _deadline(deadline, self.schedule)
        except CronflowError as exc:
            raise FlowDefinitionError(f"{where}: {exc}") from None
        if self.start_at and self.end_at and self.end_at < self.start_at:
            raise FlowDefinitionError(f"{where}: end_date is before start_date")
        if not isinstance(max_active_runs, int) or max_active_runs < 1:
            raise FlowDefinitionError(f"{where}: max_active_runs must be a whole number >= 1")
        self.timezone = timezone
        self.catchup = bool(catchup)
        self.max_active_runs = max_active_runs
        self.tags = [str(t) for t in tags]
        self.doc = doc or ""
        self.params = dict(params or {})
        self.defaults = dict(defaults or {})
        if queue is not None:  # Flow(queue=...): the default queue of its tasks
            self.defaults.setdefault("queue", queue)
        alerts = {
            "on_failure": on_failure,
            "on_retry": on_retry,
            "on_success": on_success,
            "email_on_failure": email_on_failure,
        }
        self.defaults.update({k: v for k, v in alerts.items() if v is not None})
        unknown = sorted(set(self.defaults) - set(TASK_DEFAULTS) - set(ALERT_KEYS))
        if unknown:
            raise FlowDefinitionError(f"{where}: unknown key in defaults: '{unknown[0]}'")
        self.wait_for = [
            d if isinstance(d, FlowDependency) else FlowDependency(d) for d in wait_for
        ]
        for dep in self.wait_for:
            _check_id("flow", dep.flow_id)
        try:
            timeout_s = parse_duration(wait_timeout, "wait_timeout")
            self.waits = [d.spec(timeout_s, wait_soft_fail) for d in self.wait_for]
        except CronflowError as exc:
            raise FlowDefinitionError(f"{where}: {exc}") from None
        self.tasks: dict[str, Task] = {}
        self._tokens: list[Any] = []
        collected = _collector.get()
        if collected is not None:
            collected.append(self)

    def _instant(self, value: str | date | datetime | None, what: str) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = parse_date_or_datetime(value, self.tz)
        if isinstance(value, datetime):
            return to_utc(value if value.tzinfo else value.replace(tzinfo=self.tz))
        return start_of_day(value, self.tz)

    def __enter__(self) -> Flow:
        self._tokens.append(_current_flow.set(self))
        return self

    def __exit__(self, *exc: object) -> None:
        _current_flow.reset(self._tokens.pop())

    def add(self, task: Task) -> None:
        if task.task_id in self.tasks:
            raise FlowDefinitionError(f"flow '{self.flow_id}': duplicate task id '{task.task_id}'")
        self.tasks[task.task_id] = task

    def spec(self) -> dict[str, Any]:
        """Validate the whole flow and return its JSON-able description."""
        where = f"flow '{self.flow_id}'"
        tasks, problems = [], []
        for task in self.tasks.values():  # every bad task is named, not only the first
            try:
                tasks.append(task.spec(self.defaults))
            except CronflowError as exc:
                problems.append(str(exc))
        if problems:
            raise FlowDefinitionError(f"{where}: {'; '.join(problems)}")
        problems = _mapping_problems({t["task_id"]: t for t in tasks})
        if problems:
            raise FlowDefinitionError(f"{where}: {'; '.join(problems)}")
        try:
            deps.topological_order({t["task_id"]: t["upstream"] for t in tasks})
        except FlowDefinitionError as exc:
            raise FlowDefinitionError(f"{where}: {exc}") from None
        return {
            "flow_id": self.flow_id,
            "schedule": self.schedule.expression if self.schedule else None,
            "timezone": self.timezone,
            "start_at": iso(self.start_at),
            "end_at": iso(self.end_at),
            "catchup": self.catchup,
            "max_active_runs": self.max_active_runs,
            "tags": self.tags,
            "doc": self.doc,
            "params": self.params,
            "wait_for": self.waits,
            "tasks": tasks,
            **({"run_at_daemon_start": True} if self.run_at_daemon_start else {}),
            **self._deadline_spec(),
        }

    def _deadline_spec(self) -> dict[str, Any]:
        """The run's deadline and the flow's own failure alerts (they alert for a missed one)."""
        if self.deadline_s is None:
            return {}
        problems: list[str] = []
        alerts = alert_spec(self.defaults, problems)
        if problems:
            raise FlowDefinitionError(f"flow '{self.flow_id}': {'; '.join(problems)}")
        return {"deadline_s": self.deadline_s, "alerts": alerts}

    def __repr__(self) -> str:
        return f"<Flow {self.flow_id}: {len(self.tasks)} tasks>"

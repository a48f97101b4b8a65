"""What the CLI does to flows and runs, as a library: trigger, find runs (pause: Store.set_paused).

Every function validates its input first and raises a CronflowError naming what is wrong, so
nothing is written when the input is bad; each change is one store transaction.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime, timedelta
from typing import Any

from cronflow.audit import Actor
from cronflow.catalog import FlowSpec
from cronflow.errors import InvalidInputError, NotFoundError
from cronflow.processtext import check_text
from cronflow.states import RunType
from cronflow.store import RunExistsError, Store
from cronflow.timeparse import iso, parse_date_or_datetime, start_of_day, to_utc
from cronflow.timetable import data_interval

MAX_CONF_DEPTH = 100  # far beyond any real conf; deeper JSON overflows the stack somewhere


def parse_conf(text: str | None) -> dict[str, Any]:
    """The JSON object of --conf (none: {}). Refused, with one line: text that is not a JSON
    object; NaN, Infinity and numbers too large for a float (not JSON); nesting deeper than
    MAX_CONF_DEPTH; and strings no task could take (lone surrogates, NUL: processtext)."""
    if text is None:
        return {}
    if not text.strip():
        raise InvalidInputError(
            '--conf is empty: give a JSON object, e.g. \'{"station": "north"}\', or leave it out'
        )
    try:
        conf = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise InvalidInputError(_too_deep()) from None
    except ValueError as exc:  # JSONDecodeError, a refused constant, a number too long
        raise InvalidInputError(f"--conf is not valid JSON: {exc}") from None
    if not isinstance(conf, dict):
        raise InvalidInputError('--conf must be a JSON object, e.g. \'{"station": "north"}\'')
    _check_conf_strings(conf)
    return conf


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value (write a number, a string or null)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is too large for a number")
    return value


def _too_deep() -> str:
    return f"--conf is nested more than {MAX_CONF_DEPTH} levels deep"


def _check_conf_strings(conf: dict[str, Any]) -> None:
    """Every key and string of the conf, walked without recursion; depth bounded."""
    pending: list[tuple[Any, str, int]] = [(conf, "--conf", 1)]
    while pending:
        value, where, depth = pending.pop()
        if isinstance(value, dict | list) and depth > MAX_CONF_DEPTH:
            raise InvalidInputError(_too_deep())
        if isinstance(value, str):
            check_text(value, where)
        elif isinstance(value, dict):
            for key, item in value.items():
                check_text(key, f"a key of {where}")
                pending.append((item, f"{where}[{json.dumps(key)}]", depth + 1))
        elif isinstance(value, list):
            pending.extend((item, f"{where}[{i}]", depth + 1) for i, item in enumerate(value))


def logical_date_for_trigger(flow: FlowSpec, text: str | None, now: datetime) -> datetime:
    """The logical date of a manual run: now, a date-time, or the flow's fire time on a day."""
    if text is None:
        return now.replace(microsecond=0)
    value = parse_date_or_datetime(text, flow.tz)
    if isinstance(value, datetime):
        return to_utc(value)
    fires = flow.schedule.fires_on(value) if flow.schedule else []
    if len(fires) > 1:
        shown = ", ".join(f.astimezone(flow.tz).isoformat() for f in fires[:5])
        more = f" and {len(fires) - 5} more" if len(fires) > 5 else ""
        raise InvalidInputError(
            f"flow '{flow.flow_id}' fires {len(fires)} times on {value}: {shown}{more}; "
            "give a date-time"
        )
    return fires[0] if fires else start_of_day(value, flow.tz)


def trigger(
    store: Store,
    flow: FlowSpec,
    logical_at: datetime,
    conf: dict[str, Any] | None = None,
    run_type: RunType = RunType.MANUAL,
    triggered_by: dict[str, Any] | None = None,
    actor: Actor | None = None,
) -> int:
    """Create a run; a manual one is recorded in the audit trail with it (`actor`: who, by
    default the Unix user). A flow's TriggerFlow runs name their origin instead, and a backfill
    records itself."""
    interval = data_interval(flow.schedule, logical_at)
    tasks = flow.raw["tasks"]
    with store.atomic():
        run_id = store.create_run(
            flow.flow_id, logical_at, run_type, interval, tasks, conf, triggered_by=triggered_by
        )
        if run_type is RunType.MANUAL:
            details = {
                "run_id": run_id,
                "logical_date": iso(logical_at),
                "conf_keys": sorted(conf or {}),
            }
            summary = f"manual run {run_id} for {local_time(flow, logical_at)}"
            store.record_audit("trigger", flow.flow_id, summary, details, actor)
    return run_id


def trigger_manual(
    store: Store,
    flow: FlowSpec,
    date_text: str | None,
    now: datetime,
    conf: dict[str, Any] | None = None,
    actor: Actor | None = None,
) -> tuple[int, datetime]:
    """`cronflow trigger` (and the web's trigger): a manual run for a date, or for now at the
    second. A second manual run in the same second (a script's loop) takes now to the
    microsecond instead of failing; a date given twice is refused (use replay)."""
    logical_at = logical_date_for_trigger(flow, date_text, now)
    try:
        return trigger(store, flow, logical_at, conf, actor=actor), logical_at
    except RunExistsError:
        if date_text is not None or now == logical_at:
            raise
    return trigger(store, flow, now, conf, actor=actor), now


def local_time(flow: FlowSpec, at: datetime | str) -> str:
    """'2026-12-03 00:30 CET': a moment in the flow's timezone, for audit entries."""
    moment = datetime.fromisoformat(at) if isinstance(at, str) else at
    return moment.astimezone(flow.tz).strftime("%Y-%m-%d %H:%M %Z")


def _day_bounds(flow: FlowSpec, day: date) -> tuple[datetime, datetime]:
    return start_of_day(day, flow.tz), start_of_day(day + timedelta(days=1), flow.tz)


def find_runs(store: Store, flow: FlowSpec, text: str | None) -> list[dict[str, Any]]:
    """Runs matching --date: every run of a local day, the run at a date-time, or the latest."""
    if text is None:
        latest = store.recent_runs(flow.flow_id, 1)
        if not latest:
            raise NotFoundError(f"flow '{flow.flow_id}' has no runs yet")
        return latest
    value = parse_date_or_datetime(text, flow.tz)
    if isinstance(value, datetime):
        start = to_utc(value)
        runs = store.runs_between(flow.flow_id, start, start + timedelta(microseconds=1))
    else:
        runs = store.runs_between(flow.flow_id, *_day_bounds(flow, value))
    if not runs:
        recent = ", ".join(
            _local(flow, r["logical_date"]) for r in store.recent_runs(flow.flow_id, 3)
        )
        raise NotFoundError(
            f"flow '{flow.flow_id}' has no run on {text}"
            + (f" (latest: {recent})" if recent else " (it has no runs yet)")
        )
    return runs


def find_one_run(store: Store, flow: FlowSpec, text: str | None) -> dict[str, Any]:
    runs = find_runs(store, flow, text)
    if len(runs) > 1:
        shown = ", ".join(_local(flow, r["logical_date"]) for r in runs[:6])
        raise InvalidInputError(
            f"{len(runs)} runs of flow '{flow.flow_id}' match {text}: {shown}; give a date-time"
        )
    return runs[0]


def _local(flow: FlowSpec, logical_date: str) -> str:
    return datetime.fromisoformat(logical_date).astimezone(flow.tz).isoformat()


def utc_now() -> datetime:
    return datetime.now(UTC)


__all__ = [
    "find_one_run",
    "find_runs",
    "iso",
    "logical_date_for_trigger",
    "parse_conf",
    "trigger",
    "trigger_manual",
]

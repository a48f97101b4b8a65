"""Between flows: start another flow's run (TriggerFlow), wait for one (FlowSensor).

    TriggerFlow("publish", "station_publish", conf={"source": "{{ flow_id }}"})
    FlowSensor("wait_ingest", "ingest", task="load", date="{{ prev_ds }}", mode="reschedule")

`date` is a template giving a day (`YYYY-MM-DD`: the target flow's fire time that day, or its
local midnight for a manual-only flow) or an ISO date-time (that exact logical date).

- TriggerFlow's default date is `{{ ts }}`, the triggering run's logical date-time: an hourly
  flow triggers one run per hour, each with its own logical date. `date="{{ ds }}"` gives the
  target's fire time that day instead (one run per day, found again by later triggers).
- TriggerFlow creates the target's run for that date, or finds the one that already exists
  (so a retry never starts a second run), and returns {"flow_id", "run_id", "logical_date"}.
  The run it creates has run type `triggered` and names the run and task that created it.
  With `wait=True` it is a sensor: it waits until that run has ended, failing if the run failed
  (poke_interval, timeout, mode and soft_fail as for every sensor). The daemon starts the new
  run at its next tick (within two seconds). Waiting in poke mode holds a slot: with little
  parallelism prefer mode="reschedule".
- FlowSensor waits for the target flow's whole day, as `wait_for` does: every fire time of
  that day (by its schedule and dates) has a run and every run of the day succeeded (or, with
  `task=`, that task succeeded in each); a flow without schedule needs at least one run. A day
  on which the target does not fire has nothing to wait for. A date-time waits for that run.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from cronflow.catalog import FlowSpec
from cronflow.errors import CronflowError
from cronflow.ops.sensors import Sensor
from cronflow.states import RunState, RunType, TaskState
from cronflow.store import RunExistsError, Store
from cronflow.templates import render
from cronflow.timeparse import iso, parse_date_or_datetime, start_of_day, to_utc
from cronflow.waits import expected_fires

TINY = timedelta(microseconds=1)


class TriggeredRunFailedError(CronflowError):
    """The run a TriggerFlow waited for ended in failure."""


def target_flow(store: Store, flow_id: str) -> FlowSpec:
    """The flow as the daemon last loaded it (NotFoundError naming the known flows)."""
    row = store.flow(flow_id)
    if row["error"]:
        raise CronflowError(f"flow '{flow_id}' is broken: {row['error']}")
    return FlowSpec.from_spec(json.loads(row["spec"]), row["path"])


def runs_for(store: Store, flow: FlowSpec, text: str) -> tuple[str, list[dict[str, Any]]]:
    """(what, runs) for a date text: every run of that local day, or the run at a date-time."""
    value = parse_date_or_datetime(text, flow.tz)
    if isinstance(value, datetime):
        start = to_utc(value)
        shown = value.astimezone(flow.tz).isoformat()  # for people: the flow's time
        return shown, store.runs_between(flow.flow_id, start, start + TINY)
    start = start_of_day(value, flow.tz)
    end = start_of_day(value + timedelta(days=1), flow.tz)
    return value.isoformat(), store.runs_between(flow.flow_id, start, end)


def missing_fires(
    flow: FlowSpec, text: str, runs: list[dict[str, Any]]
) -> tuple[list[datetime], str | None]:
    """For a day: its fire times (by the flow's schedule and dates) that have no run, and the
    note when it has none at all; a whole day is waited for, as `wait_for` does."""
    value = parse_date_or_datetime(text, flow.tz)
    if isinstance(value, datetime):
        return [], None
    fires, note = expected_fires(flow, value)
    have = {r["logical_date"] for r in runs}
    return [f for f in fires if iso(f) not in have], note


class TriggerFlow(Sensor):
    """Start (or find) another flow's run for a date; optionally wait for its end."""

    kind = "trigger_flow"

    def __init__(
        self,
        task_id: str,
        flow_id: str,
        *,
        date: str = "{{ ts }}",
        conf: Mapping[str, Any] | None = None,
        wait: bool = False,
        **sensor_args: Any,
    ) -> None:
        sensor_args.setdefault("poke_interval", 10.0)
        super().__init__(task_id, **sensor_args)
        self.target_id, self.date, self.wait = flow_id, date, wait
        self.conf = dict(conf or {})

    def sensor_spec(self) -> dict[str, Any]:
        return {"flow_id": self.target_id, "date": self.date, "wait": self.wait}

    def poke(self, context: Mapping[str, Any]) -> Any:
        from cronflow import control

        store: Store = context["store"]
        flow = target_flow(store, render(self.target_id, context))
        text = render(self.date, context)
        logical_at = control.logical_date_for_trigger(flow, text, datetime.now(UTC))
        conf = {k: render(v, context) if isinstance(v, str) else v for k, v in self.conf.items()}
        by = {k: context[k] for k in ("flow_id", "run_id", "task_id")}
        by["logical_date"] = iso(context["logical_date"])  # an aware datetime in the context
        try:
            run_id = control.trigger(store, flow, logical_at, conf, RunType.TRIGGERED, by)
        except RunExistsError:
            run = store.runs_between(flow.flow_id, logical_at, logical_at + TINY)[0]
        else:
            run = store.run(run_id)
        result = {
            "flow_id": flow.flow_id,
            "run_id": run["run_id"],
            "logical_date": run["logical_date"],
        }
        self.status = (
            f"run {run['run_id']} of {flow.flow_id} for "
            f"{datetime.fromisoformat(run['logical_date']).astimezone(flow.tz).isoformat()} "
            f"is {run['state']}"
        )
        if not self.wait:
            return result
        if run["state"] == RunState.FAILED:
            raise TriggeredRunFailedError(self.status)
        return result if run["state"] == RunState.SUCCESS else None


class FlowSensor(Sensor):
    """Wait until another flow's runs of a day (or one task in them) have succeeded."""

    kind = "flow_sensor"

    def __init__(
        self,
        task_id: str,
        flow_id: str,
        *,
        task: str | None = None,
        date: str = "{{ ds }}",
        **sensor_args: Any,
    ) -> None:
        super().__init__(task_id, **sensor_args)
        self.target_id, self.target_task, self.date = flow_id, task, date

    def sensor_spec(self) -> dict[str, Any]:
        return {"flow_id": self.target_id, "task": self.target_task, "date": self.date}

    def poke(self, context: Mapping[str, Any]) -> bool:
        store: Store = context["store"]
        flow = target_flow(store, render(self.target_id, context))
        text = render(self.date, context)
        what, runs = runs_for(store, flow, text)
        missing, note = missing_fires(flow, text, runs)
        if missing:
            first = missing[0].astimezone(flow.tz).strftime("%H:%M")
            self.status = (
                f"flow '{flow.flow_id}' has no run yet for {len(missing)} of its fire times "
                f"on {what} (the first at {first})"
            )
            return False
        if not runs:
            if note:  # a day it does not fire, or outside its dates: as wait_for decides
                self.status = note
                return True
            self.status = f"flow '{flow.flow_id}' has no run for {what} yet"
            return False
        if self.target_task is None:
            states = [r["state"] for r in runs]
            self.status = f"runs of '{flow.flow_id}' for {what}: {', '.join(states)}"
            return all(s == RunState.SUCCESS for s in states)
        flow.task(self.target_task)
        tis = [store.ti(r["run_id"], self.target_task) for r in runs]
        states = [ti["state"] if ti else TaskState.NONE.value for ti in tis]
        self.status = f"task {flow.flow_id}.{self.target_task} for {what}: {', '.join(states)}"
        return all(s == TaskState.SUCCESS for s in states)

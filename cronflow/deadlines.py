"""Deadlines, "it should have run by now" (Airflow's SLA misses and deadline alerts).

`Flow(deadline="2h")`: the run of each fire time of the schedule must have succeeded 2 hours
after that fire time; `Task(deadline="30m")`: that task must have succeeded (or been skipped).
Otherwise the flow's failure alerts (the task's, for a task's deadline: on_failure callbacks and
email_on_failure, see cronflow.callbacks) fire once, with what holds the run back in words:

    missed deadline: meteo_daily 2026-12-03 not done 2h after 00:30 (waiting for meteo_ingest ...)

A fire time without a run misses its deadline too: the daemon was down, max_active_runs held it
back, its waits hold it: that is the case crontab never tells about. So deadlines follow the
schedule, not the runs: each fire time is checked once, at its deadline instant, whether a run
exists or not. The daemon's scheduler asks at each tick (`check(now)`) and wakes exactly at the
next deadline instant (`next_check_at`); nothing polls.

Once, across restarts: per (flow, task or '' for the run) the store keeps the fire time up to
which deadlines were checked (deadline_checks), moved in the same transaction that records the
misses found (deadline_misses). A miss is marked alerted once its alert process started; misses
recorded but not yet alerted (a crash in between) are alerted at the next start. Fire times that
passed while the daemon was down are checked when it starts again.

Bounded: a deadline seen for the first time starts checking at `now - deadline` (never from the
start date); a check looks at MAX_FIRES_PER_CHECK fire times at most (after a long stop, the
others are counted in the alert as not checked one by one). Paused flows are not checked: their
fire times are passed over. Manual, triggered and backfill runs outside the schedule's fire
times have no deadline.

Alerts run through the scheduler's CallbackRunner, in a child process, never in the daemon.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import islice
from typing import Any

from cronflow.callbacks import CallbackRunner, DeadlineAlert
from cronflow.catalog import Catalog, FlowSpec
from cronflow.config import Settings
from cronflow.mapping import base_id, summary_state
from cronflow.reasons import Explainer
from cronflow.states import RunState, TaskState
from cronflow.store import Store
from cronflow.timeparse import from_iso, iso
from cronflow.waits import span_text

log = logging.getLogger("cronflow.deadlines")

MAX_FIRES_PER_CHECK = 200
TINY = timedelta(microseconds=1)
_TASK_DONE = (TaskState.SUCCESS.value, TaskState.SKIPPED.value)

Key = tuple[str, str]  # (flow id, task id or '' for the whole run)


@dataclass
class _Target:
    """One deadline: a flow's run, or one of its tasks."""

    key: Key
    deadline_s: float
    check_at: datetime | None  # the deadline instant of the next fire time to check


class DeadlineChecker:
    """The daemon's side: checks deadlines as they come and starts the alerts of misses."""

    def __init__(self, store: Store, settings: Settings, callbacks: CallbackRunner) -> None:
        self.store = store
        self.settings = settings
        self.callbacks = callbacks
        self._cursors: dict[Key, datetime] | None = None  # loaded at the first check
        self._targets: dict[Key, _Target] = {}
        self._catalog: Catalog | None = None
        self._since: datetime | None = None  # the first check of this daemon
        self._unchecked: dict[Key, str] = {}  # fire times passed over after a long stop
        self._to_alert = True  # a crash may have left misses without their alert

    @property
    def next_check_at(self) -> datetime | None:
        """The next deadline instant of any flow (None: no deadline to check)."""
        return min((t.check_at for t in self._targets.values() if t.check_at), default=None)

    def check(self, now: datetime, catalog: Catalog) -> datetime | None:
        """Check every fire time whose deadline has come, record and alert the misses; return
        the next deadline instant."""
        if self._cursors is None:
            self._since = now
            self._cursors = _parsed(self.store.deadline_cursors())
        if catalog is not self._catalog:
            self._load_targets(catalog, now)
        due = [t for t in self._targets.values() if t.check_at is not None and t.check_at <= now]
        if due:
            paused = {r["flow_id"] for r in self.store.flow_states() if r["paused"]}
            for target in due:
                self._check(target, catalog, paused, now)
        if self._to_alert:
            self._send_alerts(catalog, now)
        return self.next_check_at

    # --- what to check, and when -----------------------------------------------------------
    def _load_targets(self, catalog: Catalog, now: datetime) -> None:
        """The deadlines of the flows loaded now; one seen for the first time starts now."""
        assert self._cursors is not None
        self._catalog = catalog
        targets, new = {}, {}
        for flow in catalog.flows.values():
            for task_id, deadline_s in flow.deadlines.items():
                key = (flow.flow_id, task_id)
                if key not in self._cursors:
                    new[key] = self._cursors[key] = now - timedelta(seconds=deadline_s)
                check_at = _next_check(flow, self._cursors[key], deadline_s)
                targets[key] = _Target(key, deadline_s, check_at)
        if new:  # kept at once: fire times passing while the daemon is down get checked
            self.store.record_deadline_checks(new)
        # A deadline taken off a loaded flow starts afresh if it comes back (a flow that is
        # broken or gone keeps its place: its fire times meanwhile are checked when it is back).
        dropped = [k for k in self._cursors if k[0] in catalog.flows and k not in targets]
        if dropped:
            self.store.forget_deadline_checks(dropped)
            for key in dropped:
                del self._cursors[key]
        self._targets = targets

    def _check(self, target: _Target, catalog: Catalog, paused: set[str], now: datetime) -> None:
        """Check the fire times whose deadline passed since the last check of this target."""
        assert self._cursors is not None
        flow_id, task_id = target.key
        flow = catalog.flows[flow_id]
        limit = now - timedelta(seconds=target.deadline_s)
        misses: list[dict[str, Any]] = []
        if flow_id not in paused:
            fires = self._fires(flow, self._cursors[target.key], limit, target.key)
            misses = self._misses(flow, task_id, target.deadline_s, fires, catalog, now)
        self.store.record_deadline_checks({target.key: limit}, misses)
        self._cursors[target.key] = limit
        target.check_at = _next_check(flow, limit, target.deadline_s)
        for miss in misses:
            log.warning(
                "event=deadline_missed flow=%s task=%s fire_at=%s message=%r",
                flow_id,
                task_id or "-",
                miss["fire_at"],
                miss["message"],
            )
        self._to_alert = self._to_alert or bool(misses)

    def _fires(self, flow: FlowSpec, cursor: datetime, limit: datetime, key: Key) -> list[datetime]:
        """The fire times in (cursor, limit], within the flow's dates; at most
        MAX_FIRES_PER_CHECK, the others noted as not checked one by one."""
        assert flow.schedule is not None
        after = max(cursor, flow.start_at - TINY) if flow.start_at else cursor
        until = min(limit, flow.end_at) if flow.end_at else limit
        if until <= after:
            return []
        fires = list(islice(flow.schedule.fires(after, until), MAX_FIRES_PER_CHECK + 1))
        if len(fires) > MAX_FIRES_PER_CHECK:
            self._unchecked[key] = iso(until) or ""
            log.warning(
                "event=deadline_checks_skipped flow=%s task=%s from=%s until=%s",
                key[0],
                key[1] or "-",
                iso(fires[-1]),
                iso(until),
            )
        return fires[:MAX_FIRES_PER_CHECK]

    def _misses(
        self,
        flow: FlowSpec,
        task_id: str,
        deadline_s: float,
        fires: list[datetime],
        catalog: Catalog,
        now: datetime,
    ) -> list[dict[str, Any]]:
        """The fire times not done by their deadline, each with what holds it back."""
        if not fires:
            return []
        runs = {
            r["logical_date"]: r
            for r in self.store.runs_between(flow.flow_id, fires[0], fires[-1] + TINY)
        }
        task_states: dict[int, str] = {}
        if task_id:
            tis = self.store.tis_of_runs([r["run_id"] for r in runs.values()])
            by_run: dict[int, list[str]] = {}  # a mapped task: the states of its instances
            for ti in tis:
                if base_id(ti["task_id"]) == task_id:
                    by_run.setdefault(ti["run_id"], []).append(ti["state"])
            task_states = {run_id: summary_state(states) for run_id, states in by_run.items()}
        explainer = Explainer(self.settings, self.store, catalog, flow, now, daemon_running=True)
        explainer.daemon_since = self._since
        misses = []
        for fire in fires:
            run = runs.get(iso(fire) or "")
            if run is not None and _done(run, task_states.get(run["run_id"]), task_id):
                continue
            try:
                holding = explainer.holding(fire, run, task_id or None)
            except Exception as exc:  # the miss is recorded and alerted all the same
                log.exception("event=deadline_reason_failed flow=%s", flow.flow_id)
                holding = f"what holds it back is unknown: {exc!r}"
            misses.append(
                {
                    "flow_id": flow.flow_id,
                    "task_id": task_id,
                    "fire_at": iso(fire),
                    "deadline_at": iso(fire + timedelta(seconds=deadline_s)),
                    "missed_at": iso(now),
                    "run_id": run["run_id"] if run else None,
                    "message": miss_message(flow, task_id, fire, deadline_s, holding),
                }
            )
        return misses

    # --- alerts ----------------------------------------------------------------------------
    def _send_alerts(self, catalog: Catalog, now: datetime) -> None:
        """One alert per flow and task for its misses not yet alerted: the oldest, and how many
        more came with it. Marked alerted once its process started (or when it has none)."""
        self._to_alert = False
        grouped: dict[Key, list[str]] = defaultdict(list)
        for row in self.store.unalerted_deadline_misses():
            grouped[(row["flow_id"], row["task_id"])].append(row["fire_at"])
        for (flow_id, task_id), fire_ats in grouped.items():
            flow = catalog.flows.get(flow_id)
            if flow is not None and _has_alerts(flow, task_id):
                alert = DeadlineAlert(
                    flow_id,
                    task_id,
                    fire_ats[0],
                    len(fire_ats) - 1,
                    self._unchecked.pop((flow_id, task_id), None),
                )
                self.callbacks.start_deadline(alert)
            self.store.set_deadline_alerted(flow_id, task_id, fire_ats, now)


def miss_message(
    flow: FlowSpec, task_id: str, fire: datetime, deadline_s: float, holding: str
) -> str:
    """'missed deadline: meteo_daily 2026-12-03 not done 2h after 00:30 (holding)'."""
    local = fire.astimezone(flow.tz)
    what = f"{flow.flow_id}.{task_id}" if task_id else flow.flow_id
    span = span_text(timedelta(seconds=deadline_s))
    return (
        f"missed deadline: {what} {local:%Y-%m-%d} not done {span} after {local:%H:%M} ({holding})"
    )


def _next_check(flow: FlowSpec, cursor: datetime, deadline_s: float) -> datetime | None:
    """The deadline instant of the first fire time after `cursor` (None: no more)."""
    assert flow.schedule is not None
    after = max(cursor, flow.start_at - TINY) if flow.start_at else cursor
    fire = flow.schedule.next_after(after)
    if fire is None or (flow.end_at and fire > flow.end_at):
        return None
    return fire + timedelta(seconds=deadline_s)


def _done(run: dict[str, Any], task_state: str | None, task_id: str) -> bool:
    if task_id:
        return task_state in _TASK_DONE
    return bool(run["state"] == RunState.SUCCESS.value)


def _has_alerts(flow: FlowSpec, task_id: str) -> bool:
    """Whether a miss has anything to alert: the task's failure alerts, or the flow's."""
    if task_id:
        task = flow.tasks.get(task_id)
        return task is not None and bool(task.email_on_failure or "on_failure" in task.callbacks)
    alerts = flow.raw.get("alerts", {})
    return bool(alerts.get("email_on_failure") or "on_failure" in alerts.get("callbacks", {}))


def _parsed(cursors: dict[Key, str]) -> dict[Key, datetime]:
    return {key: at for key, text in cursors.items() if (at := from_iso(text)) is not None}

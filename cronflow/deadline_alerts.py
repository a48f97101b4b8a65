"""The alert of a missed deadline, in the child process `python -m cronflow.callbacks
deadline_missed` (cronflow.deadlines starts it through the CallbackRunner, never in the daemon).

It sends the failure mail and calls the on_failure callback: the flow's own (`Flow(on_failure=,
email_on_failure=)`) for the deadline of its run, the task's (else the flow's) for a task's
deadline. The callback gets the context of the fire time (ds, ts, params, ...) with
`event="deadline_missed"`, `reason` the miss in words and `run_id` None when no run exists.
"""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from cronflow.catalog import FlowSpec
from cronflow.config import Settings
from cronflow.errors import CronflowError, NotFoundError
from cronflow.store import Store
from cronflow.timeparse import from_iso

log = logging.getLogger("cronflow.callbacks")

EVENT = "deadline_missed"


def run_deadline_alerts(home: Path, alert: Mapping[str, str]) -> int:
    """Mail and call back for one missed deadline (`alert`: flow_id, task_id, fire_at, more,
    unchecked_until); 1 if either failed."""
    from cronflow.config import load_settings

    settings = load_settings(home)
    store = Store(settings.db_path)
    flow_id, task_id = alert["flow_id"], alert["task_id"]
    miss = store.deadline_miss(flow_id, task_id, alert["fire_at"])
    if miss is None:
        raise NotFoundError(f"no missed deadline of {flow_id} at {alert['fire_at']}")
    row = store.flow(flow_id)
    flow = FlowSpec.from_spec(json.loads(row["spec"]), row["path"])
    if task_id:
        task = flow.task(task_id)
        emails, callback = task.email_on_failure, task.callbacks.get("on_failure")
    else:
        alerts = flow.raw.get("alerts", {})
        emails = alerts.get("email_on_failure", [])
        callback = alerts.get("callbacks", {}).get("on_failure")
    message = miss["message"] + _more(flow, alert)
    failures = 0
    if emails:
        try:
            _mail(settings, store, flow, miss, message, emails)
        except CronflowError as exc:
            log.error("failure mail not sent: %s", exc)
            failures += 1
    if callback:
        try:
            _call(store, settings, flow, miss, message)
            log.info("on_failure callback %s done", callback)
        except CronflowError as exc:
            log.error("on_failure callback %s failed: %s", callback, exc)
            failures += 1
        except Exception:
            log.error("on_failure callback %s raised:\n%s", callback, traceback.format_exc())
            failures += 1
    return 1 if failures else 0


def _more(flow: FlowSpec, alert: Mapping[str, str]) -> str:
    """'; and 3 more fire times missed' and, after a long stop, what was not checked."""
    text = ""
    more = int(alert.get("more") or 0)
    if more:
        text += f"; and {more} more fire time{'s' if more > 1 else ''} missed"
    unchecked = from_iso(alert.get("unchecked_until") or None)
    if unchecked is not None:
        text += (
            f"; fire times after those, up to {unchecked.astimezone(flow.tz):%Y-%m-%d %H:%M}, "
            "were not checked one by one (the daemon was stopped for long)"
        )
    return text


def _local(flow: FlowSpec, stamp: str) -> datetime:
    moment = from_iso(stamp)
    assert moment is not None
    return moment.astimezone(flow.tz)


def _call(
    store: Store, settings: Settings, flow: FlowSpec, miss: Mapping[str, Any], message: str
) -> None:
    from cronflow.loader import import_flows
    from cronflow.macros import date_context
    from cronflow.timetable import data_interval

    task_id = miss["task_id"]
    live = {f.flow_id: f for f in import_flows(Path(flow.path))}
    if flow.flow_id not in live:
        raise NotFoundError(f"{flow.path} no longer defines {flow.flow_id}")
    found = live[flow.flow_id]
    fn: Callable[..., Any] | None
    if task_id:
        fn = found.tasks[task_id].alert("on_failure") if task_id in found.tasks else None
    else:
        fn = found.defaults.get("on_failure")
    if fn is None:
        raise NotFoundError(f"{flow.path}: {flow.flow_id} no longer has on_failure")
    schedule = flow.schedule
    assert schedule is not None  # a deadline needs a schedule
    fire = from_iso(miss["fire_at"])
    assert fire is not None
    context: dict[str, Any] = date_context(
        fire,
        data_interval(schedule, fire),
        flow.tz,
        schedule.prev_before(fire),
        schedule.next_after(fire),
    )
    context.update(
        flow_id=flow.flow_id,
        task_id=task_id or None,
        run_id=miss["run_id"],
        params=dict(flow.raw["params"]),
        event=EVENT,
        state=EVENT,
        reason=message,
        deadline_at=_local(flow, miss["deadline_at"]).isoformat(),
        log_path=None,
        store=store,
        settings=settings,
    )
    fn(context)


def _mail(
    settings: Settings,
    store: Store,
    flow: FlowSpec,
    miss: Mapping[str, Any],
    message: str,
    recipients: list[str],
) -> None:
    from cronflow.masking import Masker, secret_values
    from cronflow.ops.mail import MailServer, build_message, send

    what = f"{flow.flow_id}.{miss['task_id']}" if miss["task_id"] else flow.flow_id
    if settings.smtp is None:
        raise CronflowError(f"{what} has email_on_failure but cronflow.toml has no [smtp] section")
    masker = Masker(secret_values(store, settings))
    server = MailServer.from_settings(settings.smtp)
    fire = _local(flow, miss["fire_at"])
    subject = f"[cronflow] {what} missed its deadline for {fire.isoformat()}"
    body = "\n".join(
        [
            masker.mask(message) + ".",
            "",
            f"Fire time:  {fire.isoformat()}",
            f"Deadline:   {_local(flow, miss['deadline_at']).isoformat()}",
            f"Run:        {miss['run_id'] or 'none yet'}",
            "",
            f"See why with: cronflow why {flow.flow_id} --date {fire.isoformat()}",
        ]
    )
    send(server, build_message(server.sender, recipients, subject, body), recipients)
    log.info("failure mail sent to %s", ", ".join(recipients))

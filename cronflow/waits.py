"""Waits between flows (`wait_for`): how far the other flow's day is, what holds a run back, and
when a wait gives up. The planner asks before it starts a run; `why` and `tasks` ask the same
questions to explain, so an explanation cannot drift from what the daemon does.

A run of day D (in its own timezone) waits, for each of its waits, for every run the other flow
has or should have on day D + offset_days (in the other flow's timezone): each fire time of that
day by its schedule, within its start and end dates, needs a run that succeeded, and every other
run of that day (manual, triggered) must have succeeded too. A fire time with no run yet is not
done. A flow without schedule needs at least one run that day. A day on which the other flow
has no fire time (before its start date, after its end date, a day it never fires) and no run
has nothing to wait for: the wait holds at once, with a note saying so.

A wait gives up `timeout_s` after the run's fire time, or after the run was queued when that is
later (a catch-up, a backfill, a manual run of a past day, a replay): the run then starts and
its first tasks (those without upstream tasks) end failed, or skipped with soft_fail, with a
reason naming the missing runs; the other tasks follow their trigger rules.

Cost: the planner asks at every tick for every queued run that waits. Fire times of a day are a
bounded computation (Schedule.fires_on), kept per (flow, timing, day); the runs of a day are one
indexed query.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from cronflow import deps
from cronflow.catalog import FlowSpec, FlowWait
from cronflow.states import TaskState
from cronflow.store import Store
from cronflow.timeparse import from_iso, iso, start_of_day

SHOWN = 3  # moments listed per kind before "and N more"
_CACHE_LIMIT = 4096


@dataclass(frozen=True)
class WaitStatus:
    """One wait of one run, as it is now."""

    wait: FlowWait
    day: date  # the other flow's day waited for
    progress: deps.DayProgress | None  # None: the other flow is not loaded
    since: datetime  # the wait counts from here
    tz: ZoneInfo  # the other flow's timezone, for texts
    cursor: datetime | None = None  # the other flow's last scheduled fire time
    note: str | None = None  # why there is nothing to wait for

    @property
    def holds(self) -> bool:
        return self.progress is not None and self.progress.done

    @property
    def deadline(self) -> datetime:
        return self.since + timedelta(seconds=self.wait.timeout_s)

    def timed_out(self, now: datetime) -> bool:
        return not self.holds and now >= self.deadline

    @property
    def what(self) -> str:
        return f"{self.wait.flow_id} {self.day.isoformat()}"

    def headline(self) -> str:
        """'meteo_ingest 2026-12-02: 3 of 144 runs succeeded'."""
        progress = self.progress
        if progress is None:
            return f"{self.what}: flow '{self.wait.flow_id}' is not loaded"
        if progress.needs_a_run and not progress.total:
            return f"{self.what}: no run yet (it has no schedule: a run of that day is needed)"
        return f"{self.what}: {progress.succeeded} of {progress.total} runs succeeded"

    def details(self, now: datetime) -> list[str]:
        """What holds the wait back, one line per kind, failures first, long lists counted:
        'meteo_ingest 2026-12-02 10:40 failed', '... 23:50 not yet run (fires in 2h10m)'."""
        progress = self.progress
        if progress is None or progress.done:
            return []
        lines = []
        if progress.failed:
            lines.append(f"{self._moments(_moments(progress.failed))} failed")
        for state in ("running", "queued"):
            moments = _moments(at for at, s in progress.unfinished if s == state)
            if moments:
                lines.append(f"{self._moments(moments)} {state}")
        missing = _moments(progress.missing)
        future = [at for at in missing if at > now]
        skipped = [at for at in missing if at <= now and self._passed(at)]
        due = [at for at in missing if at <= now and not self._passed(at)]
        if skipped:
            lines.append(
                f"{self._moments(skipped)} never ran (its schedule moved past: catchup=False, "
                f"paused, or before the flow was loaded); `cronflow backfill {self.wait.flow_id} "
                f"--from {self.day} --to {self.day}` creates the missing runs"
            )
        if due:
            lines.append(f"{self._moments(due)} not created yet (due since {self._time(due[0])})")
        if future:
            first = "fires" if len(future) == 1 else "the first fires"
            lines.append(
                f"{self._moments(future)} not yet run ({first} in {span_text(future[0] - now)})"
            )
        return lines

    def summary(self, now: datetime) -> str:
        """One line for a task's reason: 'meteo_ingest 2026-12-02: 10:40 failed; ...'."""
        parts = [line.removeprefix(self.what + " ") for line in self.details(now)]
        parts = [part.split("; `cronflow backfill", 1)[0] for part in parts]
        return f"{self.what}: " + "; ".join(parts) if parts else self.headline()

    def _passed(self, at: datetime) -> bool:
        return self.cursor is not None and at <= self.cursor

    def _time(self, at: datetime) -> str:
        return at.astimezone(self.tz).strftime("%H:%M")

    def _moments(self, moments: Sequence[datetime]) -> str:
        """'meteo_ingest 2026-12-02 10:40, 10:50, 11:00 and 12 more' (the day's local times)."""
        ordered = sorted(moments)
        times = []
        for at in ordered[:SHOWN]:
            local = at.astimezone(self.tz)
            times.append(
                local.strftime("%H:%M")
                if local.date() == self.day
                else local.strftime("%Y-%m-%d %H:%M")
            )
        more = f" and {len(ordered) - SHOWN} more" if len(ordered) > SHOWN else ""
        return f"{self.what} {', '.join(times)}{more}"


@dataclass(frozen=True)
class RunWaits:
    """Every wait of one run."""

    statuses: list[WaitStatus]

    @property
    def unmet(self) -> list[WaitStatus]:
        return [s for s in self.statuses if not s.holds]

    @property
    def notes(self) -> list[str]:
        return [s.note for s in self.statuses if s.note]

    def gave_up(self, now: datetime) -> list[WaitStatus]:
        """The waits that do not hold and ran out of time: once one has, the run starts."""
        return [s for s in self.statuses if s.timed_out(now)]

    @property
    def deadline(self) -> datetime | None:
        """When the first unmet wait gives up."""
        return min((s.deadline for s in self.unmet), default=None)

    def give_up(self, flow: FlowSpec, now: datetime) -> dict[str, tuple[TaskState, str]]:
        """What the run's first tasks become when its waits give up: failed, or skipped when
        every wait that gave up has soft_fail; the reason names what was missing."""
        expired = self.gave_up(now)
        state = TaskState.SKIPPED if all(s.wait.soft_fail for s in expired) else TaskState.FAILED
        waited = span_text(timedelta(seconds=max(s.wait.timeout_s for s in expired)))
        reason = f"gave up waiting ({waited}) for " + "; ".join(s.summary(now) for s in expired)
        roots = [t for t in flow.order if not flow.tasks[t].upstream]
        return {task_id: (state, reason) for task_id in roots}


class WaitChecker:
    """Answers for the runs of one store; keeps the fire times of the days it was asked about."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._fires: dict[tuple[str, str, date], tuple[tuple[str, ...], str | None]] = {}

    def run_waits(
        self,
        flow: FlowSpec,
        run: Mapping[str, Any],
        flows: Mapping[str, FlowSpec],
        cursors: Mapping[str, datetime | None] | None = None,
    ) -> RunWaits:
        """The state of each wait of `run`; `cursors` (flow id -> last scheduled fire time,
        read from the store when not given) tell a fire time that will never get a run."""
        logical_at = from_iso(run["logical_date"])
        assert logical_at is not None
        queued_at = from_iso(run.get("queued_at") or run["created_at"]) or logical_at
        since = max(logical_at, queued_at)
        day = logical_at.astimezone(flow.tz).date()
        if cursors is None and flow.waits:
            cursors = {
                r["flow_id"]: from_iso(r["last_scheduled_at"]) for r in self.store.flow_states()
            }
        statuses = []
        for wait in flow.waits:
            target = deps.upstream_day(day, wait.offset_days)
            upstream = flows.get(wait.flow_id)
            if upstream is None:
                statuses.append(WaitStatus(wait, target, None, since, flow.tz))
                continue
            fires, note = self.fires_of_day(upstream, target)
            start = start_of_day(target, upstream.tz)
            end = start_of_day(target + timedelta(days=1), upstream.tz)
            runs = self.store.run_states_between(upstream.flow_id, start, end)
            progress = deps.day_progress(fires, runs, scheduled=upstream.schedule is not None)
            cursor = (cursors or {}).get(upstream.flow_id)
            shown_note = note if progress.nothing_to_wait_for else None
            statuses.append(
                WaitStatus(wait, target, progress, since, upstream.tz, cursor, shown_note)
            )
        return RunWaits(statuses)

    def fires_of_day(self, flow: FlowSpec, day: date) -> tuple[tuple[str, ...], str | None]:
        """The flow's fire times on its local `day` within its dates (as the store writes
        logical dates), and when there is none (for a flow with a schedule), why."""
        key = (flow.flow_id, flow.timing, day)
        if key not in self._fires:
            if len(self._fires) >= _CACHE_LIMIT:
                self._fires.clear()
            fires, note = expected_fires(flow, day)
            self._fires[key] = (tuple(iso(f) or "" for f in fires), note)
        return self._fires[key]


def _moments(texts: Iterable[str]) -> list[datetime]:
    return [datetime.fromisoformat(text) for text in texts]


def expected_fires(flow: FlowSpec, day: date) -> tuple[tuple[datetime, ...], str | None]:
    """(fire times of `day` within the flow's start and end dates, note when there is none)."""
    if flow.schedule is None:
        return (), None
    fires = flow.schedule.fires_on(day)
    kept = tuple(
        f
        for f in fires
        if not (flow.start_at and f < flow.start_at) and not (flow.end_at and f > flow.end_at)
    )
    if kept:
        return kept, None
    name = f"'{flow.flow_id}'"
    day_start, day_end = start_of_day(day, flow.tz), start_of_day(day + timedelta(days=1), flow.tz)
    if flow.start_at and (day_end <= flow.start_at or (fires and fires[-1] < flow.start_at)):
        note = f"{day} is before the start date of {name}"
    elif flow.end_at and (day_start > flow.end_at or (fires and fires[0] > flow.end_at)):
        note = f"{day} is after the end date of {name}"
    else:
        note = f"{name} does not fire on {day} ({flow.schedule.describe()})"
    return (), f"{note}: nothing to wait for"


def span_text(delta: timedelta) -> str:
    """'45s', '5m', '2h10m', '3d4h' (rounded down)."""
    seconds = max(0, int(delta.total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h{minutes:02d}m" if minutes else f"{hours}h"
    return f"{minutes}m" if minutes else f"{secs}s"

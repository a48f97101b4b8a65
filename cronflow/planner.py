"""Runs: when to create them (schedules, catch-up, @reboot) and when to start them
(max_active_runs, pauses, inter-flow waits). Time comes in as an argument.

The scheduler asks the planner once per tick; task instances are the scheduler's business.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from cronflow.catalog import Catalog, FlowSpec, recorded_fire_holds
from cronflow.states import RunState, RunType, TaskState
from cronflow.store import RunExistsError, Store
from cronflow.timeparse import from_iso, iso
from cronflow.waits import WaitChecker

if TYPE_CHECKING:
    from cronflow.timetable import Schedule

log = logging.getLogger("cronflow.scheduler")

MAX_RUNS_PER_TICK = 100  # a long catch-up is spread over ticks so the daemon stays responsive
TINY = timedelta(microseconds=1)


class RunPlanner:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.catalog = Catalog({}, {})
        self._next_fire: dict[tuple[Schedule, datetime], datetime | None] = {}
        self._created = 0  # runs created by the current create_scheduled_runs pass
        self.waits = WaitChecker(store)
        self._held: dict[str, datetime | None] = {}  # flow -> newest fire time held back
        self._scheduling_since: dict[str, datetime] = {}  # flow -> since when it is scheduled
        self._failed_by_waits: list[dict[str, Any]] = []  # for their failure callbacks

    def plan(self, now: datetime) -> tuple[list[datetime], list[dict[str, Any]]]:
        """Create due runs and start the queued runs that may start: the next fire times to
        wake up for, and the running runs. Reads the flows and the active runs once."""
        flows = self.store.flow_states()
        active = self.store.runs_in_states([RunState.QUEUED, RunState.RUNNING])
        wakes, created = self.create_scheduled_runs(now, flows, active)
        if created:
            active = self.store.runs_in_states([RunState.QUEUED, RunState.RUNNING])
        wakes += self.start_runs(now, flows, active)
        return wakes, [r for r in active if r["state"] == RunState.RUNNING]

    # --- scheduled runs -------------------------------------------------------------------
    def create_scheduled_runs(
        self, now: datetime, flows: list[dict[str, Any]], active_runs: list[dict[str, Any]]
    ) -> tuple[list[datetime], int]:
        """Due scheduled runs: the next fire times, and how many runs were created."""
        active: defaultdict[str, int] = defaultdict(int)
        for run in active_runs:
            active[run["flow_id"]] += 1
        wakes = []
        self._created = 0
        upcoming: dict[str, tuple[str, datetime, datetime | None]] = {}
        for row in flows:
            flow = self.catalog.flows.get(row["flow_id"])
            if flow is None or flow.schedule is None:
                continue
            wake = None
            self._note_hold(row, now)
            if not row["paused"]:
                wake = self._schedule_flow(flow, row, active[flow.flow_id], now)
                if wake is not None:
                    wakes.append(wake)
            if not recorded_fire_holds(row, now):
                # Nothing fires between now and a wake-up time later than now.
                fire = wake if wake and wake > now else next(iter(flow.next_fires(now, 1)), None)
                upcoming[flow.flow_id] = (flow.timing, now, fire)
        if upcoming:  # for `cronflow list`: paused and blocked flows too, once per fire time
            self.store.record_next_fires(upcoming)
        return wakes, self._created

    def _schedule_flow(
        self, flow: FlowSpec, row: dict[str, Any], active: int, now: datetime
    ) -> datetime | None:
        """Create the flow's due runs; return its next fire time, or None while it is blocked.

        Each step costs the same whatever the distance to the start date: one fire time after
        the cursor, the latest due one found backwards from now, backlogs counted by arithmetic.
        """
        cursor = from_iso(row["last_scheduled_at"])
        if cursor is None:
            if flow.start_at is None:  # first sight of a flow without start_date: from now on
                self.store.set_last_scheduled(flow.flow_id, now)
                return self._cached_next(flow, now)
            cursor = flow.start_at - TINY
        elif flow.start_at and cursor < flow.start_at - TINY:
            cursor = flow.start_at - TINY  # start_date moved later: nothing before it runs
        for _ in range(MAX_RUNS_PER_TICK):
            fire = self._cached_next(flow, cursor)
            if fire is None or (flow.end_at and fire > flow.end_at):
                self._end_catchup(flow, row, cursor)
                return None
            if fire > now:
                self._end_catchup(flow, row, cursor)
                return fire
            if flow.catchup and row["catchup_from_at"] is None:
                self._start_catchup(flow, row, cursor, fire, now)
            if active >= flow.max_active_runs:
                self._hold_back(flow, fire, now)
                return None  # the scheduler ticks again at once when a run ends
            if not flow.catchup and not self._was_held(flow, fire):
                fire = self._latest_due(flow, fire, now)
            self._create_scheduled_run(flow, fire, now)
            cursor, active = fire, active + 1
        return now

    def _start_catchup(
        self, flow: FlowSpec, row: dict[str, Any], cursor: datetime, fire: datetime, now: datetime
    ) -> None:
        """Catchup on and more than one fire time due: log the backlog once, and record where
        it began so `list` and `why` can show the progress."""
        assert flow.schedule is not None
        limit = min(now, flow.end_at) if flow.end_at else now
        second = self._cached_next(flow, fire)
        if second is None or second > limit:
            return  # only the one due fire time: no catch-up
        backlog = flow.schedule.count_fires(cursor, limit)
        self.store.set_catchup_from(flow.flow_id, cursor)
        row["catchup_from_at"] = iso(cursor)
        log.info(
            "event=catchup_started flow=%s runs=%s first=%s last=%s",
            flow.flow_id,
            backlog,
            iso(fire),
            iso(flow.schedule.prev_before(limit + TINY)),
        )

    def _end_catchup(self, flow: FlowSpec, row: dict[str, Any], cursor: datetime) -> None:
        since = from_iso(row["catchup_from_at"])
        if since is None:
            return
        assert flow.schedule is not None
        self.store.set_catchup_from(flow.flow_id, None)
        row["catchup_from_at"] = None
        runs = flow.schedule.count_fires(since, cursor)
        log.info("event=catchup_done flow=%s runs=%s", flow.flow_id, runs)

    def _latest_due(self, flow: FlowSpec, first_due: datetime, now: datetime) -> datetime:
        """Catchup off: only the newest due fire time runs; the skipped ones are logged."""
        schedule = flow.schedule
        assert schedule is not None
        limit = min(now, flow.end_at) if flow.end_at else now
        following = self._cached_next(flow, first_due)
        if following is None or following > limit:
            return first_due  # the usual case: one fire time is due (and this is the next wake)
        latest = schedule.prev_before(limit + TINY) or first_due
        if latest > first_due:
            log.warning(
                "event=missed_fires flow=%s count=%s first=%s policy=latest_only",
                flow.flow_id,
                schedule.count_fires(first_due - TINY, latest - TINY),
                iso(first_due),
            )
        return latest

    def _create_scheduled_run(self, flow: FlowSpec, fire: datetime, now: datetime) -> None:
        assert flow.schedule is not None
        interval = (flow.schedule.prev_before(fire) or fire, fire)
        try:
            run_id = self.store.create_run(
                flow.flow_id,
                fire,
                RunType.SCHEDULED,
                interval,
                flow.raw["tasks"],
                advance_cursor=True,
                at=now,
            )
        except RunExistsError:  # a manual run already took that date: the slot is handled
            self.store.set_last_scheduled(flow.flow_id, fire)
            return
        self._created += 1
        log.info(
            "event=run_created flow=%s run=%s logical_date=%s type=scheduled",
            flow.flow_id,
            run_id,
            iso(fire),
        )

    # --- max_active_runs holds fire times back; it never drops them ------------------------
    def _note_hold(self, row: dict[str, Any], now: datetime) -> None:
        """Before scheduling a flow: its held-back fire time as stored, and since when this
        daemon schedules it (fire times before that passed while it was stopped or paused)."""
        flow_id = row["flow_id"]
        self._held[flow_id] = from_iso(row.get("held_until"))
        if row["paused"]:
            self._scheduling_since.pop(flow_id, None)
        else:
            self._scheduling_since.setdefault(flow_id, now)

    def _hold_back(self, flow: FlowSpec, first_due: datetime, now: datetime) -> None:
        """The flow has max_active_runs runs active while fire times are due: keep the newest
        of them in the store (flows.held_until), so that each gets its run, oldest first, once
        a run ends, even with catchup=False; `list` and `why` show it. With catchup=False, the
        fire times that passed while the daemon was stopped (or the flow paused) are dropped
        now, all but the latest, as catch-up would have done."""
        assert flow.schedule is not None
        limit = min(now, flow.end_at) if flow.end_at else now
        latest = flow.schedule.prev_before(limit + TINY)
        if latest is None:
            return
        held = self._held.get(flow.flow_id)
        if not flow.catchup:
            self._drop_missed(flow, first_due, held)
        if held is None or latest > held:
            self.store.set_held_until(flow.flow_id, latest)
            self._held[flow.flow_id] = latest

    def _drop_missed(self, flow: FlowSpec, first_due: datetime, held: datetime | None) -> None:
        """catchup=False: of the fire times due before this daemon scheduled the flow (and not
        already held back), only the latest will run: the cursor moves to just before it."""
        assert flow.schedule is not None
        since = self._scheduling_since.get(flow.flow_id)
        if since is None or (held is not None and held >= first_due):
            return  # the first due fire time was held back while the daemon ran
        if first_due > since:
            return  # it came due while the daemon ran: held back, not missed
        last_missed = self._latest_due(flow, first_due, since)  # logs what it drops
        if last_missed > first_due:
            self.store.set_last_scheduled(flow.flow_id, last_missed - TINY)

    def _was_held(self, flow: FlowSpec, fire: datetime) -> bool:
        held = self._held.get(flow.flow_id)
        return held is not None and fire <= held

    def _cached_next(self, flow: FlowSpec, after: datetime) -> datetime | None:
        """The schedule's next fire time after `after`; flows sharing a schedule share it."""
        assert flow.schedule is not None
        key = (flow.schedule, after)
        if key not in self._next_fire:
            if len(self._next_fire) > 10_000:
                self._next_fire.clear()
            self._next_fire[key] = flow.schedule.next_after(after)
        return self._next_fire[key]

    # --- starting runs --------------------------------------------------------------------
    def start_runs(
        self, now: datetime, flows: list[dict[str, Any]], active_runs: list[dict[str, Any]]
    ) -> list[datetime]:
        """Queued runs become running (oldest first) as max_active_runs, pauses and inter-flow
        waits allow; the rows of `active_runs` are updated in place. A run whose wait gave up
        starts with its first tasks ended (cronflow.waits). Returns when the next waits give up."""
        running: defaultdict[str, int] = defaultdict(int)
        for run in active_runs:
            if run["state"] == RunState.RUNNING:
                running[run["flow_id"]] += 1
        paused = {r["flow_id"] for r in flows if r["paused"]}
        cursors = {r["flow_id"]: from_iso(r["last_scheduled_at"]) for r in flows}
        deadlines = []
        for run in [r for r in active_runs if r["state"] == RunState.QUEUED]:
            flow = self.catalog.flows.get(run["flow_id"])
            if flow is None or flow.flow_id in paused:
                continue
            if running[flow.flow_id] >= flow.max_active_runs:
                continue
            ended: dict[str, tuple[TaskState, str]] = {}
            if flow.waits:
                waits = self.waits.run_waits(flow, run, self.catalog.flows, cursors)
                if waits.unmet and not waits.gave_up(now):
                    deadlines.append(waits.deadline)
                    continue
                if waits.unmet:
                    ended = waits.give_up(flow, now)
            self.store.start_run(run, flow.raw["tasks"], now, ended)
            run["state"] = RunState.RUNNING.value
            running[flow.flow_id] += 1
            log.info(
                "event=run_started flow=%s run=%s logical_date=%s",
                flow.flow_id,
                run["run_id"],
                run["logical_date"],
            )
            if ended:
                self._note_give_up(flow, run, ended)
        return [d for d in deadlines if d is not None]

    def _note_give_up(
        self, flow: FlowSpec, run: dict[str, Any], ended: dict[str, tuple[TaskState, str]]
    ) -> None:
        state, reason = next(iter(ended.values()))
        log.warning(
            "event=wait_gave_up flow=%s run=%s logical_date=%s tasks=%s state=%s reason=%r",
            flow.flow_id,
            run["run_id"],
            run["logical_date"],
            ",".join(ended),
            state.value,
            reason,
        )
        if state is TaskState.FAILED:  # their failure callbacks and mails, as for any failure
            self._failed_by_waits.extend(
                ti for ti in self.store.tis_of_runs([run["run_id"]]) if ti["task_id"] in ended
            )

    def take_gave_up(self) -> list[dict[str, Any]]:
        """Task instances failed by a wait that gave up since the last call."""
        failed, self._failed_by_waits = self._failed_by_waits, []
        return failed

    def unmet_waits(self, flow: FlowSpec, run: dict[str, Any]) -> list[tuple[str, str]]:
        """(flow id, local day) of every inter-flow wait of this run that does not hold yet."""
        waits = self.waits.run_waits(flow, run, self.catalog.flows)
        return [(s.wait.flow_id, s.day.isoformat()) for s in waits.unmet]

    def waits_satisfied(self, flow: FlowSpec, run: dict[str, Any]) -> bool:
        return not flow.waits or not self.unmet_waits(flow, run)

    # --- @reboot flows ---------------------------------------------------------------------
    def run_startup_flows(self, now: datetime) -> int:
        """Flows with schedule="@reboot" (crontab's @reboot): one manual run each time the
        daemon starts, unless the flow is paused or outside its start/end dates."""
        paused = {r["flow_id"] for r in self.store.flow_states() if r["paused"]}
        created = 0
        for flow in self.catalog.flows.values():
            if not flow.raw.get("run_at_daemon_start") or flow.flow_id in paused:
                continue
            if (flow.start_at and now < flow.start_at) or (flow.end_at and now > flow.end_at):
                continue
            logical_at = now.replace(microsecond=0)
            for _ in range(60):  # a quick restart finds its second taken: the next free one
                try:
                    tasks = flow.raw["tasks"]
                    interval = (logical_at, logical_at)
                    run_id = self.store.create_run(
                        flow.flow_id, logical_at, RunType.MANUAL, interval, tasks
                    )
                    break
                except RunExistsError:
                    logical_at += timedelta(seconds=1)
            else:
                continue
            created += 1
            log.info(
                "event=run_created flow=%s run=%s logical_date=%s type=manual reason=daemon_start",
                flow.flow_id,
                run_id,
                iso(logical_at),
            )
        return created

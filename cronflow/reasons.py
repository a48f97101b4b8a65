"""`cronflow why`: in words, why a run or a task is not running (or what it is doing).

The answers reuse the daemon's own rules where they live: inter-flow waits through
cronflow.waits (as the planner), max_active_runs holds through `overview.held_back`, trigger
rules through `deps.decide`, pool sizes through the settings, so an explanation cannot drift
from what the daemon does.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from cronflow import control, deps
from cronflow.catalog import Catalog, FlowSpec, catchup_progress
from cronflow.config import Settings
from cronflow.errors import NotFoundError
from cronflow.mapping import fold_instances
from cronflow.overview import held_back
from cronflow.past import past_hold
from cronflow.states import ACTIVE_TASK_STATES, RunState, TaskState
from cronflow.store import Store
from cronflow.timeparse import from_iso, parse_date_or_datetime, start_of_day
from cronflow.waits import WaitChecker, WaitStatus, span_text

TINY = timedelta(microseconds=1)


class Explainer:
    """Answers about one flow, from the store as it is now."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        cat: Catalog,
        flow: FlowSpec,
        now: datetime,
        daemon_running: bool,
    ) -> None:
        self.settings, self.store, self.cat, self.flow = settings, store, cat, flow
        self.now = now
        self.daemon_running = daemon_running
        # since when the daemon runs (a fire time before it had no daemon to run it); read
        # from the daemon's record unless the daemon itself says
        self.daemon_since: datetime | None = None

    def explain(self, date_text: str | None, task_id: str | None) -> list[str]:
        """Reasons, most important first: the daemon, the flow, the run, then its tasks."""
        if task_id is not None:
            self.flow.task(task_id)
        reasons = []
        if not self.daemon_running:
            reasons.append(
                f"the daemon is not running on {self.settings.home}: nothing runs until "
                "`cronflow daemon` (or its systemd service) starts"
            )
        if self._paused():
            reasons.append(
                f"flow '{self.flow.flow_id}' is paused: no run starts until "
                f"`cronflow unpause {self.flow.flow_id}`"
            )
        held = self._held_back()
        if held:
            reasons.append(
                f"flow '{self.flow.flow_id}': the run of {self.when(held[0])} is {held[1]}; "
                "it is created when one of them ends"
            )
        reasons += self._catching_up()
        try:
            run = control.find_one_run(self.store, self.flow, date_text)
        except NotFoundError:
            return reasons + self._no_run(date_text) + self._misses_on(date_text)
        return reasons + self._run(run, task_id) + self._deadlines(run)

    def _catching_up(self) -> list[str]:
        flow = self.flow
        row = next((r for r in self.store.flow_states() if r["flow_id"] == flow.flow_id), None)
        progress = catchup_progress(flow, row, self.now) if row else None
        if row is None or progress is None or flow.schedule is None:
            return []
        first = self.when(flow.schedule.next_after(from_iso(row["catchup_from_at"]) or self.now))
        return [
            f"flow '{flow.flow_id}' is catching up: {progress[0]:,} of {progress[1]:,} runs "
            f"created (catchup=True: each fire time from {first} on gets a run, oldest first, "
            f"{flow.max_active_runs} at a time)"
        ]

    # --- no run ---------------------------------------------------------------------------
    def _no_run(self, date_text: str | None) -> list[str]:
        flow = self.flow
        upcoming = flow.next_fires(self.now, 1)
        nxt = f"; the next fire time is {self.when(upcoming[0])}" if upcoming else ""
        if flow.schedule is None:
            return [f"flow '{flow.flow_id}' has no schedule: it runs only when triggered"]
        if date_text is None:
            return [f"flow '{flow.flow_id}' has no run yet{nxt}"]
        value = parse_date_or_datetime(date_text, flow.tz)
        moment = value if isinstance(value, datetime) else None
        fires = [moment] if moment else flow.schedule.fires_on(value)
        if not fires:
            return [f"the schedule ({flow.schedule.describe()}) does not fire on {date_text}"]
        first, last = min(fires), max(fires)
        if flow.start_at and last < flow.start_at:
            return [f"{date_text} is before the flow's start date {self.when(flow.start_at)}"]
        if flow.end_at and first > flow.end_at:
            return [f"{date_text} is after the flow's end date {self.when(flow.end_at)}"]
        if first > self.now:
            return [f"the run of {date_text} is not due yet: it fires at {self.when(first)}"]
        held = self._held_back()
        if held and first >= held[0]:
            return [f"the run of {date_text} is {held[1]}: it is created when one of them ends"]
        catchup = "" if flow.catchup else " (catchup is off: only the latest missed run is made)"
        return [
            f"no run of {date_text} was created{catchup}; "
            f"`cronflow backfill {flow.flow_id} --from {date_text} --to {date_text}` creates it"
        ]

    # --- a run ----------------------------------------------------------------------------
    def _run(self, run: dict[str, Any], task_id: str | None) -> list[str]:
        local = self.day(run["logical_date"])
        state = RunState(run["state"])
        tis = {ti["task_id"]: ti for ti in self.store.tis_of_runs([run["run_id"]])}
        if state is RunState.QUEUED:
            why, details = self._queued(run)
            reasons = [f"the run of {local} is queued: " + "; ".join(why), *details]
        elif state.is_finished:
            reasons = [
                f"the run of {local} finished {state.value} at {self.when_text(run['ended_at'])}"
            ]
        else:
            reasons = [f"the run of {local} is running"]
        if not state.is_finished:
            reasons += self._wait_notes(run)
        if task_id is not None:
            chosen = [task_id]
        elif state.is_finished:
            chosen = [t for t, ti in tis.items() if ti["state"] == TaskState.FAILED]
        else:
            chosen = [t for t, ti in tis.items() if not TaskState(ti["state"]).is_finished]
        order = {t: i for i, t in enumerate(self.flow.tasks)}
        for tid in sorted(chosen, key=lambda t: order.get(t, len(order))):
            if tid in tis:
                reasons.append(f"{tid}: {self._task(run, tis[tid], tis)}")
            else:
                reasons.append(f"{tid}: not in this run yet (it joins when the run starts)")
        return reasons

    def _queued(self, run: dict[str, Any]) -> tuple[list[str], list[str]]:
        """Why the run has not started, and the lines naming the runs its waits miss."""
        flow = self.flow
        why = []
        running = self._running_others(run)
        if len(running) >= flow.max_active_runs:
            dates = ", ".join(self.day(r["logical_date"]) for r in running[:5])
            runs = "run" if len(running) == 1 else "runs"
            why.append(
                f"held back by max_active_runs={flow.max_active_runs}: {len(running)} {runs} "
                f"active ({dates})"
            )
        details = []
        if flow.waits:
            waits = WaitChecker(self.store).run_waits(flow, run, self.cat.flows)
            for status in waits.unmet:
                why.append(f"it waits for {status.headline()}; {self._giving_up(status)}")
                details += status.details(self.now)
        if not why and self.daemon_running:
            why.append("the daemon starts it at its next pass")
        elif not why:
            why.append("it starts once the daemon runs")
        return why, details

    def _running_others(self, run: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            r
            for r in self.store.runs_of_flow(self.flow.flow_id, states=[RunState.RUNNING])
            if r["run_id"] != run["run_id"]
        ]

    def _giving_up(self, status: WaitStatus) -> str:
        """When (or that) a wait gives up, and what then happens to the run."""
        then = "skipped" if status.wait.soft_fail else "failed"
        limit = span_text(timedelta(seconds=status.wait.timeout_s))
        if status.timed_out(self.now):
            return (
                f"it gave up at {self.when(status.deadline)} (wait_timeout {limit}): the run "
                f"starts with its first tasks {then}"
            )
        return (
            f"it gives up at {self.when(status.deadline)} (wait_timeout {limit}), then its first "
            f"tasks end {then}"
        )

    def _wait_notes(self, run: dict[str, Any]) -> list[str]:
        """Waits that held at once: the other flow had nothing to do that day."""
        if not self.flow.waits:
            return []
        return WaitChecker(self.store).run_waits(self.flow, run, self.cat.flows).notes

    @cached_property
    def _held(self) -> tuple[datetime, str] | None:
        """_held_back, read once: a deadline check asks for many fire times at one moment."""
        return self._held_back()

    def _held_back(self) -> tuple[datetime, str] | None:
        row = next((r for r in self.store.flow_states() if r["flow_id"] == self.flow.flow_id), None)
        if row is None or not row["held_until"]:
            return None
        active = self.store.active_run_counts().get(self.flow.flow_id, 0)
        return held_back(self.flow, row, active)

    # --- deadlines (cronflow.deadlines) --------------------------------------------------
    def holding(self, fire_at: datetime, run: dict[str, Any] | None, task_id: str | None) -> str:
        """In a few words, what keeps the run of `fire_at` (or one of its tasks) from being
        done now: what a missed deadline says in parentheses."""
        if run is None:
            return self._no_run_yet(fire_at)
        state = RunState(run["state"])
        if state is RunState.QUEUED:
            return self._queued_briefly(run)
        tis = {ti["task_id"]: ti for ti in self.store.tis_of_runs([run["run_id"]])}
        if task_id is not None and task_id in tis:
            return f"{task_id} {self._task(run, tis[task_id], tis)}"
        order = [t for t in self.flow.order if t in tis]
        if state is RunState.FAILED:
            failed = [t for t in order if tis[t]["state"] == TaskState.FAILED]
            return "failed: " + "; ".join(f"{t}: {tis[t]['reason'] or '-'}" for t in failed[:2])
        unfinished = [t for t in order if not TaskState(tis[t]["state"]).is_finished]
        started = [t for t in unfinished if tis[t]["state"] != TaskState.NONE]
        shown = (started or unfinished)[:2]
        return "; ".join(f"{t} {self._task(run, tis[t], tis)}" for t in shown) or state.value

    def _no_run_yet(self, fire_at: datetime) -> str:
        held = self._held
        if held and fire_at >= held[0]:
            return f"no run: {held[1]}"
        since = self.daemon_since
        if since is None:
            record = self.store.daemon_record()
            since = from_iso(record["started_at"]) if record else None
        if since is None or since > fire_at:
            return f"no run: the daemon was not running at {self.when(fire_at)}"
        if self._paused():
            return "no run: the flow is paused"
        return "no run yet"

    def _queued_briefly(self, run: dict[str, Any]) -> str:
        """'held back by max_active_runs=1: 1 run active' or 'waiting for meteo_ingest
        2026-12-02: 23:50 not yet run (...)' (cronflow.waits says what is missing)."""
        why = []
        running = len(self._running_others(run))
        if running >= self.flow.max_active_runs:
            runs = "run" if running == 1 else "runs"
            why.append(
                f"held back by max_active_runs={self.flow.max_active_runs}: {running} {runs} active"
            )
        if self.flow.waits:
            waits = WaitChecker(self.store).run_waits(self.flow, run, self.cat.flows)
            why += [f"waiting for {status.summary(self.now)}" for status in waits.unmet]
        return "; ".join(why) or "queued: the daemon starts it at its next pass"

    def _deadlines(self, run: dict[str, Any]) -> list[str]:
        """The run's missed deadlines, or when its deadlines are while it is not done."""
        fire = from_iso(run["logical_date"])
        assert fire is not None
        lines = self._missed(fire, fire + TINY)
        if lines or RunState(run["state"]) is RunState.SUCCESS or not self._is_fire_time(fire):
            return lines
        for task_id, seconds in self.flow.deadlines.items():
            due = fire + timedelta(seconds=seconds)
            if due > self.now:
                what = f"{self.flow.flow_id}.{task_id}" if task_id else "the run"
                span = span_text(timedelta(seconds=seconds))
                lines.append(f"deadline: {what} must be done by {self.when(due)} ({span})")
        return lines

    def _misses_on(self, date_text: str | None) -> list[str]:
        """The missed deadlines of the fire times asked about that have no run."""
        if date_text is None or not self.flow.deadlines:
            return []
        value = parse_date_or_datetime(date_text, self.flow.tz)
        if isinstance(value, datetime):
            return self._missed(value, value + TINY)
        return self._missed(
            start_of_day(value, self.flow.tz), start_of_day(value + timedelta(days=1), self.flow.tz)
        )

    def _missed(self, start: datetime, end: datetime) -> list[str]:
        rows = self.store.deadline_misses_between(self.flow.flow_id, start, end)
        return [f"{row['message']}, seen at {self.when_text(row['missed_at'])}" for row in rows]

    def _is_fire_time(self, at: datetime) -> bool:
        schedule = self.flow.schedule
        return schedule is not None and schedule.next_after(at - TINY) == at

    # --- a task instance ------------------------------------------------------------------
    def _task(self, run: dict[str, Any], ti: dict[str, Any], tis: dict[str, dict[str, Any]]) -> str:
        state = TaskState(ti["state"])
        tries = f"try {ti['try_number']} of {ti['max_tries']}"
        if state is TaskState.NONE:
            return self._none(run, ti, tis)
        if state is TaskState.SCHEDULED:
            return "ready, " + self._slots(ti)
        if state is TaskState.QUEUED:
            return f"starting ({tries})"
        if state is TaskState.RUNNING:
            return (
                f"running since {self.when_text(ti['start_at'])} ({tries}, pid {ti['pid']} "
                f"on {ti['host']})"
            )
        if state is TaskState.UP_FOR_RETRY:
            return (
                f"try {ti['try_number']} failed ({ti['reason'] or 'no reason'}); retry at "
                f"{self.when_text(ti['next_try_at'])} (try {ti['try_number'] + 1} of "
                f"{ti['max_tries']})"
            )
        if state is TaskState.UP_FOR_RESCHEDULE:
            seen = f" ({ti['reason']})" if ti["reason"] else ""  # "not yet: ..." of the last poke
            return f"waiting to check again at {self.when_text(ti['next_try_at'])}{seen}"
        reason = f": {ti['reason']}" if ti["reason"] else ""
        return f"finished {state.value}{reason}"

    def _none(self, run: dict[str, Any], ti: dict[str, Any], tis: dict[str, dict[str, Any]]) -> str:
        task = self.flow.task_of(ti["task_id"])
        if task is None:
            return "no longer in the flow file"
        if run["state"] == RunState.QUEUED:
            return "waiting for its run to start"
        folded = fold_instances({t: ti["state"] for t, ti in tis.items()})  # a mapped task: one
        ups = {u: TaskState(folded.get(u, TaskState.NONE)) for u in task.upstream}
        waiting = [f"{u} ({s.value})" for u, s in ups.items() if not s.is_finished]
        if waiting:
            return "waiting on upstream task(s) " + ", ".join(waiting)
        decision = deps.decide(task.trigger_rule, list(ups.values()))
        hold = past_hold(self.store, self.flow, run, task.task_id)
        if decision is deps.Decision.RUN and hold is not None:
            return f"depends_on_past: {hold.text(self.day)}"
        return f"its upstream tasks are done ({task.trigger_rule}: {decision.value}); the daemon acts at its next pass"

    def _slots(self, ti: dict[str, Any]) -> str:
        pool = ti["pool"]
        slots = self.settings.pool_slots(pool)
        if slots is None:
            return f"but pool '{pool}' is not configured in cronflow.toml"
        busy = self.store.tis_in_states(ACTIVE_TASK_STATES)
        in_pool = Counter(t["pool"] for t in busy)[pool]
        if in_pool >= slots:
            return f"waiting: pool '{pool}' is full ({in_pool} of {slots} slots in use)"
        if len(busy) >= self.settings.parallelism:
            return f"waiting: all {self.settings.parallelism} parallelism slots are in use"
        return "starting at the daemon's next pass"

    # --- helpers --------------------------------------------------------------------------
    def _paused(self) -> bool:
        return any(
            r["flow_id"] == self.flow.flow_id and r["paused"] for r in self.store.flow_states()
        )

    def when(self, moment: datetime | None) -> str:
        """A moment in the flow's timezone: the time alone today, else date and time."""
        if moment is None:
            return "-"
        local = moment.astimezone(self.flow.tz)
        if local.date() == self.now.astimezone(self.flow.tz).date():
            return local.strftime("%H:%M:%S %Z")
        return local.strftime("%Y-%m-%d %H:%M %Z")

    def day(self, stamp: str) -> str:
        """A logical date in the flow's timezone, always with its day."""
        return datetime.fromisoformat(stamp).astimezone(self.flow.tz).strftime("%Y-%m-%d %H:%M %Z")

    def when_text(self, stamp: str | None) -> str:
        return self.when(from_iso(stamp))

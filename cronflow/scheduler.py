"""The scheduler: one `tick(now)` decides and acts on everything that is due at `now`.

A tick reaps ended attempts, creates due scheduled runs, starts queued runs, resolves task
dependencies and dispatches ready tasks, then returns when it next has something to do. The
store is the only source of truth (the CLI changes it too); the scheduler keeps in memory only
the attempts it is running. Time comes in as an argument, so tests drive it with a fake clock.
"""

from __future__ import annotations

import logging
import signal
import socket
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from cronflow import deps
from cronflow.callbacks import EVENT_FOR_STATE, CallbackRunner, wanted
from cronflow.catalog import Catalog, FlowSpec, TaskSpec
from cronflow.config import Settings
from cronflow.context import task_context, task_environment
from cronflow.errors import CronflowError
from cronflow.executor import Attempt, Finished, LocalExecutor, kill_orphans
from cronflow.logs import attempt_log_path, write_note
from cronflow.ops import launch_for
from cronflow.outcomes import EXIT_RESCHEDULE, EXIT_SKIPPED
from cronflow.states import RunState, RunType, TaskState
from cronflow.store import RunExistsError, Store
from cronflow.timeparse import from_iso, iso, start_of_day

log = logging.getLogger("cronflow.scheduler")

IDLE_WAKE_S = 2.0  # wake at least this often: flow file changes, CLI changes without a poke
MAX_RUNS_PER_TICK = 100  # a long catch-up is spread over ticks so the daemon stays responsive
TINY = timedelta(microseconds=1)


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class Scheduler:
    def __init__(
        self, store: Store, settings: Settings, executor: LocalExecutor, clock: Clock | None = None
    ) -> None:
        self.store = store
        self.settings = settings
        self.executor = executor
        self.clock = clock or SystemClock()
        self.catalog = Catalog({}, {})
        self.stopping = False
        self.host = socket.gethostname()
        self._interrupted: set[tuple[int, str]] = set()
        self._next_fire: dict[tuple[str, str | None], Any] = {}
        self.callbacks = CallbackRunner(settings.home)

    def marker(self, run_id: int, task_id: str, try_number: int) -> str:
        """The CRONFLOW_ATTEMPT value of one attempt; all of a home's share its prefix."""
        return f"{self.marker_prefix}{run_id}|{task_id}|{try_number}"

    @property
    def marker_prefix(self) -> str:
        return f"{self.settings.home}|"

    # --- the tick -------------------------------------------------------------------------
    def tick(self, now: datetime | None = None) -> datetime:
        """Do everything due at `now`; return the instant of the next thing to do."""
        now = now or self.clock.now()
        self.reap(now)
        self.callbacks.reap()
        self.executor.enforce()
        wakes = [now + timedelta(seconds=IDLE_WAKE_S)]
        if not self.stopping:
            wakes += self._create_scheduled_runs(now)
            self._start_runs(now)
        wakes += self._resolve_and_dispatch(now)
        deadline = self.executor.next_deadline()
        if deadline is not None:
            wakes.append(now + timedelta(seconds=max(0.0, deadline - time.monotonic())))
        return min(wakes)

    # --- scheduled runs -------------------------------------------------------------------
    def _create_scheduled_runs(self, now: datetime) -> list[datetime]:
        active = defaultdict(int)
        for run in self.store.runs_in_states([RunState.QUEUED, RunState.RUNNING]):
            active[run["flow_id"]] += 1
        wakes = []
        for row in self.store.flow_states():
            flow = self.catalog.flows.get(row["flow_id"])
            if flow is None or flow.schedule is None or row["paused"]:
                continue
            wake = self._schedule_flow(
                flow, from_iso(row["last_scheduled_at"]), active[flow.flow_id], now
            )
            if wake is not None:
                wakes.append(wake)
        return wakes

    def _schedule_flow(
        self, flow: FlowSpec, cursor: datetime | None, active: int, now: datetime
    ) -> datetime | None:
        """Create the flow's due runs; return its next fire time, or None while it is blocked."""
        schedule = flow.schedule
        assert schedule is not None
        if cursor is None:
            if flow.start_at is None:  # first sight of a flow without start_date: from now on
                self.store.set_last_scheduled(flow.flow_id, now)
                return self._cached_next(flow, now)
            cursor = flow.start_at - TINY
        for _ in range(MAX_RUNS_PER_TICK):
            fire = self._cached_next(flow, cursor)
            if fire is None or (flow.end_at and fire > flow.end_at):
                return None
            if fire > now:
                return fire
            if active >= flow.max_active_runs:
                return None  # a run ending wakes the daemon anyway
            if not flow.catchup:
                fire = self._latest_due(flow, fire, now)
            self._create_scheduled_run(flow, fire)
            cursor, active = fire, active + 1
        return now

    def _latest_due(self, flow: FlowSpec, first_due: datetime, now: datetime) -> datetime:
        """Catchup off: only the newest due fire time runs; the skipped ones are logged."""
        schedule = flow.schedule
        assert schedule is not None
        limit = min(now, flow.end_at) if flow.end_at else now
        latest = schedule.prev_before(limit + TINY) or first_due
        if latest > first_due:
            missed = sum(
                1
                for _ in zip(
                    schedule.fires(first_due - TINY, latest - TINY), range(10_000), strict=False
                )
            )
            log.warning(
                "event=missed_fires flow=%s count=%s%s first=%s policy=latest_only",
                flow.flow_id,
                missed,
                "+" if missed >= 10_000 else "",
                iso(first_due),
            )
        return latest

    def _create_scheduled_run(self, flow: FlowSpec, fire: datetime) -> None:
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
            )
        except RunExistsError:  # a manual run already took that date: the slot is handled
            self.store.set_last_scheduled(flow.flow_id, fire)
            return
        log.info(
            "event=run_created flow=%s run=%s logical_date=%s type=scheduled",
            flow.flow_id,
            run_id,
            iso(fire),
        )

    def _cached_next(self, flow: FlowSpec, after: datetime) -> datetime | None:
        key = (flow.flow_id + flow.raw["schedule"] + flow.raw["timezone"], iso(after))
        if key not in self._next_fire:
            if len(self._next_fire) > 10_000:
                self._next_fire.clear()
            assert flow.schedule is not None
            self._next_fire[key] = flow.schedule.next_after(after)
        return self._next_fire[key]

    # --- starting runs --------------------------------------------------------------------
    def _start_runs(self, now: datetime) -> None:
        running = defaultdict(int)
        for run in self.store.runs_in_states([RunState.RUNNING]):
            running[run["flow_id"]] += 1
        paused = {r["flow_id"] for r in self.store.flow_states() if r["paused"]}
        for run in self.store.runs_in_states([RunState.QUEUED]):
            flow = self.catalog.flows.get(run["flow_id"])
            if flow is None or flow.flow_id in paused:
                continue
            if running[flow.flow_id] >= flow.max_active_runs or not self.waits_satisfied(flow, run):
                continue
            self.store.add_missing_tis(run, flow.raw["tasks"])
            self.store.set_run_state(run["run_id"], RunState.RUNNING, now)
            running[flow.flow_id] += 1
            log.info(
                "event=run_started flow=%s run=%s logical_date=%s",
                flow.flow_id,
                run["run_id"],
                run["logical_date"],
            )

    def unmet_waits(self, flow: FlowSpec, run: dict[str, Any]) -> list[tuple[str, str]]:
        """(flow id, local day) of every inter-flow wait of this run that does not hold yet."""
        logical_at = from_iso(run["logical_date"])
        assert logical_at is not None
        day = logical_at.astimezone(flow.tz).date()
        unmet = []
        for upstream_id, offset in flow.wait_for:
            target = deps.upstream_day(day, offset)
            upstream = self.catalog.flows.get(upstream_id)
            states = []
            if upstream is not None:
                start = start_of_day(target, upstream.tz)
                end = start_of_day(target + timedelta(days=1), upstream.tz)
                states = [r["state"] for r in self.store.runs_between(upstream_id, start, end)]
            if not deps.flow_wait_satisfied(states):
                unmet.append((upstream_id, target.isoformat()))
        return unmet

    def waits_satisfied(self, flow: FlowSpec, run: dict[str, Any]) -> bool:
        return not flow.wait_for or not self.unmet_waits(flow, run)

    # --- task instances -------------------------------------------------------------------
    def _resolve_and_dispatch(self, now: datetime) -> list[datetime]:
        runs = {r["run_id"]: r for r in self.store.runs_in_states([RunState.RUNNING])}
        tis_by_run: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for ti in self.store.tis_of_runs(list(runs)):
            tis_by_run[ti["run_id"]].append(ti)
        self._stop_changed_attempts(tis_by_run)
        ready, wakes = [], []
        for run_id, run in runs.items():
            flow = self.catalog.flows.get(run["flow_id"])
            if flow is None:
                continue
            tis = {ti["task_id"]: ti for ti in tis_by_run[run_id] if ti["task_id"] in flow.tasks}
            if len(tis) < len(flow.tasks):
                self.store.add_missing_tis(run, flow.raw["tasks"])
                tis = {
                    t["task_id"]: t
                    for t in self.store.tis_of_runs([run_id])
                    if t["task_id"] in flow.tasks
                }
            wakes += self._resolve_run(flow, run, tis, now)
            ready += [(flow, run, ti) for ti in tis.values() if ti["state"] == TaskState.SCHEDULED]
        if not self.stopping:
            self._dispatch(ready, now)
        return wakes

    def _resolve_run(
        self, flow: FlowSpec, run: dict[str, Any], tis: dict[str, dict[str, Any]], now: datetime
    ) -> list[datetime]:
        wakes = []
        for ti in tis.values():
            if ti["state"] in (TaskState.UP_FOR_RETRY, TaskState.UP_FOR_RESCHEDULE):
                due = from_iso(ti["next_try_at"]) or now
                if due > now:
                    wakes.append(due)
                elif not self.stopping and self._set(ti, ti["state"], state=TaskState.SCHEDULED):
                    ti["state"] = TaskState.SCHEDULED
        states = {t: TaskState(ti["state"]) for t, ti in tis.items()}
        for task_id, decision in deps.resolve_run(flow.graph, states).items():
            new = {
                deps.Decision.RUN: TaskState.SCHEDULED,
                deps.Decision.SKIP: TaskState.SKIPPED,
                deps.Decision.UPSTREAM_FAILED: TaskState.UPSTREAM_FAILED,
            }.get(decision)
            if new is None:
                continue
            # a fresh start (first time, or after a replay): a sensor's wait starts again
            ended = {"first_poke_at": None} if new is TaskState.SCHEDULED else {"end_at": iso(now)}
            if self._set(tis[task_id], TaskState.NONE, state=new, **ended):
                tis[task_id]["state"] = states[task_id] = new
        outcome = deps.run_outcome(states.values())
        if outcome is not None:
            self.store.set_run_state(run["run_id"], outcome, now)
            log.info(
                "event=run_finished flow=%s run=%s logical_date=%s state=%s",
                flow.flow_id,
                run["run_id"],
                run["logical_date"],
                outcome.value,
            )
        return wakes

    def _set(self, ti: dict[str, Any], expect: TaskState | str, **fields: Any) -> bool:
        return self.store.update_ti(
            ti["run_id"], ti["task_id"], expect_state=TaskState(expect), **fields
        )

    def _dispatch(
        self, ready: list[tuple[FlowSpec, dict[str, Any], dict[str, Any]]], now: datetime
    ) -> None:
        ready.sort(
            key=lambda item: (-item[2]["priority"], item[1]["logical_date"], item[1]["run_id"])
        )
        usage = self.executor.pool_usage()
        # A TI replayed while its try ran: the old try is still being stopped; start the next
        # one once it is reaped, so the executor never holds two attempts of one TI.
        stopping = {attempt.key for attempt in self.executor.running()}
        for flow, run, ti in ready:
            if self.executor.free_slots <= 0:
                return
            if (ti["run_id"], ti["task_id"]) in stopping:
                continue
            pool = ti["pool"]
            slots = self.settings.pool_slots(pool)
            if slots is None:
                self._fail_unstartable(
                    flow, run, ti, now, f"pool '{pool}' is not configured in cronflow.toml"
                )
                continue
            if usage.get(pool, 0) >= slots:
                continue
            if self._start_attempt(flow, run, ti, now):
                usage[pool] = usage.get(pool, 0) + 1

    def _start_attempt(
        self, flow: FlowSpec, run: dict[str, Any], ti: dict[str, Any], now: datetime
    ) -> bool:
        task = flow.tasks[ti["task_id"]]
        try_number = ti["try_number"] + 1
        log_path = attempt_log_path(
            self.settings.logs_dir, flow.flow_id, task.task_id, run["logical_date"], try_number
        )
        queued = self._set(
            ti,
            TaskState.SCHEDULED,
            state=TaskState.QUEUED,
            try_number=try_number,
            queued_at=iso(now),
            log_path=str(log_path),
            host=self.host,
            pid=None,
            start_at=None,
            end_at=None,
            duration_s=None,
            exit_code=None,
            reason=None,
            next_try_at=None,
        )
        if not queued:
            return False
        ti = {**ti, "try_number": try_number, "log_path": str(log_path), "state": TaskState.QUEUED}
        try:
            context = task_context(flow, task, run, try_number, self.store)
            launch = launch_for(task.kind, task.op, context)
            env = {**task_environment(context, str(self.settings.home)), **launch.env}
            header = (
                f"{flow.flow_id}.{task.task_id} for {context['ts']}, try {try_number} of "
                f"{ti['max_tries']}, on {self.host}"
            )
            try:
                write_note(log_path, now, header)
            except OSError as exc:
                raise OSError(
                    f"cannot write the task log {log_path}: {exc.strerror or exc}"
                ) from None
            attempt = Attempt(
                run["run_id"],
                task.task_id,
                try_number,
                ti["pool"],
                launch.argv,
                env,
                launch.cwd,
                log_path,
                task.timeout_s,
                self.marker(run["run_id"], task.task_id, try_number),
                stdin=launch.stdin,
            )
            pid = self.executor.start(attempt)
        except (CronflowError, OSError) as exc:
            self._end_attempt(ti, now, ok=False, reason=f"cannot start: {exc}", duration_s=0.0)
            return False
        self.store.update_ti(
            run["run_id"],
            task.task_id,
            expect_state=TaskState.QUEUED,
            expect_try=try_number,
            state=TaskState.RUNNING,
            pid=pid,
            start_at=iso(now),
        )
        log.info(
            "event=task_started flow=%s task=%s run=%s try=%s pid=%s",
            flow.flow_id,
            task.task_id,
            run["run_id"],
            try_number,
            pid,
        )
        return True

    def _fail_unstartable(
        self, flow: FlowSpec, run: dict[str, Any], ti: dict[str, Any], now: datetime, reason: str
    ) -> None:
        if self._set(
            ti, TaskState.SCHEDULED, state=TaskState.FAILED, end_at=iso(now), reason=reason
        ):
            log.error(
                "event=task_failed flow=%s task=%s run=%s reason=%r",
                flow.flow_id,
                ti["task_id"],
                run["run_id"],
                reason,
            )
            self._run_callbacks(ti, TaskState.FAILED, reason)

    def _stop_changed_attempts(self, tis_by_run: dict[int, list[dict[str, Any]]]) -> None:
        """Kill attempts whose task instance was changed outside the daemon (mark, replay)."""
        for attempt in self.executor.running():
            ti = next(
                (t for t in tis_by_run.get(attempt.run_id, []) if t["task_id"] == attempt.task_id),
                None,
            )
            ti = ti or self.store.ti(attempt.run_id, attempt.task_id)
            if (
                ti is None
                or ti["state"] != TaskState.RUNNING
                or ti["try_number"] != attempt.try_number
            ):
                state = ti["state"] if ti else "deleted"
                self.executor.kill(attempt.key, f"stopped: its state was changed to {state}")

    # --- ended attempts -------------------------------------------------------------------
    def reap(self, now: datetime) -> None:
        for finished in self.executor.reap():
            self._on_finished(finished, now)

    def _on_finished(self, finished: Finished, now: datetime) -> None:
        attempt = finished.attempt
        ti = self.store.ti(attempt.run_id, attempt.task_id)
        if ti is None or ti["try_number"] != attempt.try_number:
            return
        if attempt.key in self._interrupted:
            self._interrupted.discard(attempt.key)
            self._give_back(ti, now, finished)
            return
        if finished.reason is None and finished.exit_code in (EXIT_RESCHEDULE, EXIT_SKIPPED):
            task = self._task_spec(ti)
            if task is not None and task.kind != "shell":  # a shell's own exit 75 is a failure
                self._end_as_asked(ti, now, finished, task)
                return
        ok = finished.exit_code == 0 and finished.reason is None
        reason = finished.reason or (None if ok else _exit_text(finished.exit_code))
        self._end_attempt(
            ti,
            now,
            ok=ok,
            reason=reason,
            duration_s=finished.duration_s,
            exit_code=finished.exit_code,
        )

    def _end_attempt(
        self,
        ti: dict[str, Any],
        now: datetime,
        *,
        ok: bool,
        reason: str | None,
        duration_s: float | None,
        exit_code: int | None = None,
    ) -> None:
        """Success, up_for_retry or failed, from the attempt's outcome and the tries left."""
        try_number = ti["try_number"]
        fields: dict[str, Any] = {
            "end_at": iso(now),
            "duration_s": duration_s,
            "exit_code": exit_code,
            "reason": reason,
            "first_poke_at": None,
        }
        if ok:
            fields["state"], note = TaskState.SUCCESS, "success"
        elif try_number < ti["max_tries"]:
            retry_at = now + timedelta(seconds=self._retry_delay(ti, try_number))
            fields.update(state=TaskState.UP_FOR_RETRY, next_try_at=iso(retry_at))
            note = f"{reason}; retry at {iso(retry_at)} (try {try_number + 1} of {ti['max_tries']})"
        else:
            fields["state"], note = TaskState.FAILED, f"failed: {reason}"
        changed = self.store.update_ti(
            ti["run_id"],
            ti["task_id"],
            expect_state=(TaskState.RUNNING, TaskState.QUEUED),
            expect_try=try_number,
            **fields,
        )
        if ti["log_path"]:
            took = f" after {duration_s:.3f}s" if duration_s is not None else ""
            if not changed:  # marked or replayed meanwhile: the reason says so, no retry follows
                note = reason or "success"
            self._note(ti["log_path"], now, f"try {try_number} ended{took}: {note}")
        if changed:
            log.info(
                "event=task_ended flow=%s task=%s run=%s try=%s state=%s reason=%r",
                ti["flow_id"],
                ti["task_id"],
                ti["run_id"],
                try_number,
                fields["state"].value,
                reason,
            )
            self._run_callbacks(ti, fields["state"], reason)

    def _end_as_asked(
        self, ti: dict[str, Any], now: datetime, finished: Finished, task: TaskSpec
    ) -> None:
        """A worker asked (cronflow.outcomes) for up_for_reschedule: the try is not counted and
        its next poke appends to the same log; or for skipped. The reason is the worker's."""
        try_number = ti["try_number"]
        fields: dict[str, Any] = {
            "end_at": iso(now),
            "duration_s": finished.duration_s,
            "exit_code": finished.exit_code,
        }
        if finished.exit_code == EXIT_RESCHEDULE:
            poke_at = now + timedelta(seconds=float(task.op.get("poke_interval_s", 60.0)))
            reason = ti["reason"] or "not satisfied yet"
            fields.update(
                state=TaskState.UP_FOR_RESCHEDULE,
                next_try_at=iso(poke_at),
                try_number=try_number - 1,
                reason=reason,
            )
            note = f"{reason}; next poke at {iso(poke_at)} (the try is not counted)"
        else:
            reason = ti["reason"] or "skipped by the task"
            fields.update(state=TaskState.SKIPPED, reason=reason, first_poke_at=None)
            note = reason
        changed = self.store.update_ti(
            ti["run_id"],
            ti["task_id"],
            expect_state=TaskState.RUNNING,
            expect_try=try_number,
            **fields,
        )
        ended = "poke ended" if finished.exit_code == EXIT_RESCHEDULE else "ended"
        took = f"{finished.duration_s:.3f}s"
        self._note(ti["log_path"], now, f"try {try_number} {ended} after {took}: {note}")
        if changed:
            log.info(
                "event=task_ended flow=%s task=%s run=%s try=%s state=%s",
                ti["flow_id"],
                ti["task_id"],
                ti["run_id"],
                try_number,
                fields["state"].value,
            )

    def _task_spec(self, ti: dict[str, Any]) -> TaskSpec | None:
        flow = self.catalog.flows.get(ti["flow_id"])
        return flow.tasks.get(ti["task_id"]) if flow else None

    def _run_callbacks(self, ti: dict[str, Any], state: TaskState, reason: str | None) -> None:
        """Start the task's callbacks / failure mail for this state, if it has any."""
        event = EVENT_FOR_STATE.get(state)
        task = self._task_spec(ti)
        if event is not None and task is not None and wanted(task, event):
            self.callbacks.start(ti, event, reason)

    def _note(self, log_path: str | None, now: datetime, text: str) -> None:
        """A line in a task log; a log that cannot be written (disk full) never stops the daemon."""
        if not log_path:
            return
        try:
            write_note(Path(log_path), now, text)
        except OSError as exc:
            log.error("event=log_write_failed path=%s error=%r", log_path, str(exc))

    def _retry_delay(self, ti: dict[str, Any], try_number: int) -> float:
        flow = self.catalog.flows.get(ti["flow_id"])
        task = flow.tasks.get(ti["task_id"]) if flow else None
        return task.retry_delay_after(try_number) if task else 300.0

    # --- shutdown and recovery ------------------------------------------------------------
    def interrupt_all(self, reason: str) -> None:
        """Stop every running attempt; each will run again without losing a try."""
        for attempt in self.executor.running():
            self._interrupted.add(attempt.key)
            self.executor.kill(attempt.key, reason)

    def _give_back(self, ti: dict[str, Any], now: datetime, finished: Finished) -> None:
        self.store.update_ti(
            ti["run_id"],
            ti["task_id"],
            expect_state=TaskState.RUNNING,
            expect_try=ti["try_number"],
            state=TaskState.UP_FOR_RETRY,
            next_try_at=iso(now),
            max_tries=ti["max_tries"] + 1,
            end_at=iso(now),
            duration_s=finished.duration_s,
            reason=finished.reason,
        )
        self._note(
            ti["log_path"],
            now,
            f"try {ti['try_number']} {finished.reason}; it will run again (the try is not counted)",
        )
        log.info(
            "event=task_interrupted flow=%s task=%s run=%s try=%s",
            ti["flow_id"],
            ti["task_id"],
            ti["run_id"],
            ti["try_number"],
        )

    def recover_orphans(self, now: datetime) -> int:
        """After a crash: kill what the previous daemon left running and settle those tries."""
        killed = kill_orphans(self.marker_prefix)
        orphans = self.store.tis_in_states([TaskState.QUEUED, TaskState.RUNNING])
        for ti in orphans:
            pid = f" (pid {ti['pid']})" if ti["pid"] else ""
            reason = f"the daemon stopped while this try ran{pid}; the try was killed"
            self._end_attempt(ti, now, ok=False, reason=reason, duration_s=None)
        if orphans or killed:
            log.warning(
                "event=orphans_recovered task_instances=%s processes_killed=%s",
                len(orphans),
                len(killed),
            )
        return len(orphans)

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


def _exit_text(code: int) -> str:
    if code < 0:
        return f"killed by signal {signal.Signals(-code).name}"
    return f"exit code {code}"

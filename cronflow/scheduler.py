"""The scheduler: one `tick(now)` decides and acts on everything that is due at `now`.

A tick reaps ended attempts, lets the planner create and start runs, resolves the task
dependencies of the runs that changed and dispatches ready tasks, then returns when it next has
something to do. Time comes in as an argument, so tests drive it with a fake clock.

The store is the source of truth and the CLI changes it too. To keep a tick's cost proportional
to what changed (not to the size of the running runs), the scheduler caches the task instances
of running runs and writes through that cache; the store's change stamp tells it when anything
else committed a change, and then the cache is read again.
"""

from __future__ import annotations

import heapq
import logging
import signal
import socket
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta, tzinfo
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
from cronflow.planner import RunPlanner
from cronflow.states import FINISHED_TASK_STATES, RunState, TaskState
from cronflow.store import Store
from cronflow.timeparse import from_iso, iso

log = logging.getLogger("cronflow.scheduler")

IDLE_WAKE_S = 5.0  # wake at least this often: flow file changes, CLI changes without a poke
TI = dict[str, Any]

_WAITING = (TaskState.UP_FOR_RETRY, TaskState.UP_FOR_RESCHEDULE)
_FINISHED = FINISHED_TASK_STATES

_DECIDED = {
    deps.Decision.RUN: TaskState.SCHEDULED,
    deps.Decision.SKIP: TaskState.SKIPPED,
    deps.Decision.UPSTREAM_FAILED: TaskState.UPSTREAM_FAILED,
}


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
        self.planner = RunPlanner(store)
        self.stopping = False
        self.host = socket.gethostname()
        self.callbacks = CallbackRunner(settings.home)
        self._interrupted: set[tuple[int, str]] = set()
        self._runs: dict[int, dict[str, Any]] = {}  # running runs
        self._tis: dict[int, dict[str, TI]] = {}  # their task instances, written through
        self._version: tuple[int, int] | None = None
        self._dirty: dict[int, set[str] | None] = {}  # runs to resolve: changed tasks, or all
        self._timers: dict[tuple[int, str], datetime] = {}  # retries and pokes not yet due
        self._ready: list[tuple[Any, ...]] = []  # heap of scheduled TIs, best first
        self._unfinished: dict[int, int] = {}  # run -> how many of its TIs have not finished

    @property
    def catalog(self) -> Catalog:
        return self.planner.catalog

    @catalog.setter
    def catalog(self, value: Catalog) -> None:
        old = self.planner.catalog.flows
        self.planner.catalog = value
        if value.flows.keys() != old.keys() or any(value.flows[f] is not old[f] for f in old):
            for run_id in self._runs:  # a changed flow may have new tasks or rules
                self._dirty[run_id] = None

    def marker(self, run_id: int, task_id: str, try_number: int) -> str:
        """The CRONFLOW_ATTEMPT value of one attempt; all of a home's share its prefix."""
        return f"{self.marker_prefix}{run_id}|{task_id}|{try_number}"

    @property
    def marker_prefix(self) -> str:
        return f"{self.settings.home}|"

    def unmet_waits(self, flow: FlowSpec, run: dict[str, Any]) -> list[tuple[str, str]]:
        return self.planner.unmet_waits(flow, run)

    def run_startup_flows(self, now: datetime) -> int:
        return self.planner.run_startup_flows(now)

    # --- the tick -------------------------------------------------------------------------
    def tick(self, now: datetime | None = None) -> datetime:
        """Do everything due at `now`; return the instant of the next thing to do."""
        now = now or self.clock.now()
        self.reap()
        self.callbacks.reap()
        self.executor.enforce()
        wakes = [now + timedelta(seconds=IDLE_WAKE_S)]
        if self.stopping:
            running = self.store.runs_in_states([RunState.RUNNING])
        else:
            planned, running = self.planner.plan(now)
            wakes += planned
        self._refresh(running)
        self._stop_changed_attempts()
        self._resolve(now)
        if not self.stopping:
            self._dispatch()
        wakes += self._timers.values()
        deadline = self.executor.next_deadline()
        if deadline is not None:
            wakes.append(now + timedelta(seconds=max(0.0, deadline - time.monotonic())))
        return min(wakes)

    # --- the cache of running runs' task instances ----------------------------------------
    def _refresh(self, running: list[dict[str, Any]]) -> None:
        """Know the running runs; read task instances only for runs new to the cache, or for
        all when anything else changed the store."""
        self._runs = {r["run_id"]: r for r in running}
        version = self.store.change_stamp()
        if version != self._version:
            self._version = version
            self._tis.clear()
            self._timers.clear()
            self._ready.clear()
        for gone in set(self._tis) - set(self._runs):
            del self._tis[gone]
            self._unfinished.pop(gone, None)
        missing = [run_id for run_id in self._runs if run_id not in self._tis]
        if not missing:
            return
        for run_id in missing:
            self._tis[run_id] = {}
            self._dirty[run_id] = None
        for ti in self.store.tis_of_runs(missing):
            self._tis[ti["run_id"]][ti["task_id"]] = ti
            self._track(ti)
        for run_id in missing:
            self._count_unfinished(run_id, self._tis[run_id])

    def _count_unfinished(self, run_id: int, tis: Mapping[str, TI]) -> None:
        self._unfinished[run_id] = sum(ti["state"] not in _FINISHED for ti in tis.values())

    def _track(self, ti: TI) -> None:
        """Keep the ready heap and the timers in step with a TI's state."""
        key = (ti["run_id"], ti["task_id"])
        if ti["state"] == TaskState.SCHEDULED:
            self._push_ready(ti)
        if ti["state"] in _WAITING:
            self._timers[key] = from_iso(ti["next_try_at"]) or self.clock.now()
        else:
            self._timers.pop(key, None)

    def _write(
        self,
        ti: TI,
        expect: TaskState | tuple[TaskState, ...],
        expect_try: int | None = None,
        **fields: Any,
    ) -> bool:
        """Change a TI in the store (compare-and-set) and, if that worked, in the cache."""
        changed = self.store.update_ti(
            ti["run_id"], ti["task_id"], expect_state=expect, expect_try=expect_try, **fields
        )
        if not changed:
            return False
        if self._version is not None:
            # Expect exactly this one-row change; any other write, ours or another process's,
            # makes the next _refresh see a different stamp and read the cache again.
            self._version = (self._version[0], self._version[1] + 1)
        values = {k: (v.value if isinstance(v, TaskState) else v) for k, v in fields.items()}
        cached = self._tis.get(ti["run_id"], {}).get(ti["task_id"])
        was_finished = cached is not None and cached["state"] in _FINISHED
        for row in (ti, cached):
            if row is not None:
                row.update(values)
        if cached is not None:
            if was_finished != (cached["state"] in _FINISHED) and ti["run_id"] in self._unfinished:
                self._unfinished[ti["run_id"]] += 1 if was_finished else -1
            self._track(cached)
            self._mark(ti["run_id"], ti["task_id"])
        return True

    def _mark(self, run_id: int, task_id: str | None) -> None:
        """Note that a run needs resolving: for one changed task, or entirely (None)."""
        if task_id is None or self._dirty.get(run_id, ()) is None:
            self._dirty[run_id] = None
        else:
            self._dirty.setdefault(run_id, set()).add(task_id)  # type: ignore[union-attr]

    def _ti(self, run_id: int, task_id: str) -> TI | None:
        return self._tis.get(run_id, {}).get(task_id) or self.store.ti(run_id, task_id)

    def _push_ready(self, ti: TI) -> None:
        run = self._runs.get(ti["run_id"])
        logical = run["logical_date"] if run else ti["logical_date"]
        heapq.heappush(self._ready, (-ti["priority"], logical, ti["run_id"], ti["task_id"]))

    # --- dependencies -----------------------------------------------------------------------
    def _resolve(self, now: datetime) -> None:
        """Due retries and pokes become scheduled; then each run that changed is resolved,
        looking only at the tasks downstream of what changed, until nothing changes."""
        if not self.stopping:  # a stopping daemon leaves them for the next start
            for (run_id, task_id), at in list(self._timers.items()):
                ti = self._tis.get(run_id, {}).get(task_id)
                if at <= now and ti is not None and ti["state"] in _WAITING:
                    self._write(ti, TaskState(ti["state"]), state=TaskState.SCHEDULED)
        while self._dirty:
            batch, self._dirty = self._dirty, {}
            for run_id, changed in batch.items():
                run = self._runs.get(run_id)
                flow = self.catalog.flows.get(run["flow_id"]) if run else None
                if run is not None and flow is not None:
                    self._resolve_run(flow, run, changed, now)

    def _resolve_run(
        self, flow: FlowSpec, run: dict[str, Any], changed: set[str] | None, now: datetime
    ) -> None:
        tis = self._tis[run["run_id"]]
        if changed is None:
            if any(task_id not in tis for task_id in flow.tasks):  # tasks added to the file
                self.store.add_missing_tis(run, flow.raw["tasks"])
                for ti in self.store.tis_of_runs([run["run_id"]]):
                    tis.setdefault(ti["task_id"], ti)
            candidates = flow.order
            self._count_unfinished(run["run_id"], {t: tis[t] for t in flow.tasks if t in tis})
        else:
            near = set(changed)
            for task_id in changed:
                near.update(flow.downstream.get(task_id, ()))
            candidates = sorted((t for t in near if t in flow.position), key=flow.position.get)
        states = _States(tis)
        for task_id, decision in deps.resolve_run(flow.graph, states, candidates).items():
            new = _DECIDED.get(decision)
            if new is not None:
                # a fresh start (first time, or after a replay): a sensor's wait starts again
                ended = (
                    {"first_poke_at": None} if new is TaskState.SCHEDULED else {"end_at": iso(now)}
                )
                self._write(tis[task_id], TaskState.NONE, state=new, **ended)
        if self._unfinished.get(run["run_id"]):
            return  # a task has yet to finish
        outcome = deps.run_outcome(TaskState(tis[t]["state"]) for t in flow.tasks if t in tis)
        if outcome is not None:
            self.store.set_run_state(run["run_id"], outcome, now)
            del self._runs[run["run_id"]]
            log.info(
                "event=run_finished flow=%s run=%s logical_date=%s state=%s",
                flow.flow_id,
                run["run_id"],
                run["logical_date"],
                outcome.value,
            )

    # --- dispatch ---------------------------------------------------------------------------
    def _dispatch(self) -> None:
        """Start the best scheduled TIs while slots and pools allow."""
        usage = self.executor.pool_usage()
        # A TI replayed while its try ran: the old try is still being stopped; start the next
        # one once it is reaped, so the executor never holds two attempts of one TI.
        busy = {attempt.key for attempt in self.executor.running()}
        held_back = []
        while self._ready and self.executor.free_slots > 0:
            entry = heapq.heappop(self._ready)
            run_id, task_id = entry[2], entry[3]
            ti = self._tis.get(run_id, {}).get(task_id)
            if ti is None or ti["state"] != TaskState.SCHEDULED or run_id not in self._runs:
                continue  # stale entry: started, changed or gone since it was pushed
            pool = ti["pool"]
            slots = self.settings.pool_slots(pool)
            if slots is None:
                self._fail_unstartable(ti, f"pool '{pool}' is not configured in cronflow.toml")
                continue
            if (run_id, task_id) in busy or usage.get(pool, 0) >= slots:
                held_back.append(entry)
                continue
            if self._start_attempt(ti):
                usage[pool] = usage.get(pool, 0) + 1
        for entry in held_back:
            heapq.heappush(self._ready, entry)

    def _start_attempt(self, ti: TI) -> bool:
        """scheduled -> running in one write, once the process exists. The local executor starts
        processes synchronously, so it never leaves a TI queued; after a crash between the start
        and the write, the orphan is killed by its marker and the TI simply starts again."""
        now = self.clock.now()
        run = self._runs[ti["run_id"]]
        flow = self.catalog.flows.get(run["flow_id"])
        if flow is None or ti["task_id"] not in flow.tasks:
            return False
        task = flow.tasks[ti["task_id"]]
        try_number = ti["try_number"] + 1
        log_path = attempt_log_path(
            self.settings.logs_dir, flow.flow_id, task.task_id, run["logical_date"], try_number
        )
        started = {
            "try_number": try_number,
            "log_path": str(log_path),
            "host": self.host,
            "queued_at": iso(now),
            "start_at": iso(now),
            "end_at": None,
            "duration_s": None,
            "exit_code": None,
            "reason": None,
            "next_try_at": None,
        }
        try:
            attempt = self._attempt(flow, task, run, ti, try_number, log_path, now)
            pid = self.executor.start(attempt)
        except (CronflowError, OSError) as exc:
            ended, note = self._outcome(
                ti, try_number, now, ok=False, reason=f"cannot start: {exc}"
            )
            if self._write(ti, TaskState.SCHEDULED, **{**started, **ended, "duration_s": 0.0}):
                self._after_end(ti, ended, note, now, 0.0)
            return False
        if not self._write(ti, TaskState.SCHEDULED, **started, state=TaskState.RUNNING, pid=pid):
            self.executor.kill(
                (ti["run_id"], ti["task_id"]), "stopped: its state changed as it started"
            )
            return False
        log.info(
            "event=task_started flow=%s task=%s run=%s try=%s pid=%s",
            flow.flow_id,
            task.task_id,
            run["run_id"],
            try_number,
            pid,
        )
        return True

    def _attempt(
        self,
        flow: FlowSpec,
        task: TaskSpec,
        run: dict[str, Any],
        ti: TI,
        try_number: int,
        log_path: Path,
        now: datetime,
    ) -> Attempt:
        context = task_context(flow, task, run, try_number, self.store)
        launch = launch_for(task.kind, task.op, context)
        env = {**task_environment(context, str(self.settings.home)), **launch.env}
        header = (
            f"{flow.flow_id}.{task.task_id} for {context['ts']}, try {try_number} of "
            f"{ti['max_tries']}, on {self.host}"
        )
        try:
            write_note(log_path, now, header, flow.tz)
        except OSError as exc:
            raise OSError(f"cannot write the task log {log_path}: {exc.strerror or exc}") from None
        return Attempt(
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

    def _fail_unstartable(self, ti: TI, reason: str) -> None:
        now = self.clock.now()
        if self._write(
            ti, TaskState.SCHEDULED, state=TaskState.FAILED, end_at=iso(now), reason=reason
        ):
            log.error(
                "event=task_failed flow=%s task=%s run=%s reason=%r",
                ti["flow_id"],
                ti["task_id"],
                ti["run_id"],
                reason,
            )
            self._run_callbacks(ti, TaskState.FAILED, reason)

    def _stop_changed_attempts(self) -> None:
        """Kill attempts whose task instance was changed outside the daemon (mark, replay)."""
        for attempt in self.executor.running():
            ti = self._ti(attempt.run_id, attempt.task_id)
            if (
                ti is None
                or ti["state"] != TaskState.RUNNING
                or ti["try_number"] != attempt.try_number
            ):
                state = ti["state"] if ti else "deleted"
                self.executor.kill(attempt.key, f"stopped: its state was changed to {state}")

    # --- ended attempts -------------------------------------------------------------------
    def reap(self, now: datetime | None = None) -> None:
        for finished in self.executor.reap():
            self._on_finished(finished, now or self.clock.now())

    def _on_finished(self, finished: Finished, now: datetime) -> None:
        attempt = finished.attempt
        ti = self._ti(attempt.run_id, attempt.task_id)
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

    def _outcome(
        self, ti: TI, try_number: int, now: datetime, *, ok: bool, reason: str | None
    ) -> tuple[dict[str, Any], str]:
        """The fields and the log note of an ended try: success, up_for_retry or failed."""
        fields: dict[str, Any] = {"end_at": iso(now), "reason": reason, "first_poke_at": None}
        if ok:
            fields["state"], note = TaskState.SUCCESS, "success"
        elif try_number < ti["max_tries"]:
            retry_at = now + timedelta(seconds=self._retry_delay(ti, try_number))
            fields.update(state=TaskState.UP_FOR_RETRY, next_try_at=iso(retry_at))
            note = f"{reason}; retry at {iso(retry_at)} (try {try_number + 1} of {ti['max_tries']})"
        else:
            fields["state"], note = TaskState.FAILED, f"failed: {reason}"
        return fields, note

    def _end_attempt(
        self,
        ti: TI,
        now: datetime,
        *,
        ok: bool,
        reason: str | None,
        duration_s: float | None,
        exit_code: int | None = None,
    ) -> None:
        try_number = ti["try_number"]
        fields, note = self._outcome(ti, try_number, now, ok=ok, reason=reason)
        fields.update(duration_s=duration_s, exit_code=exit_code)
        changed = self._write(ti, (TaskState.RUNNING, TaskState.QUEUED), try_number, **fields)
        if not changed:  # marked or replayed meanwhile: the reason says so, no retry follows
            note = reason or "success"
        self._after_end(ti, fields if changed else None, note, now, duration_s)

    def _after_end(
        self,
        ti: TI,
        fields: dict[str, Any] | None,
        note: str,
        now: datetime,
        duration_s: float | None,
    ) -> None:
        took = f" after {duration_s:.3f}s" if duration_s is not None else ""
        self._note(ti, now, f"try {ti['try_number']} ended{took}: {note}")
        if fields is not None:
            log.info(
                "event=task_ended flow=%s task=%s run=%s try=%s state=%s reason=%r",
                ti["flow_id"],
                ti["task_id"],
                ti["run_id"],
                ti["try_number"],
                fields["state"].value,
                fields["reason"],
            )
            self._run_callbacks(ti, fields["state"], fields["reason"])

    def _end_as_asked(self, ti: TI, now: datetime, finished: Finished, task: TaskSpec) -> None:
        """A worker asked (cronflow.outcomes) for up_for_reschedule: the try is not counted and
        its next poke appends to the same log; or for skipped. The reason is the worker's."""
        try_number = ti["try_number"]
        fields: dict[str, Any] = {
            "end_at": iso(now),
            "duration_s": finished.duration_s,
            "exit_code": finished.exit_code,
        }
        ti["reason"] = (self.store.ti(ti["run_id"], ti["task_id"]) or ti)["reason"]  # the worker's
        if finished.exit_code == EXIT_RESCHEDULE:
            poke_at = now + timedelta(seconds=float(task.op.get("poke_interval_s", 60.0)))
            reason = ti["reason"] or "not satisfied yet"
            fields.update(
                state=TaskState.UP_FOR_RESCHEDULE,
                next_try_at=iso(poke_at),
                try_number=try_number - 1,
                reason=reason,
            )
            local = poke_at.astimezone(self._zone(ti)).isoformat()
            note = f"{reason}; next poke at {local} (the try is not counted)"
        else:
            reason = ti["reason"] or "skipped by the task"
            fields.update(state=TaskState.SKIPPED, reason=reason, first_poke_at=None)
            note = reason
        changed = self._write(ti, TaskState.RUNNING, try_number, **fields)
        ended = "poke ended" if finished.exit_code == EXIT_RESCHEDULE else "ended"
        self._note(
            ti,
            now,
            f"try {try_number} {ended} after {finished.duration_s:.3f}s: {note}",
        )
        if changed:
            log.info(
                "event=task_ended flow=%s task=%s run=%s try=%s state=%s",
                ti["flow_id"],
                ti["task_id"],
                ti["run_id"],
                try_number,
                fields["state"].value,
            )

    def _task_spec(self, ti: TI) -> TaskSpec | None:
        flow = self.catalog.flows.get(ti["flow_id"])
        return flow.tasks.get(ti["task_id"]) if flow else None

    def _run_callbacks(self, ti: TI, state: TaskState, reason: str | None) -> None:
        """Start the task's callbacks / failure mail for this state, if it has any."""
        event = EVENT_FOR_STATE.get(state)
        task = self._task_spec(ti)
        if event is not None and task is not None and wanted(task, event):
            self.callbacks.start(ti, event, reason)

    def _note(self, ti: TI, now: datetime, text: str) -> None:
        """A line in a task log, stamped in the flow's timezone; a log that cannot be written
        (disk full) never stops the daemon."""
        log_path = ti.get("log_path")
        if not log_path:
            return
        try:
            write_note(Path(log_path), now, text, self._zone(ti))
        except OSError as exc:
            log.error("event=log_write_failed path=%s error=%r", log_path, str(exc))

    def _zone(self, ti: TI) -> tzinfo:
        """The timezone of the task's flow, for times shown to people (UTC if it is gone)."""
        flow = self.catalog.flows.get(ti["flow_id"])
        return flow.tz if flow else UTC

    def _retry_delay(self, ti: TI, try_number: int) -> float:
        task = self._task_spec(ti)
        return task.retry_delay_after(try_number) if task else 300.0

    # --- shutdown and recovery ------------------------------------------------------------
    def interrupt_all(self, reason: str) -> None:
        """Stop every running attempt; each will run again without losing a try."""
        for attempt in self.executor.running():
            self._interrupted.add(attempt.key)
            self.executor.kill(attempt.key, reason)

    def _give_back(self, ti: TI, now: datetime, finished: Finished) -> None:
        self._write(
            ti,
            TaskState.RUNNING,
            ti["try_number"],
            state=TaskState.UP_FOR_RETRY,
            next_try_at=iso(now),
            max_tries=ti["max_tries"] + 1,
            end_at=iso(now),
            duration_s=finished.duration_s,
            reason=finished.reason,
        )
        self._note(
            ti,
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
        """After a crash: kill what the previous daemon left running and settle those tries,
        including a try whose process started just before the crash but was not yet recorded
        (its marker says which try it was)."""
        killed = kill_orphans(self.marker_prefix)
        orphans = self.store.tis_in_states([TaskState.QUEUED, TaskState.RUNNING])
        seen = {(ti["run_id"], ti["task_id"]) for ti in orphans}
        for pid, marker in killed.items():
            ti = self._unrecorded_try(pid, marker, seen, now)
            if ti is not None:
                orphans.append(ti)
                seen.add((ti["run_id"], ti["task_id"]))
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

    def _unrecorded_try(
        self, pid: int, marker: str, seen: set[tuple[int, str]], now: datetime
    ) -> TI | None:
        """Record a try that was started but not yet written as running, so it ends like any
        orphan (its log says so, and it counts as a try)."""
        try:
            run_text, task_id, try_text = marker.removeprefix(self.marker_prefix).split("|")
            run_id, try_number = int(run_text), int(try_text)
        except ValueError:
            return None
        ti = self.store.ti(run_id, task_id)
        if ti is None or (run_id, task_id) in seen or ti["try_number"] >= try_number:
            return None
        run = self.store.run(run_id)
        log_path = attempt_log_path(
            self.settings.logs_dir, ti["flow_id"], task_id, run["logical_date"], try_number
        )
        fields = {
            "try_number": try_number,
            "log_path": str(log_path),
            "pid": pid,
            "host": self.host,
            "start_at": iso(now),
        }
        if not self._write(ti, TaskState.SCHEDULED, state=TaskState.RUNNING, **fields):
            return None
        return ti


def _exit_text(code: int) -> str:
    if code < 0:
        return f"killed by signal {signal.Signals(-code).name}"
    return f"exit code {code}"


class _States(Mapping[str, TaskState]):
    """The states of a run's cached task instances, as deps.resolve_run reads them (no copy)."""

    def __init__(self, tis: dict[str, TI]) -> None:
        self._tis = tis

    def __getitem__(self, task_id: str) -> TaskState:
        return self._tis[task_id]["state"]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tis)

    def __len__(self) -> int:
        return len(self._tis)

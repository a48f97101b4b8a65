"""The scheduler: one `tick(now)` decides and acts on everything that is due at `now`.

A tick reaps ended attempts, lets the planner create and start runs, resolves the task
dependencies of the runs that changed and dispatches ready tasks, then returns when it next has
something to do. Time comes in as an argument, so tests drive it with a fake clock.

The store is the source of truth and the CLI changes it too. To keep a tick's cost proportional
to what changed (not to the size of the running runs), the scheduler caches the task instances
of running runs and writes through that cache; the store's change stamp tells it when anything
else committed a change, and then the cache is read again.

A tick is one write transaction, or two when it starts processes after deciding something:
the ends it records and the decisions it takes (runs created, task instances made ready) are
committed before the processes they call for are started, and the starts are recorded after the
processes exist, all at once (the start of a task is not delayed by one write per start). So a
process never runs for a state the store does not hold. What must follow a commit waits for
it: an attempt's exit record is discarded, and its callbacks started, only once the store holds
its outcome. A crash before the last commit loses the starts' writes and nothing else: the exit
records are still there and the processes carry their markers, and their task instances are
scheduled in the store, which is what recovery settles and adopts from.
"""

from __future__ import annotations

import heapq
import logging
import signal
import socket
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from cronflow import deps, mapping, supervisor
from cronflow.callbacks import EVENT_FOR_STATE, CallbackRunner, wanted
from cronflow.catalog import Catalog, FlowSpec, TaskSpec
from cronflow.config import Settings
from cronflow.context import task_context, task_environment
from cronflow.deadlines import DeadlineChecker
from cronflow.errors import CronflowError
from cronflow.executor import Attempt, Executor, Finished
from cronflow.logs import (
    attempt_log_dir,
    attempt_log_path,
    last_output_line,
    make_private_dirs,
    write_note,
)
from cronflow.masking import Masker, secret_values
from cronflow.ops import launch_for
from cronflow.ops.python import FOLLOWED_KEY, SHORT_CIRCUIT_KEY, ShortCircuit
from cronflow.outcomes import EXIT_RESCHEDULE, EXIT_SKIPPED, one_line
from cronflow.past import past_hold
from cronflow.planner import RunPlanner
from cronflow.states import FINISHED_TASK_STATES, RunState, TaskState
from cronflow.store import Store
from cronflow.timeparse import from_iso, iso

log = logging.getLogger("cronflow.scheduler")

_TINY = timedelta(microseconds=1)
IDLE_WAKE_S = 5.0  # wake at least this often: flow file changes, CLI changes without a poke
TI = dict[str, Any]
# a run's graph, order, positions in that order, and direct downstream tasks
_RunGraph = tuple[
    Mapping[str, tuple[list[str], str]], list[str], Mapping[str, int], Mapping[str, list[str]]
]
_Groups = dict[str, Counter[str]]  # mapped task -> how many of its instances are in each state

_WAITING = (TaskState.UP_FOR_RETRY, TaskState.UP_FOR_RESCHEDULE)
_FINISHED = FINISHED_TASK_STATES
_PAST_DONE = (TaskState.SUCCESS.value, TaskState.SKIPPED.value)

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
        self, store: Store, settings: Settings, executor: Executor, clock: Clock | None = None
    ) -> None:
        self.store = store
        self.settings = settings
        self.executor = executor
        self.clock = clock or SystemClock()
        self.planner = RunPlanner(store)
        self.stopping = False
        self.host = socket.gethostname()
        self.callbacks = CallbackRunner(settings.home)
        self.deadlines = DeadlineChecker(store, settings, self.callbacks)
        self._interrupted: set[tuple[int, str]] = set()
        self._runs: dict[int, dict[str, Any]] = {}  # running runs
        self._tis: dict[int, dict[str, TI]] = {}  # their task instances, written through
        self._version: tuple[int, int] | None = None
        self._dirty: dict[int, set[str] | None] = {}  # runs to resolve: changed tasks, or all
        self._timers: dict[tuple[int, str], datetime] = {}  # retries and pokes not yet due
        self._ready: list[tuple[Any, ...]] = []  # heap of scheduled TIs, best first
        self._unfinished: dict[int, int] = {}  # run -> how many of its TIs have not finished
        self._run_ended = False  # a run ended in this tick: the planner may start another now
        self._given_back: dict[tuple[int, str], tuple[int, str]] = {}  # key -> (try, reason)
        self._decisions: dict[tuple[int, str, int], Any] = {}  # branch decisions read, by try
        self._deferred: list[Callable[[], None]] | None = None  # until the tick commits
        self._committed: list[Callable[[], None]] = []  # deferred, and committed at mid-tick
        # runs with mapped tasks: their graph, and their instances' states counted
        self._graphs: dict[int, tuple[FlowSpec, _RunGraph, _Groups]] = {}
        self.next_fire_at: datetime | None = None  # the planner's next wake-up, for prepare()
        self.prepared_for: datetime | None = None  # the fire time prepare() last prepared

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
        """Do everything due at `now`, in one transaction (two when it starts processes after
        deciding something, see `_commit_decisions`); return the instant of the next thing to
        do."""
        self._deferred, self._committed = [], []
        try:
            with self.store.atomic():
                next_at = self._tick(now)
        except BaseException:
            self._version = None  # the cache holds writes that were rolled back
            self._deferred = None
            for action in self._committed:  # the tick's first part stays committed
                action()
            raise
        deferred, self._deferred = [*self._committed, *self._deferred], None
        for action in deferred:  # committed: now what had to wait for it
            action()
        return next_at

    def _later(self, action: Callable[[], None]) -> None:
        """Run `action` once the tick's writes are committed (at once outside a tick)."""
        if self._deferred is None:
            action()
        else:
            self._deferred.append(action)

    def _commit_decisions(self) -> None:
        """Commit what the tick decided so far (ends, runs, TIs made ready) before it starts
        processes for it: a task's process runs only once the state that started it is in the
        store. A crash before the starts are recorded then leaves scheduled TIs whose processes
        the next daemon finds and adopts (cronflow.recovery); committed together with the
        starts, they were lost (a run not even created, a TI not yet scheduled), and the tasks
        killed as strays and run again."""
        if self.store.commit_so_far() and self._deferred:
            self._committed += self._deferred
            self._deferred = []

    def _tick(self, now: datetime | None) -> datetime:
        now = now or self.clock.now()
        self._run_ended = False
        ended = self.executor.reap()
        self._dispatch_early(ended)
        self._record_ends(ended)
        self._record_given_back(now)
        self.callbacks.reap()
        self.executor.enforce()
        wakes = [now + timedelta(seconds=IDLE_WAKE_S)]
        if self.stopping:
            running = self.store.runs_in_states([RunState.RUNNING])
        else:
            planned, running = self.planner.plan(now)
            wakes += planned
            self.next_fire_at = min(planned, default=None)
            for ti in self.planner.take_gave_up():  # a wait for another flow gave up
                self._run_callbacks(ti, TaskState.FAILED, ti["reason"])
        self._refresh(running)
        self._stop_changed_attempts()
        self._resolve(now)
        if not self.stopping:
            if self._ready and self.executor.free_slots > 0:
                self._commit_decisions()
            self._dispatch()
            # "it should have run by now": after _resolve, so a run that just ended counts
            next_deadline = self.deadlines.check(now, self.catalog)
            if next_deadline is not None:
                wakes.append(next_deadline)
        wakes += self._timers.values()
        if self._dirty or self._run_ended:
            # Something changed after this tick's planning and resolving (a run ended and may
            # free a max_active_runs slot; a task failed as it started): look again at once
            # rather than at the idle wake-up.
            wakes.append(now)
        deadline = self.executor.next_deadline()
        if deadline is not None:
            wakes.append(now + timedelta(seconds=max(0.0, deadline - time.monotonic())))
        return min(wakes)

    # --- before a fire time ---------------------------------------------------------------
    def prepare(self, fire_at: datetime) -> int:
        """Shortly before a fire time, what can be done ahead of it: the log directories of
        the task instances it will create (empty, owner-only), so that at the fire time only
        the runs, the processes and one commit remain; the schedules' answers for it are
        computed and kept (timetable). Nothing a command shows: no run exists before its fire
        time. A directory may stay empty if the flow is paused meanwhile. Returns how many
        task instances were prepared; once per fire time."""
        if self.prepared_for == fire_at:
            return 0
        self.prepared_for = fire_at
        try:
            flows = {row["flow_id"]: row for row in self.store.flow_states()}
            active = self.store.active_run_counts()
        except CronflowError as exc:  # e.g. the store is locked: the fire time does it all
            log.warning("event=prepare_failed error=%r", str(exc))
            return 0
        logical_date = iso(fire_at)
        prepared = 0
        for flow in self.catalog.flows.values():
            row = flows.get(flow.flow_id)
            if row is None or row["paused"] or active.get(flow.flow_id, 0) >= flow.max_active_runs:
                continue
            if flow.schedule is None or flow.next_fires(fire_at - _TINY, 1) != [fire_at]:
                continue
            flow.schedule.prev_before(fire_at)  # the run's interval, kept for the fire time
            for task_id in flow.tasks:
                directory = attempt_log_dir(
                    self.settings.logs_dir, flow.flow_id, task_id, logical_date
                )
                try:
                    make_private_dirs(directory)
                except OSError as exc:  # said again, as the try's reason, if it persists
                    log.warning("event=prepare_failed path=%s error=%r", directory, str(exc))
                    return prepared
                prepared += 1
        return prepared

    # --- the cache of running runs' task instances ----------------------------------------
    def _refresh(self, running: list[dict[str, Any]]) -> None:
        """Know the running runs; read task instances only for runs new to the cache, or for
        all when anything else changed the store."""
        self._runs = {r["run_id"]: r for r in running}
        version = self.store.change_stamp()
        if version != self._version:
            self._version = version
            self._decisions.clear()
            self._graphs.clear()
            self._tis.clear()
            self._timers.clear()
            self._ready.clear()
        for gone in set(self._tis) - set(self._runs):
            del self._tis[gone]
            self._graphs.pop(gone, None)
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
        if cached is not None and "state" in values and cached.get("map_index") is not None:
            self._count_instance(cached, values["state"])
        for row in (ti, cached):
            if row is not None:
                row.update(values)
        if cached is not None:
            if was_finished != (cached["state"] in _FINISHED) and ti["run_id"] in self._unfinished:
                self._unfinished[ti["run_id"]] += 1 if was_finished else -1
            self._track(cached)
            self._mark(ti["run_id"], ti["task_id"])
            if values.get("state") in _PAST_DONE:
                self._mark_next_runs(cached)
        return True

    def _count_instance(self, ti: TI, state: str) -> None:
        """A mapped instance changes state: its task's count of states follows (if counted)."""
        entry = self._graphs.get(ti["run_id"])
        counter = entry[2].get(mapping.base_id(ti["task_id"])) if entry else None
        if counter is not None:
            counter[ti["state"]] -= 1
            counter[state] += 1

    def _mark_next_runs(self, ti: TI) -> None:
        """A task instance that may let later runs' depends_on_past tasks start: have them
        looked at again."""
        flow = self.catalog.flows.get(ti["flow_id"])
        waiting = flow.past_dependents.get(ti["task_id"]) if flow else None
        if not waiting:
            return
        for run_id, run in self._runs.items():
            if run["flow_id"] == ti["flow_id"] and run["logical_date"] > ti["logical_date"]:
                for task_id in waiting:
                    self._mark(run_id, task_id)

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
        graph, order, position, downstream, groups = self._graph(flow, run["run_id"])
        if changed is None:
            if any(task_id not in tis for task_id in graph):  # tasks added to the file
                self.store.add_missing_tis(run, flow.raw["tasks"])
                for ti in self.store.tis_of_runs([run["run_id"]]):
                    tis.setdefault(ti["task_id"], ti)
            candidates = order
            self._count_unfinished(run["run_id"], {t: tis[t] for t in graph if t in tis})
        else:
            near = set(changed)
            for task_id in changed:  # after an instance: what is after its mapped task
                near.update(downstream.get(mapping.base_id(task_id), ()))
            candidates = sorted((t for t in near if t in position), key=position.__getitem__)
        states = _States(tis)
        skips = self._branch_skips(flow, run["run_id"], tis) if flow.branch_tasks else None
        decided = deps.resolve_run(graph, states, candidates, skips, groups)
        for task_id, decision in decided.items():
            new = _DECIDED.get(decision)
            if new is TaskState.SCHEDULED and task_id in flow.mapped_tasks:
                self._expand(flow, run, task_id, now)  # the placeholder of a mapped task
                continue
            if (
                new is TaskState.SCHEDULED
                and task_id in flow.tasks  # a mapped instance cannot depend on its past
                and flow.tasks[task_id].depends_on_past
                and past_hold(self.store, flow, run, task_id) is not None
            ):
                continue  # looked at again when that run's instance ends (_mark_next_runs)
            if new is not None:
                # a fresh start (first time, or after a replay): a sensor's wait starts again
                ended: dict[str, Any] = (
                    {"first_poke_at": None} if new is TaskState.SCHEDULED else {"end_at": iso(now)}
                )
                if skips and task_id in skips:
                    ended["reason"] = skips[task_id]
                self._write(tis[task_id], TaskState.NONE, state=new, **ended)
        if self._unfinished.get(run["run_id"]):
            return  # a task has yet to finish
        outcome = deps.run_outcome(TaskState(tis[t]["state"]) for t in graph if t in tis)
        if outcome is not None:
            self.store.set_run_state(run["run_id"], outcome, now)
            del self._runs[run["run_id"]]
            self._run_ended = True
            log.info(
                "event=run_finished flow=%s run=%s logical_date=%s state=%s",
                flow.flow_id,
                run["run_id"],
                run["logical_date"],
                outcome.value,
            )

    def _graph(
        self, flow: FlowSpec, run_id: int
    ) -> tuple[*_RunGraph, dict[str, list[TaskState]] | None]:
        """The run's graph: the flow's own, or with its mapped tasks expanded (cached per run
        until an expansion or any outside change); and the distinct states of each expanded
        mapped task's instances (deps.resolve_run's `groups`)."""
        if not flow.mapped_tasks:
            return flow.graph, flow.order, flow.position, flow.downstream, None
        cached = self._graphs.get(run_id)
        if cached is None or cached[0] is not flow:
            tis = self._tis[run_id]
            graph, order = flow.run_graph(tis)
            downstream: dict[str, list[str]] = {t: [] for t in flow.tasks}
            for task_id, (ups, _) in graph.items():
                for up in ups:
                    downstream[up].append(task_id)
            counters: _Groups = {t: Counter() for t in flow.mapped_tasks if t not in tis}
            for task_id, ti in tis.items():
                if ti.get("map_index") is not None and task_id.endswith("]"):
                    counters.setdefault(mapping.base_id(task_id), Counter())[ti["state"]] += 1
            built = (graph, order, {t: i for i, t in enumerate(order)}, downstream)
            cached = self._graphs[run_id] = (flow, built, counters)
        groups = {
            task_id: [TaskState(s) for s, n in counter.items() if n > 0]
            for task_id, counter in cached[2].items()
            if counter
        }
        return (*cached[1], groups)

    def _expand(self, flow: FlowSpec, run: dict[str, Any], task_id: str, now: datetime) -> None:
        """A mapped task's placeholder would start: one instance per item of its upstream's
        list, in the tick's transaction; an empty list skips it, a bad one fails it."""
        run_id, over = run["run_id"], flow.tasks[task_id].map_over
        assert over is not None
        tis = self._tis[run_id]
        placeholder = tis[task_id]
        items = self.store.pull_xcom(run_id, over)
        problem = mapping.items_problem(items, over)
        if problem is not None or not items:
            state = TaskState.FAILED if problem else TaskState.SKIPPED
            reason = problem or f"skipped: '{over}' returned an empty list, nothing to map over"
            if self._write(
                placeholder, TaskState.NONE, state=state, end_at=iso(now), reason=reason
            ):
                log.info(
                    "event=task_mapped flow=%s task=%s run=%s items=0 state=%s reason=%r",
                    flow.flow_id,
                    task_id,
                    run_id,
                    state.value,
                    reason,
                )
                if problem:
                    self._run_callbacks(placeholder, state, reason)
            return
        before = self.store.change_stamp()[1]
        rows = self.store.expand_ti(run_id, task_id, len(items))
        if not rows:  # the store had it otherwise: read everything again at the next tick
            self._version = None
            return
        if self._version is not None:  # our own multi-row write: the cache holds it below
            written = self.store.change_stamp()[1] - before
            self._version = (self._version[0], self._version[1] + written)
        del tis[task_id]
        for row in rows:
            tis[row["task_id"]] = row
        self._unfinished[run_id] = self._unfinished.get(run_id, 0) + len(rows) - 1
        self._graphs.pop(run_id, None)
        self._mark(run_id, None)
        log.info(
            "event=task_mapped flow=%s task=%s run=%s items=%s",
            flow.flow_id,
            task_id,
            run_id,
            len(rows),
        )

    def _branch_skips(self, flow: FlowSpec, run_id: int, tis: Mapping[str, TI]) -> dict[str, str]:
        """What the run's succeeded Branch and ShortCircuit tasks rule out (their decision is
        an XCom the worker wrote; one marked success by hand has none, and rules out nothing)."""
        followed: dict[str, list[str]] = {}
        cut = []
        for task_id in flow.branch_tasks:
            ti = tis.get(task_id)
            if ti is None or ti["state"] != TaskState.SUCCESS:
                continue
            gate = flow.tasks[task_id].kind == ShortCircuit.kind
            key = (run_id, task_id, ti["try_number"])
            if key not in self._decisions:
                name = SHORT_CIRCUIT_KEY if gate else FOLLOWED_KEY
                self._decisions[key] = self.store.pull_xcom(run_id, task_id, name)
            decision = self._decisions[key]
            if decision is None:
                continue
            if gate and decision is False:
                cut.append(task_id)
            elif not gate:
                followed[task_id] = list(decision)
        return deps.branch_skips(flow.downstream, followed, cut)

    # --- dispatch ---------------------------------------------------------------------------
    def _dispatch_early(self, ended: list[Finished]) -> None:
        """Give the slots of the ended tries to the TIs that were ready already, before the
        tick records those ends, plans and resolves, none of which such a start waits for
        (issue 18 §3: the handoff between independent tasks). Only from a cache nobody else
        changed since it was read (a TI marked or replayed meanwhile is read again first), and
        only when no ended try can make a TI ready or give it back: a downstream task may come
        first by priority, and a TI replayed while it ran starts once its old try is recorded.
        The starts are recorded in this tick's transaction, as any."""
        if not ended or not self._ready or self.stopping:
            return
        if not all(map(self._ends_alone, ended)) or self._version != self.store.change_stamp():
            return
        self._dispatch()

    def _ends_alone(self, finished: Finished) -> bool:
        """Whether recording this end can change nothing but its own TI: the running try
        the cache knows, of a task nothing waits for (downstream, or in later runs)."""
        attempt = finished.attempt
        ti = self._tis.get(attempt.run_id, {}).get(attempt.task_id)
        flow = self.catalog.flows.get(ti["flow_id"]) if ti else None
        task_id = mapping.base_id(attempt.task_id)
        return (
            ti is not None
            and flow is not None
            and ti["state"] in (TaskState.RUNNING, TaskState.QUEUED)
            and ti["try_number"] == attempt.try_number
            and not flow.downstream.get(task_id)
            and not flow.past_dependents.get(task_id)
        )

    def _dispatch(self) -> None:
        """Start the best scheduled TIs while slots and pools allow."""
        usage = self.executor.pool_usage()
        # A TI replayed while its try ran: the old try is still being stopped; start the next
        # one once it is reaped, so the executor never holds two attempts of one TI.
        busy = {attempt.key for attempt in self.executor.running()}
        held_back = []
        started: list[_Started] = []  # recorded once all are started: processes first
        while self._ready and self.executor.free_slots > 0:
            entry = heapq.heappop(self._ready)
            run_id, task_id = entry[2], entry[3]
            ti = self._tis.get(run_id, {}).get(task_id)
            if ti is None or ti["state"] != TaskState.SCHEDULED or run_id not in self._runs:
                # stale entry: started, changed or gone since it was pushed (one started in
                # this dispatch and not yet recorded is busy: held back, then stale)
                continue
            pool = ti["pool"]
            slots = self.settings.pool_slots(pool)
            if slots is None:
                with self.attempt_step("start", run_id, task_id, ti["try_number"] + 1):
                    self._fail_unstartable(ti, f"pool '{pool}' is not configured in cronflow.toml")
                continue
            if (run_id, task_id) in busy or usage.get(pool, 0) >= slots or self._held(ti):
                held_back.append(entry)
                continue
            start = self._start_attempt(ti)
            if start is not None:
                started.append(start)
                busy.add((run_id, task_id))
                usage[pool] = usage.get(pool, 0) + 1
        for entry in held_back:
            heapq.heappush(self._ready, entry)
        for start in started:
            with self.attempt_step(
                "start", start.ti["run_id"], start.ti["task_id"], start.try_number
            ):
                self._record_start(start)

    def _held(self, ti: TI) -> bool:
        """Whether the executor cannot take this TI now (no live worker serves its queue); the
        reason it gives is shown on the scheduled TI, and queued_at says since when (`status`
        shows how long tasks have waited for a queue; the start of the try overwrites it)."""
        task = self._task_spec(ti)
        reason = self.executor.hold(task.remote_queue if task else None)
        if reason and ti["reason"] != reason:
            self._write(ti, TaskState.SCHEDULED, reason=reason, queued_at=iso(self.clock.now()))
        return reason is not None

    def _start_attempt(self, ti: TI) -> _Started | None:
        """Start one try, inside the attempt boundary (rendering, the log, the process): whatever
        goes wrong fails that try and the dispatch goes on."""
        with self.attempt_step("start", ti["run_id"], ti["task_id"], ti["try_number"] + 1):
            return self._start(ti)
        return None

    def _start(self, ti: TI) -> _Started | None:
        """Start the process of the TI's next try; `_record_start` records it (scheduled ->
        running in one write) once the dispatch has started all it can, so that no start waits
        for the writes of the ones before. All are committed with the tick. The local executor
        starts processes synchronously, so it never leaves a TI queued; after a crash before
        the commit, the next daemon finds the attempt by its marker or its exit record
        (cronflow.recovery)."""
        now = self.clock.now()
        run = self._runs[ti["run_id"]]
        flow = self.catalog.flows.get(run["flow_id"])
        task = flow.task_of(ti["task_id"]) if flow else None
        if flow is None or task is None:
            return None
        try_number = ti["try_number"] + 1
        fields = self._start_fields(ti, try_number, now)
        log_path = Path(fields["log_path"])
        try:
            attempt = self._attempt(flow, task, run, ti, try_number, log_path, now)
            fields["pid"] = self.executor.start(attempt)
        except (CronflowError, OSError) as exc:
            self._fail_start(ti, try_number, now, f"cannot start: {exc}")
            return None
        return _Started(ti, try_number, fields)

    def _record_start(self, start: _Started) -> None:
        ti = start.ti
        if not self._write(ti, TaskState.SCHEDULED, **start.fields, state=TaskState.RUNNING):
            self.executor.kill(
                (ti["run_id"], ti["task_id"]), "stopped: its state changed as it started"
            )
            return
        log.info(
            "event=task_started flow=%s task=%s run=%s try=%s pid=%s",
            ti["flow_id"],
            ti["task_id"],
            ti["run_id"],
            start.try_number,
            start.fields["pid"],
        )

    def _start_fields(self, ti: TI, try_number: int, now: datetime) -> dict[str, Any]:
        """What the write that starts a try sets (also when the try ends at once)."""
        log_path = attempt_log_path(
            self.settings.logs_dir, ti["flow_id"], ti["task_id"], ti["logical_date"], try_number
        )
        return {
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

    def _fail_start(self, ti: TI, try_number: int, now: datetime, reason: str) -> None:
        """A try that could not start ends at once, and counts: a retry follows if any is left."""
        ended, note = self._outcome(ti, try_number, now, ok=False, reason=reason)
        started = self._start_fields(ti, try_number, now)
        if self._write(ti, TaskState.SCHEDULED, **{**started, **ended, "duration_s": 0.0}):
            self._after_end(ti, ended, note, now, 0.0)

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
        map_index = ti.get("map_index") if task.map_over else None
        context = task_context(flow, task, run, try_number, self.store, map_index)
        launch = launch_for(task.kind, task.op, context)
        env = {**task_environment(context, str(self.settings.home)), **launch.env}
        header = (
            f"{flow.flow_id}.{ti['task_id']} for {context['ts']}, try {try_number} of "
            f"{ti['max_tries']}, on {self.host}"
        )
        try:
            write_note(log_path, now, header, flow.tz)
        except OSError as exc:
            raise OSError(f"cannot write the task log {log_path}: {exc.strerror or exc}") from None
        return Attempt(
            run["run_id"],
            ti["task_id"],
            try_number,
            ti["pool"],
            launch.argv,
            env,
            launch.cwd,
            log_path,
            task.timeout_s,
            self.marker(run["run_id"], ti["task_id"], try_number),
            stdin=launch.stdin,
            script=launch.script,
            keep_background=launch.keep_background,
            queue=task.remote_queue,
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
        self._record_ends(self.executor.reap(), now)

    def _record_ends(self, ended: list[Finished], now: datetime | None = None) -> None:
        for finished in ended:
            at = now or self.clock.now()
            if finished.ended_at is not None:  # it ended while no daemon watched: when it did
                at = min(at, datetime.fromtimestamp(finished.ended_at, UTC))
            attempt = finished.attempt
            with self.attempt_step("reap", attempt.run_id, attempt.task_id, attempt.try_number):
                self._note_leftovers(finished, at)
                self._on_finished(finished, at)
                # once its outcome is in the store (committed)
                self._later(partial(supervisor.discard, attempt.log_path))

    def _note_leftovers(self, finished: Finished, now: datetime) -> None:
        """What the task log, and the daemon's log, say beside the try's end."""
        attempt = finished.attempt
        ti = self._ti(attempt.run_id, attempt.task_id) or {"log_path": str(attempt.log_path)}
        for note in finished.notes:
            log.error(
                "event=task_note run=%s task=%s try=%s note=%r",
                attempt.run_id,
                attempt.task_id,
                attempt.try_number,
                note,
            )
        if finished.stopped:
            self._note(ti, now, f"stopped {_processes(finished.stopped)} the task left behind")
        if finished.kept:
            self._note(ti, now, f"{_processes(finished.kept)} left running (keep_background)")

    def _on_finished(self, finished: Finished, now: datetime) -> None:
        attempt = finished.attempt
        ti = self._ti(attempt.run_id, attempt.task_id)
        if ti is None or ti["try_number"] != attempt.try_number:
            return
        if attempt.key in self._interrupted or finished.given_back:
            self._interrupted.discard(attempt.key)
            self._give_back(ti, now, finished)
            return
        if finished.reason is None and finished.exit_code in (EXIT_RESCHEDULE, EXIT_SKIPPED):
            task = self._task_spec(ti)
            if task is not None and task.kind != "shell":  # a shell's own exit 75 is a failure
                self._end_as_asked(ti, now, finished, task)
                return
        ok = finished.exit_code == 0 and finished.reason is None
        reason = finished.reason or (None if ok else self._failure_reason(ti, finished))
        reason = "; ".join(filter(None, [reason, *finished.notes])) or None
        self._end_attempt(
            ti,
            now,
            ok=ok,
            reason=reason,
            duration_s=finished.duration_s,
            exit_code=finished.exit_code,
        )

    def _failure_reason(self, ti: TI, finished: Finished) -> str:
        """Why a try failed: a worker's own words (it writes them to the store before exiting,
        see cronflow.outcomes), else how the process ended and the last line it wrote (the log
        is masked as it is written)."""
        task = self._task_spec(ti)
        if task is not None and task.kind != "shell":
            stored = self.store.ti(ti["run_id"], ti["task_id"])
            if stored is not None and stored["reason"]:
                return str(stored["reason"])
        ended = _exit_text(finished.exit_code)
        last = last_output_line(Path(ti["log_path"])) if ti.get("log_path") else ""
        return one_line(f"{ended}: {last}") if last else ended

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
                "event=task_ended flow=%s task=%s run=%s try=%s state=%s reason=%r",
                ti["flow_id"],
                ti["task_id"],
                ti["run_id"],
                try_number,
                fields["state"].value,
                reason,
            )

    def _task_spec(self, ti: TI) -> TaskSpec | None:
        flow = self.catalog.flows.get(ti["flow_id"])
        return flow.task_of(ti["task_id"]) if flow else None

    def _run_callbacks(self, ti: TI, state: TaskState, reason: str | None) -> None:
        """Start the task's callbacks / failure mail for this state, if it has any, once the
        state is committed (a callback may read it)."""
        ended = dict(ti)  # the try that ended, even if a retry begins before the commit
        self._later(lambda: self._start_callbacks(ended, state, reason))

    def _start_callbacks(self, ti: TI, state: TaskState, reason: str | None) -> None:
        with self.attempt_step("callback", ti["run_id"], ti["task_id"], ti["try_number"]):
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
        flow = self.catalog.flows.get(ti.get("flow_id", ""))
        return flow.tz if flow else UTC

    def _retry_delay(self, ti: TI, try_number: int) -> float:
        task = self._task_spec(ti)
        return task.retry_delay_after(try_number) if task else 300.0

    # --- the attempt boundary -------------------------------------------------------------
    # Each per-attempt step (start: render, log, spawn, write; reap: record the end; callback;
    # recover) runs inside `_attempt_step`. Whatever one of them raises stays with that attempt:
    # it is logged with its traceback (event=task_error), the try is failed with the reason in
    # words, and the tick goes on. One bad value once killed the daemon at every start.

    @contextmanager
    def attempt_step(self, step: str, run_id: int, task_id: str, try_number: int) -> Iterator[None]:
        try:
            yield
        except Exception as exc:  # the boundary: no task may stop the daemon
            self._contain(step, (run_id, task_id), try_number, exc)

    def _contain(self, step: str, key: tuple[int, str], try_number: int, exc: Exception) -> None:
        """Log the error, stop the try's process if it runs, and fail the try. If even that
        cannot be recorded (e.g. the store is locked), the try is given back: a try not yet
        recorded as started stays scheduled and starts again at a later tick; a running one is
        recorded as given back (not counted) once the store takes it."""
        mask = self._masker()
        error = mask(_error_text(exc))
        cached = self._tis.get(key[0], {}).get(key[1]) or {}
        log.error(
            "event=task_error step=%s flow=%s task=%s run=%s try=%s error=%r traceback=%r",
            step,
            cached.get("flow_id", "?"),
            key[1],
            key[0],
            try_number,
            error,
            mask(_traceback_text(exc)),
        )
        reason = f"cronflow could not {_STEP_WORDS[step]}: {error} (see the daemon's log)"
        try:
            self._fail_try(key, try_number, reason)
        except Exception as again:  # the same boundary: give the try back
            log.error(
                "event=task_error_unrecorded step=%s task=%s run=%s try=%s error=%r",
                step,
                key[1],
                key[0],
                try_number,
                mask(_error_text(again)),
            )
            self._given_back[key] = (try_number, reason)
            self._version = None  # read everything again at the next tick

    def _fail_try(self, key: tuple[int, str], try_number: int, reason: str) -> None:
        """End a try that went wrong inside the daemon as failed, wherever it was."""
        now = self.clock.now()
        if any(a.key == key and a.try_number == try_number for a in self.executor.running()):
            self.executor.kill(key, reason)  # its end, when reaped, finds the try recorded
        ti = self._ti(*key)
        if ti is None:
            return
        if ti["state"] == TaskState.SCHEDULED and ti["try_number"] == try_number - 1:
            self._fail_start(ti, try_number, now, reason)
        elif (
            ti["state"] in (TaskState.RUNNING, TaskState.QUEUED) and ti["try_number"] == try_number
        ):
            self._end_attempt(ti, now, ok=False, reason=reason, duration_s=None)
        else:  # its outcome was recorded before the error (e.g. in a callback): it stands
            self._note(ti, now, reason)

    def _record_given_back(self, now: datetime) -> None:
        """Tries given back by `_contain`: a running one ends as given back (not counted, it
        runs again) once the store takes the write; a scheduled one simply starts again."""
        for key, (try_number, reason) in list(self._given_back.items()):
            try:
                ti = self._ti(*key)
                if (
                    ti is not None
                    and ti["state"] in (TaskState.RUNNING, TaskState.QUEUED)
                    and ti["try_number"] == try_number
                ):
                    self._return_try(ti, now, f"{reason}; given back", None)
            except Exception:  # still not writable: try again at the next tick
                continue
            del self._given_back[key]

    def _masker(self) -> Callable[[str], str]:
        """Secret values out of what the daemon logs; if they cannot be read, only the error's
        type is shown (the message could hold a secret)."""
        try:
            masker = Masker(secret_values(self.store, self.settings))
        except Exception:  # the store itself may be what failed
            return lambda text: text.split(":", 1)[0] + ": (message hidden: secrets unreadable)"
        return masker.mask

    # --- shutdown and recovery ------------------------------------------------------------
    def interrupt_all(self, reason: str) -> None:
        """Stop every running attempt; each will run again without losing a try."""
        for attempt in self.executor.running():
            self._interrupted.add(attempt.key)
            self.executor.kill(attempt.key, reason)

    def _give_back(self, ti: TI, now: datetime, finished: Finished) -> None:
        self._return_try(ti, now, finished.reason, finished.duration_s)

    def _return_try(
        self, ti: TI, now: datetime, reason: str | None, duration_s: float | None
    ) -> None:
        """A running try ends without counting: it runs again at once."""
        self._write(
            ti,
            TaskState.RUNNING,
            ti["try_number"],
            state=TaskState.UP_FOR_RETRY,
            next_try_at=iso(now),
            max_tries=ti["max_tries"] + 1,
            end_at=iso(now),
            duration_s=duration_s,
            reason=reason,
        )
        self._note(
            ti,
            now,
            f"try {ti['try_number']} {reason}; it will run again (the try is not counted)",
        )
        log.info(
            "event=task_interrupted flow=%s task=%s run=%s try=%s",
            ti["flow_id"],
            ti["task_id"],
            ti["run_id"],
            ti["try_number"],
        )


@dataclass
class _Started:
    """A try whose process was started and whose start is not recorded yet."""

    ti: TI
    try_number: int
    fields: dict[str, Any]  # what the write that records the start sets


def _processes(count: int) -> str:
    return f"{count} process" if count == 1 else f"{count} processes"


_STEP_WORDS = {
    "start": "start this try",
    "reap": "record the end of this try",
    "callback": "start the callbacks of this try",
    "recover": "settle this try after a restart",
}


def _error_text(exc: BaseException) -> str:
    """An exception as one line of text the store and a log can hold (no NUL, no surrogate)."""
    try:
        text = f"{type(exc).__name__}: {exc}"
    except Exception:  # an exception whose str() fails is still reported
        text = type(exc).__name__
    return _plain(text.replace("\n", " "))[:500]


def _traceback_text(exc: BaseException) -> str:
    try:
        return _plain("".join(traceback.format_exception(exc)))
    except Exception:
        return _error_text(exc)


def _plain(text: str) -> str:
    return text.replace("\0", "\\x00").encode("utf-8", "backslashreplace").decode()


def _exit_text(code: int | None) -> str:
    if code is None:
        return "no exit status"
    if code < 0:
        return f"killed by signal {_signal_name(-code)}"
    if 128 < code <= 128 + signal.SIGRTMAX:
        # The supervisor is a shell: a task killed by signal N reaches it as 128 + N, which a
        # program's own exit(128 + N) cannot be told from; the shell's convention, named.
        return f"exit code {code} ({_signal_name(code - 128)})"
    return f"exit code {code}"


def _signal_name(number: int) -> str:
    """SIGTERM, SIGRTMIN+1 (real-time signals have no name of their own), else the number."""
    try:
        return signal.Signals(number).name
    except ValueError:
        if signal.SIGRTMIN < number < signal.SIGRTMAX:
            return f"SIGRTMIN+{number - signal.SIGRTMIN}"
        return str(number)


class _States(Mapping[str, TaskState]):
    """The states of a run's cached task instances, as deps.resolve_run reads them (no copy)."""

    def __init__(self, tis: dict[str, TI]) -> None:
        self._tis = tis

    def __getitem__(self, task_id: str) -> TaskState:
        state: TaskState = self._tis[task_id]["state"]
        return state

    def __iter__(self) -> Iterator[str]:
        return iter(self._tis)

    def __len__(self) -> int:
        return len(self._tis)

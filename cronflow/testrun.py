"""`cronflow test`: run a flow, or one of its tasks, now and in the foreground, without the
daemon: how a flow's author tries it before deploying it.

The home's schedule and history are not touched: the run lives in a scratch home (a temporary
directory with its own store and logs) that holds a copy of the flow's spec and of the home's
variables and connections; XComs of other runs are read from the home's store, as under the
daemon. Tasks run one at a time in dependency order, following their trigger
rules, with the same context, environment and launch as under the daemon and through the same
executor (so a timeout kills the whole process group); no retries. Output is streamed as the
task writes it.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cronflow import control, deps, supervisor
from cronflow.catalog import BRANCH_KINDS, FlowSpec
from cronflow.context import task_context, task_environment
from cronflow.errors import CronflowError
from cronflow.executor import Attempt, LocalExecutor
from cronflow.logs import attempt_log_path
from cronflow.mapping import instance_id, items_problem, split_id, summary_state
from cronflow.ops import launch_for
from cronflow.ops.python import FOLLOWED_KEY, SHORT_CIRCUIT_KEY, ShortCircuit
from cronflow.states import RunState, TaskState
from cronflow.store import Store
from cronflow.xcom import XCOM_HISTORY_ENV

POLL_S = 0.05


@dataclass(frozen=True)
class TaskResult:
    task_id: str
    state: TaskState
    duration_s: float | None = None
    reason: str | None = None


OutputSink = Callable[[str, str], None]  # (task id, one line of output)
ResultSink = Callable[[TaskResult], None]


def run_test(
    store: Store,
    flow: FlowSpec,
    logical_at: datetime,
    task_id: str | None,
    on_output: OutputSink,
    on_result: ResultSink,
    umask: int = 0o022,
) -> RunState:
    """Run the flow (or only `task_id`, whatever its upstreams) and return the outcome; its
    tasks start with `umask` (cronflow.toml's task_umask), as the daemon's do."""
    if task_id is not None:
        flow.task(task_id)
    with tempfile.TemporaryDirectory(prefix="cronflow-test-") as tmp:
        home = Path(tmp)
        scratch = Store(home / "cronflow.db")
        try:
            store.copy_variables_and_connections(scratch)
            scratch.save_flow_file(flow.path, (0, 0, 0), None, [flow.raw])
            run_id = control.trigger(scratch, flow, logical_at)
            session = _Session(scratch, flow, scratch.run(run_id), home, on_output, umask)
            session.history = store
            states = session.run_all([task_id] if task_id else None, on_result)
        finally:
            scratch.close()
    outcome = deps.run_outcome(states.values())
    return outcome or RunState.FAILED


class _Session:
    def __init__(
        self,
        store: Store,
        flow: FlowSpec,
        run: dict[str, Any],
        home: Path,
        on_output: OutputSink,
        umask: int,
    ) -> None:
        self.store, self.flow, self.run, self.home = store, flow, run, home
        self.on_output = on_output
        self.umask = umask  # what its tasks start with
        self.history = store  # where XComs of other runs are read: the home's store

    def run_all(self, only: list[str] | None, on_result: ResultSink) -> dict[str, TaskState]:
        order = only or deps.topological_order(
            {t.task_id: t.upstream for t in self.flow.tasks.values()}
        )
        states: dict[str, TaskState] = {}
        each: dict[str, list[TaskState]] = {}  # a mapped task: the states of its instances
        followed: dict[str, list[str]] = {}  # what Branch and ShortCircuit tasks decided
        cut: list[str] = []
        for task_id in order:
            task = self.flow.tasks[task_id]
            decision = deps.Decision.RUN
            skips = deps.branch_skips(self.flow.downstream, followed, cut)
            if only is None and task_id in skips:
                decision = deps.Decision.SKIP
            elif only is None:
                ups = [s for u in task.upstream for s in each.get(u, [states[u]])]
                decision = deps.decide(task.trigger_rule, ups)
            if decision is deps.Decision.RUN and task.map_over:
                results = self.run_mapped(task_id, task.map_over)
                for result in results[:-1]:
                    on_result(result)
                result = results[-1]
                each[task_id] = [r.state for r in results]
                states[task_id] = TaskState(summary_state(each[task_id]))
                on_result(result)
                continue
            if decision is deps.Decision.RUN:
                result = self.run_one(task_id)
            elif decision is deps.Decision.SKIP:
                reason = skips.get(task_id, task.trigger_rule)
                result = TaskResult(task_id, TaskState.SKIPPED, reason=reason)
            else:
                result = TaskResult(task_id, TaskState.UPSTREAM_FAILED, reason=task.trigger_rule)
            states[task_id] = result.state
            if result.state is TaskState.SUCCESS and task.kind in BRANCH_KINDS:
                self._note_decision(task_id, task.kind, followed, cut)
            on_result(result)
        return states

    def _note_decision(
        self, task_id: str, kind: str, followed: dict[str, list[str]], cut: list[str]
    ) -> None:
        if kind == ShortCircuit.kind:
            if self.store.pull_xcom(self.run["run_id"], task_id, SHORT_CIRCUIT_KEY) is False:
                cut.append(task_id)
        else:
            chosen = self.store.pull_xcom(self.run["run_id"], task_id, FOLLOWED_KEY)
            if chosen is not None:
                followed[task_id] = chosen

    def run_mapped(self, task_id: str, over: str) -> list[TaskResult]:
        """One attempt per item of the list `over` returned, as the daemon maps it."""
        items = self.store.pull_xcom(self.run["run_id"], over)
        problem = items_problem(items, over)
        if problem:
            return [TaskResult(task_id, TaskState.FAILED, 0.0, problem)]
        if not items:
            reason = f"skipped: '{over}' returned an empty list, nothing to map over"
            return [TaskResult(task_id, TaskState.SKIPPED, reason=reason)]
        return [self.run_one(instance_id(task_id, i)) for i in range(len(items))]

    def run_one(self, task_id: str) -> TaskResult:
        task = self.flow.task(task_id)
        map_index = split_id(task_id)[1]
        try:
            context = task_context(self.flow, task, self.run, 1, self.store, map_index)
            context["xcom"].history = self.history
            launch = launch_for(task.kind, task.op, context)
        except CronflowError as exc:
            return TaskResult(task_id, TaskState.FAILED, 0.0, f"cannot start: {exc}")
        log_path = attempt_log_path(
            self.home / "logs", self.flow.flow_id, task_id, self.run["logical_date"], 1
        )
        attempt = Attempt(
            self.run["run_id"],
            task_id,
            1,
            task.pool,
            launch.argv,
            {
                **task_environment(context, str(self.home)),
                XCOM_HISTORY_ENV: str(self.history.path),
                **launch.env,
            },
            launch.cwd,
            log_path,
            task.timeout_s,
            f"{self.home}|{self.run['run_id']}|{task_id}|1",
            stdin=launch.stdin,
            script=launch.script,
            keep_background=launch.keep_background,
        )
        executor = LocalExecutor(1, umask=self.umask)
        try:
            try:
                executor.start(attempt)
            except OSError as exc:
                return TaskResult(task_id, TaskState.FAILED, 0.0, f"cannot start: {exc}")
            return self._stream(executor, attempt)
        finally:
            supervisor.discard(log_path)  # the command file may hold secrets

    def _stream(self, executor: LocalExecutor, attempt: Attempt) -> TaskResult:
        """Pass the log's lines on as they come, until the attempt ends."""
        offset, partial = 0, b""
        try:
            while True:
                executor.enforce()
                finished = executor.reap()
                with open(attempt.log_path, "rb") as handle:
                    handle.seek(offset)
                    chunk = handle.read()
                offset += len(chunk)
                *lines, partial = (partial + chunk).split(b"\n")
                for line in lines:
                    self.on_output(attempt.task_id, line.decode(errors="replace"))
                if finished:
                    break
                time.sleep(POLL_S)
        except KeyboardInterrupt:
            executor.kill(attempt.key, "interrupted")
            while not executor.reap():
                executor.enforce()
                time.sleep(POLL_S)
            raise
        if partial:
            self.on_output(attempt.task_id, partial.decode(errors="replace"))
        end = finished[0]
        ok = end.exit_code == 0 and end.reason is None
        reason = None if ok else end.reason or _exit_text(end.exit_code)
        state = TaskState.SUCCESS if ok else TaskState.FAILED
        return TaskResult(attempt.task_id, state, round(end.duration_s, 3), reason)


def _exit_text(code: int | None) -> str:
    if code is None:
        return "no exit status"
    return f"killed by signal {-code}" if code < 0 else f"exit code {code}"

"""One task never stops the daemon: values no process can take, tasks that die in odd ways,
and a fault in any per-attempt step (render, start, reap, record, callback) fail that attempt,
with the reason in words, and the loop goes on. Against the real daemon where the fault is real;
with the scheduler in-process (a fake clock) where a fault has to be injected into one step."""

from __future__ import annotations

import json
import signal
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import DaemonProcess, FakeClock, cli, is_alive, utc, wait_for

from cronflow import catalog, control
from cronflow.callbacks import CallbackRunner
from cronflow.config import load_settings
from cronflow.daemon import poke
from cronflow.executor import Attempt, Finished, LocalExecutor
from cronflow.scheduler import Scheduler
from cronflow.states import RunState, TaskState
from cronflow.store import Store

ECHO_FLOW = """
from cronflow import Flow, Shell
with Flow("echo"):
    Shell("arg", "echo {{ params.a }}")
    Shell("env", "echo $A", env={"A": "{{ params.a }}"})
"""


def tis(home: Path, flow: str) -> dict[str, dict]:
    result = cli(home, "tasks", flow, "--json")
    assert result.returncode == 0, result.stderr
    return {row["task"]: row for row in json.loads(result.stdout)}


def trigger_unchecked(home: Path, flow_id: str, conf: dict) -> int:
    """A run whose conf did not pass the CLI's checks: what a TriggerFlow in a flow file, or a
    cronflow older than these checks, can leave in the store."""
    settings = load_settings(home)
    store = Store(settings.db_path)
    try:
        flow = catalog.sync(store, settings).get(flow_id)
        return control.trigger(store, flow, datetime.now(UTC).replace(microsecond=0), conf)
    finally:
        store.close()


def wait_until_ended(process: DaemonProcess, home: Path, flow: str) -> dict[str, dict]:
    """The flow's latest run's tasks once every one has ended; fails at once if the daemon died."""
    ended = {"success", "failed", "upstream_failed", "skipped"}

    def done() -> bool:
        if process.proc.poll() is not None:
            return True
        return all(r["state"] in ended for r in tis(home, flow).values())

    wait_for(done, what=f"the run of {flow} to end")
    assert process.proc.poll() is None, process.output()[-3000:]
    return tis(home, flow)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("value", "shown"),
    [("\ud800", "a lone surrogate (U+D800)"), ("a\x00b", "a NUL character (U+0000)")],
)
def test_a_value_no_process_can_take_fails_the_task_not_the_daemon(
    home, daemon, write_flow, value, shown
):
    write_flow("echo", ECHO_FLOW)
    process = daemon()
    trigger_unchecked(home, "echo", {"a": value})
    poke(home)
    rows = wait_until_ended(process, home, "echo")
    assert {t: r["state"] for t, r in rows.items()} == {"arg": "failed", "env": "failed"}
    assert rows["arg"]["reason"].startswith(f"cannot start: the command holds {shown}")
    assert rows["env"]["reason"].startswith(f"cannot start: environment variable A holds {shown}")
    assert "Traceback" not in process.output()
    assert "event=task_error" not in process.output()  # the guard, not the last-resort boundary
    assert cli(home, "trigger", "echo", "--conf", '{"a": "fine"}', "--wait").returncode == 0


@pytest.mark.slow
def test_a_run_left_by_a_daemon_that_died_on_it_is_settled_at_the_next_start(home, write_flow):
    """What a daemon that died in posix_spawn left behind: the run running, its tasks
    scheduled; before the fix every start died on it again (a crash loop under systemd)."""
    write_flow("echo", ECHO_FLOW)
    run_id = trigger_unchecked(home, "echo", {"a": "\udfff"})
    store = Store(home / "cronflow.db")
    store.set_run_state(run_id, RunState.RUNNING, datetime.now(UTC))
    for task_id in ("arg", "env"):
        store.update_ti(run_id, task_id, state=TaskState.SCHEDULED)
    store.close()
    for _ in range(2):  # and the start after that one is just as calm
        process = DaemonProcess(home).start()
        try:
            rows = wait_until_ended(process, home, "echo")
            assert {r["state"] for r in rows.values()} == {"failed"}
            wait_for(
                lambda: (
                    json.loads(cli(home, "runs", "echo", "--json").stdout)[0]["state"] == "failed"
                ),
                what="the run to end failed",
            )
        finally:
            process.stop()
        assert process.proc.returncode == 0, process.output()[-3000:]


@pytest.mark.slow
def test_a_task_killed_by_a_realtime_signal_is_a_failure_with_its_name(home, daemon, write_flow):
    write_flow(
        "rt",
        """
        from cronflow import Flow, Shell
        with Flow("rt"):
            Shell("t", "kill -s RTMIN+1 $$")
    """,
    )
    process = daemon()
    assert cli(home, "trigger", "rt").returncode == 0
    rows = wait_until_ended(process, home, "rt")
    assert rows["t"]["state"] == "failed"
    # the supervisor is a shell: it sees the death as 128 + N and says which signal that is
    assert rows["t"]["reason"].startswith(f"exit code {128 + signal.SIGRTMIN + 1} (SIGRTMIN+1)")


# --- the boundary itself: a fault injected into one step of one attempt ---------------------
# The parts are the real ones (executor, store, callback runner, processes); each subclass below
# raises on purpose in one step, for one task only, as an unknown bug would.


class FaultyExecutor(LocalExecutor):
    """The local executor, raising for task `task_id` at `where`: before the process exists
    ("spawn"), once it runs ("spawned"), or by handing back an end the scheduler cannot read
    ("reap")."""

    def __init__(self, parallelism: int, where: str, task_id: str) -> None:
        super().__init__(parallelism)
        self.where, self.task_id = where, task_id
        self.pids: list[int] = []

    def start(self, attempt: Attempt) -> int:
        if (self.where, attempt.task_id) == ("spawn", self.task_id):
            what = attempt.script if attempt.script is not None else attempt.argv[-1]
            raise RuntimeError(f"injected fault before the spawn of {what!r}")
        pid = super().start(attempt)
        self.pids.append(pid)
        if (self.where, attempt.task_id) == ("spawned", self.task_id):
            raise RuntimeError("injected fault after the spawn")
        return pid

    def reap(self) -> list[Finished]:
        ended = super().reap()
        for finished in ended:
            if (self.where, finished.attempt.task_id) == ("reap", self.task_id):
                finished.exit_code = "garbled"  # type: ignore[assignment]
        return ended


class LockedStore(Store):
    """The store, refusing to record the end of task `task_id` while `locked` (as SQLite does
    past its busy timeout when another process holds the write lock)."""

    def __init__(self, path: Path, task_id: str) -> None:
        super().__init__(path)
        self.task_id, self.locked = task_id, True

    def update_ti(self, run_id: int, task_id: str, **kwargs: Any) -> bool:
        ending = kwargs.get("state") not in (None, TaskState.RUNNING, TaskState.SCHEDULED)
        if self.locked and task_id == self.task_id and ending:
            raise sqlite3.OperationalError("database is locked")
        return super().update_ti(run_id, task_id, **kwargs)


class FaultyCallbacks(CallbackRunner):
    def start(self, ti: Any, event: str, reason: str | None) -> None:
        raise RuntimeError(f"injected fault in the {event} callback")


TWO_TASKS = """
from cronflow import Flow, Shell
def alert(context):
    pass
with Flow("two", defaults={"retry_delay": 0}):
    Shell("bad", "sleep 30", retries=RETRIES, on_failure=alert)
    Shell("fine", "echo fine")
"""


class Boundary:
    """A scheduler on a fake clock with real task processes; tick() must never raise."""

    def __init__(
        self,
        home: Path,
        write_flow: Any,
        *,
        command: str = "true",
        retries: int = 0,
        executor: LocalExecutor | None = None,
        store: Store | None = None,
    ) -> None:
        write_flow("two", TWO_TASKS.replace("sleep 30", command).replace("RETRIES", str(retries)))
        self.settings = load_settings(home)
        self.store = store or Store(self.settings.db_path)
        self.clock = FakeClock(utc(2024, 3, 1, 12))
        self.scheduler = Scheduler(
            self.store, self.settings, executor or LocalExecutor(4), self.clock
        )
        self.scheduler.catalog = catalog.sync(self.store, self.settings)
        self.run_id = control.trigger(
            self.store, self.scheduler.catalog.get("two"), utc(2024, 3, 1)
        )

    def settle(self) -> None:
        def idle() -> bool:
            self.scheduler.tick(self.clock.now())
            busy = self.store.tis_in_states(
                [TaskState.SCHEDULED, TaskState.QUEUED, TaskState.RUNNING, TaskState.UP_FOR_RETRY]
            )
            return not busy and not self.scheduler.executor.running()

        wait_for(idle, what="the scheduler to settle")

    def ti(self, task_id: str) -> dict[str, Any]:
        ti = Store(self.settings.db_path).ti(self.run_id, task_id)
        assert ti is not None
        return ti

    def log(self, task_id: str) -> str:
        return Path(self.ti(task_id)["log_path"]).read_text()


def task_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "event=task_error " in r.getMessage()]


@pytest.mark.parametrize(
    ("where", "error"),
    [
        ("spawn", "RuntimeError: injected fault before the spawn of 'true'"),
        ("spawned", "RuntimeError: injected fault after the spawn"),
        ("reap", "TypeError: '<' not supported between instances of 'str' and 'int'"),
    ],
)
def test_a_fault_in_one_attempts_start_or_reap_fails_that_try_only(
    home, write_flow, caplog, where, error
):
    executor = FaultyExecutor(4, where, "bad")
    h = Boundary(home, write_flow, command="sleep 30" if where == "spawned" else "true",
                 executor=executor)  # fmt: skip
    h.settle()
    bad = h.ti("bad")
    step = "record the end of" if where == "reap" else "start"
    assert (bad["state"], bad["try_number"]) == ("failed", 1)
    assert bad["reason"] == f"cronflow could not {step} this try: {error} (see the daemon's log)"
    assert h.ti("fine")["state"] == "success"
    assert f"failed: {bad['reason']}" in h.log("bad")
    [logged] = task_errors(caplog)
    assert logged.startswith(f"event=task_error step={'reap' if where == 'reap' else 'start'} ")
    assert "flow=two task=bad run=1 try=1" in logged and "Traceback (most recent call" in logged
    assert all(not is_alive(pid) for pid in executor.pids)  # a started process is stopped


def test_a_value_that_breaks_rendering_fails_that_try_with_a_retry(home, write_flow, caplog):
    """A conf that is not a JSON object (a TriggerFlow or a hand-written row can store one):
    building the context raises TypeError; the try fails and its retry follows."""
    h = Boundary(home, write_flow, retries=1)
    h.store.db.execute("UPDATE runs SET conf = '[1, 2]' WHERE run_id = ?", [h.run_id])
    h.settle()
    bad = h.ti("bad")
    assert (bad["state"], bad["try_number"]) == ("failed", 2)
    assert bad["reason"].startswith("cronflow could not start this try: TypeError: ")
    first_try = Path(bad["log_path"].replace("try-2", "try-1")).read_text()
    assert "try 1 ended after 0.000s: cronflow could not start this try: TypeError: " in first_try
    assert "; retry at 2024-03-01T12:00:00+00:00 (try 2 of 2)" in first_try
    errors = [e for e in task_errors(caplog) if " task=bad " in e]
    assert [e.split(" try=")[1][0] for e in errors] == ["1", "2"]  # the try and its retry
    assert h.ti("fine")["state"] == "failed"  # it renders the same conf: its reason says so too


def test_a_fault_in_a_callback_leaves_the_recorded_outcome_and_says_so(home, write_flow, caplog):
    h = Boundary(home, write_flow, command="exit 3")
    h.scheduler.callbacks = FaultyCallbacks(home)
    h.settle()
    bad = h.ti("bad")
    assert (bad["state"], bad["reason"]) == ("failed", "exit code 3")
    assert (
        "cronflow could not start the callbacks of this try: RuntimeError: injected fault in the "
        "on_failure callback" in h.log("bad")
    )
    assert h.ti("fine")["state"] == "success"
    assert task_errors(caplog)[0].startswith("event=task_error step=callback flow=two task=bad")


def test_a_try_whose_end_cannot_be_recorded_is_given_back_once_the_store_takes_it(
    home, write_flow, caplog
):
    store = LockedStore(load_settings(home).db_path, "bad")
    h = Boundary(home, write_flow, store=store)
    wait_for(
        lambda: h.scheduler.tick(h.clock.now()) and h.scheduler._given_back,
        what="the end of bad to be given back",
    )
    assert h.ti("bad")["state"] == "running"  # nothing could be written
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("event=task_error step=reap flow=two task=bad") for m in messages)
    assert any(m.startswith("event=task_error_unrecorded step=reap task=bad") for m in messages)
    store.locked = False
    h.settle()
    bad = h.ti("bad")
    # given back: not counted, so it ran again, and that try succeeded
    assert (bad["state"], bad["try_number"], bad["max_tries"]) == ("success", 2, 2)
    assert (
        "given back; it will run again (the try is not counted)"
        in Path(bad["log_path"].replace("try-2", "try-1")).read_text()
    )


def test_a_secret_in_the_error_stays_out_of_the_daemon_log_and_the_reason(home, write_flow, caplog):
    Store(load_settings(home).db_path).set_variable("token", "s3cr3t-value", is_secret=True)
    h = Boundary(
        home, write_flow, command="echo {{ var.token }}", executor=FaultyExecutor(4, "spawn", "bad")
    )
    h.settle()
    reason = h.ti("bad")["reason"]
    assert "injected fault before the spawn of" in reason and "***" in reason
    [logged] = task_errors(caplog)
    assert "***" in logged
    assert "s3cr3t-value" not in reason + logged + h.log("bad")

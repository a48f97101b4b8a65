"""Helpers for the operator tests: run a flow's tasks for real (worker processes, the real
scheduler) on a temp home, with time injected."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from conftest import FakeClock, utc, wait_for

from cronflow import catalog, control
from cronflow.config import Settings, load_settings
from cronflow.executor import LocalExecutor
from cronflow.scheduler import Scheduler
from cronflow.states import RunState, TaskState
from cronflow.store import Store


class Runner:
    """A scheduler on a fake clock over a home; tasks are real processes."""

    def __init__(self, home: Path, start: datetime | None = None) -> None:
        self.home = home
        self.settings: Settings = load_settings(home)
        self.store = Store(self.settings.db_path)
        self.clock = FakeClock(start or utc(2024, 3, 2, 12))
        self.scheduler = Scheduler(
            self.store, self.settings, LocalExecutor(self.settings.parallelism), self.clock
        )
        self.sync()

    def sync(self) -> None:
        self.scheduler.catalog = catalog.sync(self.store, self.settings)

    def trigger(self, flow_id: str, date: str = "2024-03-01", conf: dict | None = None) -> int:
        flow = self.scheduler.catalog.get(flow_id)
        logical_at = control.logical_date_for_trigger(flow, date, self.clock.now())
        return control.trigger(self.store, flow, logical_at, conf)

    def settle(self) -> None:
        """Tick (clock still) until no task runs or waits for a slot."""

        def idle() -> bool:
            self.scheduler.tick(self.clock.now())
            busy = self.store.tis_in_states(
                [TaskState.SCHEDULED, TaskState.QUEUED, TaskState.RUNNING]
            )
            return not busy and not self.scheduler.executor.running()

        wait_for(idle, what="the scheduler to settle")

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds=seconds)
        self.settle()

    def run(self, flow_id: str, date: str = "2024-03-01", conf: dict | None = None) -> int:
        run_id = self.trigger(flow_id, date, conf)
        self.settle()
        return run_id

    def ti(self, run_id: int, task_id: str) -> dict[str, Any]:
        ti = self.store.ti(run_id, task_id)
        assert ti is not None, task_id
        return ti

    def state(self, run_id: int, task_id: str) -> str:
        return self.ti(run_id, task_id)["state"]

    def states(self, run_id: int) -> dict[str, str]:
        return {t["task_id"]: t["state"] for t in self.store.tis_of_runs([run_id])}

    def run_state(self, run_id: int) -> RunState:
        return RunState(self.store.run(run_id)["state"])

    def log(self, run_id: int, task_id: str) -> str:
        path = self.ti(run_id, task_id)["log_path"]
        assert path, f"{task_id} has no log"
        return Path(path).read_text(errors="replace")

    def xcom(self, run_id: int, task_id: str, key: str = "return_value") -> Any:
        return self.store.pull_xcom(run_id, task_id, key)

    def wait_callbacks(self) -> None:
        """Until every callback process the scheduler started has ended (and was reaped)."""

        def done() -> bool:
            self.scheduler.callbacks.reap()
            return self.scheduler.callbacks.running() == 0

        wait_for(done, what="the callbacks to end")

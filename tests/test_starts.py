"""Starting tries quickly: a fire time prepared ahead (Scheduler.prepare), the processes of a
dispatch started before their starts are recorded, and the files a start writes.

Tasks are real processes (the local executor); only time is injected.
"""

from __future__ import annotations

import os
import stat
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import FakeClock, utc, wait_for

from cronflow import catalog, supervisor
from cronflow.config import Settings
from cronflow.daemon import PREPARE_LEAD_S, next_wait
from cronflow.executor import LocalExecutor
from cronflow.logs import attempt_log_dir
from cronflow.scheduler import Scheduler
from cronflow.states import TaskState
from cronflow.store import Store

FLOW = """
from cronflow import Flow, Shell
with Flow("{flow_id}", schedule="{cron}", start_date={start!r}):
    Shell("first", "true")
    Shell("second", "true")
"""


def scheduler_at(settings: Settings, start) -> tuple[Scheduler, Store, FakeClock]:
    store = Store(settings.db_path)
    clock = FakeClock(start)
    scheduler = Scheduler(store, settings, LocalExecutor(settings.parallelism), clock)
    scheduler.catalog = catalog.sync(store, settings)
    return scheduler, store, clock


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_prepare_makes_the_log_directories_of_the_next_fire_time_and_no_run(
    settings: Settings, write_flow
) -> None:
    write_flow("due", FLOW.format(flow_id="due", cron="* * * * *", start=None))
    write_flow("paused", FLOW.format(flow_id="paused", cron="* * * * *", start=None))
    write_flow("hourly", FLOW.format(flow_id="hourly", cron="0 * * * *", start=None))
    write_flow("later", FLOW.format(flow_id="later", cron="* * * * *", start="2024-02-01"))
    scheduler, store, clock = scheduler_at(settings, utc(2024, 1, 1, 12, 0, 30))
    store.set_paused("paused", True)
    scheduler.tick(clock.now())
    fire_at = utc(2024, 1, 1, 12, 1)
    assert scheduler.next_fire_at == fire_at

    assert scheduler.prepare(fire_at) == 2
    logical = fire_at.isoformat()
    due = [attempt_log_dir(settings.logs_dir, "due", t, logical) for t in ("first", "second")]
    assert [mode(d) for d in due] == [0o700, 0o700]
    assert mode(due[0].parent) == 0o700  # the task's directory too, owner-only
    for flow_id in ("paused", "hourly", "later"):
        assert not (settings.logs_dir / flow_id).exists()
    assert store.runs_between("due", utc(2024, 1, 1), utc(2024, 1, 2)) == []  # nothing shown
    assert scheduler.prepare(fire_at) == 0  # once per fire time

    clock.current = fire_at
    scheduler.tick(clock.now())
    [run] = store.runs_between("due", utc(2024, 1, 1), utc(2024, 1, 2))
    tis = {ti["task_id"]: ti for ti in store.tis_of_runs([run["run_id"]])}
    assert {Path(ti["log_path"]).parent for ti in tis.values()} == set(due)


def test_every_process_of_a_dispatch_starts_and_each_start_is_recorded(
    settings: Settings, write_flow
) -> None:
    write_flow("due", FLOW.format(flow_id="due", cron="* * * * *", start="2024-01-01"))
    scheduler, store, clock = scheduler_at(settings, utc(2024, 1, 1, 0, 0, 30))
    scheduler.tick(clock.now())  # the run of 00:00, both tasks started in one dispatch
    [run] = store.runs_between("due", utc(2024, 1, 1), utc(2024, 1, 2))
    tis = store.tis_of_runs([run["run_id"]])
    running = {a.task_id: a for a in scheduler.executor.running()}
    assert sorted(running) == ["first", "second"]
    for ti in tis:
        assert ti["state"] == TaskState.RUNNING
        assert ti["try_number"] == 1
        assert isinstance(ti["pid"], int) and ti["pid"] > 0
        assert Path(ti["log_path"]).read_text().startswith("[")  # its header

    def ended() -> bool:
        scheduler.tick(clock.now())
        return all(t["state"] == TaskState.SUCCESS for t in store.tis_of_runs([run["run_id"]]))

    wait_for(ended, what="both tries to succeed")


def test_the_command_file_left_by_a_crash_is_replaced_and_a_new_one_is_private(
    tmp_path: Path,
) -> None:
    log_path = tmp_path / "logs" / "f" / "t" / "20240101T000000Z" / "try-1.log"
    path = supervisor.write_command(log_path, "echo first attempt, a longer command\n")
    assert path == supervisor.command_path(log_path)
    assert mode(path) == 0o600
    assert mode(path.parent) == mode(path.parent.parent) == 0o700
    assert supervisor.write_command(log_path, "echo again\n") == path  # left by a crash
    assert path.read_text() == "echo again\n"
    assert mode(path) == 0o600
    os.unlink(path)
    supervisor.write_command(log_path, "echo new\n")
    assert path.read_text() == "echo new\n"


@pytest.mark.parametrize(
    ("now_s", "fire_s", "prepared", "expected"),
    [
        (0.0, 60.0, False, (False, 59.0)),  # far from the fire time: wake a second before it
        (59.5, 60.0, False, (True, 0.5)),  # within the lead: prepare now, then sleep to it
        (59.5, 60.0, True, (False, 0.5)),  # prepared already: sleep to it
        (61.0, 60.0, False, (False, -1.0)),  # due already (catch-up): nothing ahead of it
        (0.0, None, False, (False, 60.0)),  # no fire time ahead
    ],
)
def test_the_loop_wakes_a_second_before_a_fire_time_to_prepare_it(
    now_s, fire_s, prepared, expected
) -> None:
    base = utc(2024, 1, 1)
    fire_at = base + timedelta(seconds=fire_s) if fire_s is not None else None
    next_at = base + timedelta(seconds=60)
    got = next_wait(
        base + timedelta(seconds=now_s), next_at, fire_at, fire_at if prepared else None
    )
    assert got == expected
    assert PREPARE_LEAD_S == 1.0

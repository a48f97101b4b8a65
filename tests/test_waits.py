"""Waits between flows, driven by a fake clock: the whole day of the other flow, failures shown
at once, the wait giving up (failed or skipped), days with nothing to wait for; and
max_active_runs holding scheduled runs back without dropping them.

Tasks are real processes (the local executor); only time is injected.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from conftest import utc, wait_for
from test_scheduler import Harness

from cronflow import recovery
from cronflow.config import Settings
from cronflow.store import Store


@pytest.fixture
def make(settings: Settings) -> Callable[[datetime], Harness]:
    return lambda start: Harness(settings, start)


# ingest fires every 6 hours; report at 07:00 waits for ingest's whole day. ingest's task
# succeeds when the file open-<HH> exists in the home, so a test decides which runs fail.
DAY_FLOWS = """
from cronflow import Flow, FlowDependency, Shell
with Flow("ingest", schedule="0 */6 * * *", start_date="2024-06-01", catchup=True,
          max_active_runs=8):
    Shell("load", "test -f {home}/open-{{{{ ts_nodash }}}}")
with Flow("report", schedule="0 7 * * *", start_date="2024-06-01", catchup=True,
          wait_for=[FlowDependency("ingest", wait_timeout="{timeout}", soft_fail={soft})]):
    mail = Shell("mail", "true")
    archive = Shell("archive", "true")
    cleanup = Shell("cleanup", "true", trigger_rule="all_done")
    mail >> archive >> cleanup
"""


def day_flows(write_flow, home, timeout="20h", soft=False) -> None:
    write_flow("day", DAY_FLOWS.format(home=home, timeout=timeout, soft=soft))


def open_gate(home, *stamps: str) -> None:
    for stamp in stamps:
        (home / f"open-{stamp}").touch()


def report_run(h: Harness) -> dict:
    (run,) = h.runs("report")
    return run


def tis(h: Harness, flow_id: str) -> dict[str, dict]:
    run = h.runs(flow_id)[-1]
    return {ti["task_id"]: ti for ti in h.store.tis_of_runs([run["run_id"]])}


def waits_of(h: Harness, flow_id: str = "report"):
    flow = h.scheduler.catalog.get(flow_id)
    return h.scheduler.planner.waits.run_waits(flow, h.runs(flow_id)[-1], h.scheduler.catalog.flows)


def test_a_wait_holds_only_when_every_fire_time_of_the_day_succeeded(make, write_flow, home):
    day_flows(write_flow, home)
    open_gate(home, "20240601T000000", "20240601T060000", "20240601T120000", "20240601T180000")
    h = make(utc(2024, 6, 1, 7))
    h.tick()
    h.settle()
    h.tick()
    # ingest ran at 00:00 and 06:00 (both succeeded): two of the day's four runs
    assert [r["state"] for r in h.runs("ingest")] == ["success", "success"]
    assert report_run(h)["state"] == "queued"
    (status,) = waits_of(h).unmet
    assert status.headline() == "ingest 2024-06-01: 2 of 4 runs succeeded"
    assert status.details(h.clock.now()) == [
        "ingest 2024-06-01 12:00, 18:00 not yet run (the first fires in 5h)"
    ]
    h.at(utc(2024, 6, 1, 12))
    h.settle()
    h.tick()
    assert report_run(h)["state"] == "queued"
    h.at(utc(2024, 6, 1, 18))
    h.settle()
    h.tick()
    h.settle()
    h.tick()
    assert report_run(h)["state"] == "success"


def test_a_failed_upstream_run_is_named_at_once_and_a_replay_releases_the_wait(
    make, write_flow, home
):
    day_flows(write_flow, home)
    open_gate(home, "20240601T000000", "20240601T120000", "20240601T180000")  # not 06:00
    h = make(utc(2024, 6, 1, 19))
    h.tick()
    h.settle()
    h.tick()
    assert [r["state"] for r in h.runs("ingest")] == ["success", "failed", "success", "success"]
    assert report_run(h)["state"] == "queued"
    (status,) = waits_of(h).unmet
    assert status.details(h.clock.now()) == ["ingest 2024-06-01 06:00 failed"]
    assert h.scheduler.unmet_waits(h.scheduler.catalog.get("report"), report_run(h)) == [
        ("ingest", "2024-06-01")
    ]
    # fixed and replayed by hand (the CLI's own connection): the report starts
    open_gate(home, "20240601T060000")
    failed = h.runs("ingest")[1]
    Store(h.settings.db_path).clear_tis({failed["run_id"]: {"load": 0}}, h.clock.now())
    h.tick()
    h.settle()
    h.tick()
    h.settle()
    h.tick()
    assert report_run(h)["state"] == "success"


def test_a_wait_gives_up_after_its_timeout_and_its_first_tasks_fail(make, write_flow, home):
    day_flows(write_flow, home, timeout="2h")
    open_gate(home, "20240601T000000", "20240601T060000")
    h = make(utc(2024, 6, 1, 7))
    h.tick()
    h.settle()
    h.at(utc(2024, 6, 1, 8, 59))
    assert report_run(h)["state"] == "queued"
    wake = h.tick()
    assert wake <= utc(2024, 6, 1, 9)  # the daemon wakes up for the timeout
    h.at(utc(2024, 6, 1, 9))
    h.settle()
    h.tick()
    states = {t: ti["state"] for t, ti in tis(h, "report").items()}
    assert states == {"mail": "failed", "archive": "upstream_failed", "cleanup": "success"}
    assert tis(h, "report")["mail"]["reason"] == (
        "gave up waiting (2h) for ingest 2024-06-01: 12:00, 18:00 not yet run "
        "(the first fires in 3h)"
    )
    assert report_run(h)["state"] == "failed"


def test_a_soft_fail_wait_skips_its_first_tasks_when_it_gives_up(make, write_flow, home):
    day_flows(write_flow, home, timeout="2h", soft=True)
    h = make(utc(2024, 6, 1, 7))
    h.tick()
    h.settle()
    h.at(utc(2024, 6, 1, 9))
    h.settle()
    h.tick()
    states = {t: ti["state"] for t, ti in tis(h, "report").items()}
    assert states == {"mail": "skipped", "archive": "skipped", "cleanup": "success"}
    assert tis(h, "report")["mail"]["reason"].startswith("gave up waiting (2h) for ingest ")
    assert report_run(h)["state"] == "success"


def test_a_run_created_late_gets_its_whole_wait_timeout(make, write_flow, home):
    """A catch-up (or backfill) run counts its wait from when it was created, not from its
    fire time long past: it must not give up at once while its upstream catches up too."""
    day_flows(write_flow, home, timeout="2h")
    h = make(utc(2024, 6, 4, 6, 30))  # three days of both flows to catch up
    h.tick()
    first = h.runs("report")[0]
    assert first["logical_date"] == "2024-06-01T07:00:00+00:00"
    assert first["created_at"] == "2024-06-04T06:30:00+00:00"
    h.at(utc(2024, 6, 4, 8, 29))
    assert h.runs("report")[0]["state"] == "queued"
    h.at(utc(2024, 6, 4, 8, 30))
    h.settle()
    h.tick()
    assert h.runs("report")[0]["state"] == "failed"


NOTHING_TO_WAIT_FOR = """
from cronflow import Flow, Shell
with Flow("weekly", schedule="0 5 * * 1", start_date="2024-06-03", end_date="2024-06-20",
          catchup=True, max_active_runs=5):
    Shell("t", "true")
with Flow("daily", schedule="0 7 * * *", start_date="2024-05-27", catchup=True,
          max_active_runs=30, wait_for=["weekly"]):
    Shell("t", "true")
"""


def test_a_day_with_no_fire_time_has_nothing_to_wait_for(make, write_flow):
    write_flow("pair", NOTHING_TO_WAIT_FOR)
    h = make(utc(2024, 6, 25, 8))
    h.tick()
    h.settle()
    h.tick()
    h.settle()
    h.tick()
    states = {r["logical_date"][:10]: r["state"] for r in h.runs("daily")}
    # Mondays 06-03, 06-10 and 06-17 waited for weekly's run; every other day had nothing
    assert set(states.values()) == {"success"}, states
    flow = h.scheduler.catalog.get("daily")
    notes = {}
    for run in h.runs("daily"):
        waits = h.scheduler.planner.waits.run_waits(flow, run, h.scheduler.catalog.flows)
        notes[run["logical_date"][:10]] = waits.notes
    assert notes["2024-05-27"] == [
        "2024-05-27 is before the start date of 'weekly': nothing to wait for"
    ]
    assert notes["2024-06-04"] == [
        "'weekly' does not fire on 2024-06-04 (at 05:00 on Mon UTC): nothing to wait for"
    ]
    assert notes["2024-06-24"] == [
        "2024-06-24 is after the end date of 'weekly': nothing to wait for"
    ]
    assert notes["2024-06-10"] == []


MANUAL_UPSTREAM = """
from cronflow import Flow, Shell
with Flow("upload"):
    Shell("t", "true")
with Flow("publish", schedule="0 7 * * *", start_date="2024-06-01", wait_for=["upload"]):
    Shell("t", "true")
"""


def test_a_flow_without_schedule_is_waited_for_until_it_has_run_that_day(make, write_flow):
    write_flow("pair", MANUAL_UPSTREAM)
    h = make(utc(2024, 6, 1, 7))
    h.tick()
    h.settle()
    assert h.runs("publish")[0]["state"] == "queued"
    (status,) = waits_of(h, "publish").unmet
    assert status.headline() == (
        "upload 2024-06-01: no run yet (it has no schedule: a run of that day is needed)"
    )
    flow = h.scheduler.catalog.get("upload")
    from cronflow import control

    control.trigger(h.store, flow, utc(2024, 6, 1, 9, 15))
    h.tick()
    h.settle()
    h.tick()
    h.settle()
    assert h.runs("publish")[0]["state"] == "success"


# --- max_active_runs -------------------------------------------------------------------------
BLOCKING = """
from cronflow import Flow, Shell
with Flow("hourly", schedule="0 * * * *", start_date="2024-06-01", catchup={catchup},
          max_active_runs=1):
    Shell("work", "while [ ! -f {home}/go-{{{{ ts_nodash }}}} ]; do sleep 0.02; done")
"""


def blocking(write_flow, home, catchup=False) -> None:
    write_flow("hourly", BLOCKING.format(home=home, catchup=catchup))


def finish(h: Harness, hour: int) -> None:
    """Let the run of 2024-06-01 `hour`:00 end, and wait until the scheduler has seen it end."""
    (h.settings.home / f"go-20240601T{hour:02d}0000").touch()
    logical = f"2024-06-01T{hour:02d}:00:00+00:00"

    def ended() -> bool:
        h.tick()
        return any(
            r["logical_date"] == logical and r["state"] in ("success", "failed")
            for r in h.runs("hourly")
        )

    wait_for(ended, what=f"the run of {logical} to end")
    h.tick()  # the planner sees the run ended: the next one may be created


def restart(make, at) -> Harness:
    """A new daemon on the same store: it settles what the old one left running."""
    h = make(at)
    recovery.recover(h.scheduler, at)
    return h


def hours(h: Harness) -> list[int]:
    return [int(d[11:13]) for d in h.logical_dates("hourly")]


def test_runs_held_back_by_max_active_runs_are_created_late_not_dropped(make, write_flow, home):
    blocking(write_flow, home, catchup=False)
    h = make(utc(2024, 6, 1, 10))
    h.store.set_last_scheduled("hourly", utc(2024, 6, 1, 9))  # in service since 09:00
    h.tick()
    assert hours(h) == [10]
    for hour in (11, 12):  # the 10:00 run goes on: 11:00 and 12:00 are held back
        h.at(utc(2024, 6, 1, hour, 0, 30))
    assert hours(h) == [10]
    assert h.store.flow("hourly")["held_until"] == "2024-06-01T12:00:00+00:00"
    finish(h, 10)
    assert hours(h) == [10, 11]  # the oldest held back first; before, only 12:00 was made
    finish(h, 11)
    assert hours(h) == [10, 11, 12]


def test_a_restart_does_not_drop_runs_held_back(make, write_flow, home):
    blocking(write_flow, home, catchup=False)
    h = make(utc(2024, 6, 1, 10))
    h.store.set_last_scheduled("hourly", utc(2024, 6, 1, 9))
    h.tick()
    for hour in (11, 12, 13):
        h.at(utc(2024, 6, 1, hour, 0, 30))
    h2 = restart(make, utc(2024, 6, 1, 13, 10))
    finish(h2, 10)
    finish(h2, 11)
    finish(h2, 12)
    assert hours(h2) == [10, 11, 12, 13]


def test_catchup_off_still_drops_fire_times_missed_while_the_daemon_was_down(
    make, write_flow, home, caplog
):
    blocking(write_flow, home, catchup=False)
    h = make(utc(2024, 6, 1, 10))
    h.store.set_last_scheduled("hourly", utc(2024, 6, 1, 9))
    h.tick()
    # the daemon is down from 10:30 to 14:30 while the 10:00 run goes on
    h2 = restart(make, utc(2024, 6, 1, 14, 30))
    with caplog.at_level("WARNING", logger="cronflow.scheduler"):
        h2.tick()
    assert "event=missed_fires flow=hourly count=3" in caplog.text  # 11:00, 12:00, 13:00
    h2.at(utc(2024, 6, 1, 15, 0, 30))  # 15:00 comes while the daemon runs
    finish(h2, 10)
    finish(h2, 14)
    finish(h2, 15)
    assert hours(h2) == [10, 14, 15]


def test_catchup_on_creates_held_back_runs_oldest_first(make, write_flow, home):
    blocking(write_flow, home, catchup=True)
    h = make(utc(2024, 6, 1, 0, 0, 30))
    h.tick()
    h.at(utc(2024, 6, 1, 2, 0, 30))
    assert h.store.flow("hourly")["held_until"] == "2024-06-01T02:00:00+00:00"
    finish(h, 0)
    finish(h, 1)
    finish(h, 2)
    assert hours(h) == [0, 1, 2]


def test_the_wait_deadline_is_taken_from_the_run_created_at(make, write_flow, home):
    day_flows(write_flow, home, timeout="1h")
    h = make(utc(2024, 6, 1, 7))
    h.tick()
    run = report_run(h)
    waits = waits_of(h)
    assert waits.deadline == utc(2024, 6, 1, 8)
    assert run["queued_at"] == run["created_at"] == "2024-06-01T07:00:00+00:00"
    assert waits.deadline - utc(2024, 6, 1, 7) == timedelta(hours=1)


ALERTING = """
from pathlib import Path
from cronflow import Flow, Shell

def alert(context):
    Path("{out}").write_text(context["task_id"] + ": " + context["reason"])

with Flow("upload"):
    Shell("t", "true")
with Flow("report", schedule="0 7 * * *", start_date="2024-06-01", wait_for=["upload"],
          wait_timeout="1h", on_failure=alert):
    Shell("mail", "true")
"""


def test_a_wait_that_gives_up_runs_the_failure_callbacks(make, write_flow, home, caplog):
    out = home / "alert.txt"
    write_flow("alerting", ALERTING.format(out=out))
    h = make(utc(2024, 6, 1, 7))
    h.tick()
    with caplog.at_level("WARNING", logger="cronflow.scheduler"):
        h.at(utc(2024, 6, 1, 8))
    assert "event=wait_gave_up flow=report" in caplog.text
    reason = (
        "gave up waiting (1h) for upload 2024-06-01: no run yet (it has no schedule: a run of "
        "that day is needed)"
    )
    assert tis(h, "report")["mail"]["reason"] == reason
    wait_for(lambda: out.exists() and out.read_text(), what="the on_failure callback")
    assert out.read_text() == f"mail: {reason}"

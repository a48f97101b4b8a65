"""depends_on_past and wait_for_downstream: a task waits for its own previous run.

Scheduler-level tests drive a real scheduler (real task processes) with a fake clock; `why`
goes through the CLI; the end-to-end test runs the real daemon.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from datetime import datetime

import pytest
from clikit import invoke, ok, rows
from conftest import cli, wait_for
from test_scheduler import Harness, utc

from cronflow.config import Settings
from cronflow.errors import FlowDefinitionError
from cronflow.flow import Flow
from cronflow.ops import Shell
from cronflow.states import TaskState


@pytest.fixture
def make(settings: Settings) -> Callable[[datetime], Harness]:
    return lambda start: Harness(settings, start)


# A daily flow in Paris whose `load` fails on the day named by the file `fail-DAY` in its
# working directory, so a test chooses which day fails.
INGEST = """
from cronflow import Flow, Shell
with Flow("ingest", schedule="30 10 * * *", timezone="Europe/Paris", start_date="{start}",
          catchup=True, max_active_runs={mar}, defaults={defaults}):
    fetch = Shell("fetch", "true")
    load = Shell("load", "test ! -e {home}/fail-{{{{ ds }}}}"{load_args})
    report = Shell("report", "test ! -e {home}/fail-report-{{{{ ds }}}}")
    fetch >> load >> report
"""


def ingest(
    write_flow, home, *, start="2026-12-01", mar=3, defaults=None, load_args="", catchup=True
):
    source = INGEST.format(
        start=start, mar=mar, defaults=defaults or {}, home=home, load_args=load_args
    )
    write_flow("ingest", source.replace("catchup=True", f"catchup={catchup}"))


def states(h: Harness, task_id: str) -> list[str]:
    tis = [h.store.ti(r["run_id"], task_id) for r in h.runs("ingest")]
    return [ti["state"] if ti else "-" for ti in tis]


def test_a_failed_day_holds_the_next_days_and_catch_up_loads_in_order(make, write_flow, home):
    (home / "fail-2026-12-02").touch()
    ingest(write_flow, home, mar=4, load_args=", depends_on_past=True")
    h: Harness = make(utc(2026, 12, 4, 12))
    h.settle()
    # four runs at once (max_active_runs=4); fetch runs everywhere, load waits for its past
    assert states(h, "fetch") == ["success"] * 4
    assert states(h, "load") == ["success", "failed", "none", "none"]
    assert states(h, "report") == ["success", "upstream_failed", "none", "none"]
    # the day is repaired and marked: the following days load, in order
    (home / "fail-2026-12-02").unlink()
    ok(home, "mark", "ingest.load", "--date", "2026-12-02", "--state", "success")
    settle_in_order(h, "load")
    assert states(h, "load") == ["success"] * 4


def test_without_depends_on_past_the_days_do_not_wait(make, write_flow, home):
    (home / "fail-2026-12-02").touch()
    ingest(write_flow, home, mar=4)  # every run at once: settle() sees them all
    h: Harness = make(utc(2026, 12, 4, 12))
    h.settle()
    assert states(h, "load") == ["success", "failed", "success", "success"]


def test_catch_up_under_depends_on_past_runs_each_day_after_the_one_before(make, write_flow, home):
    ingest(write_flow, home, mar=4, defaults={"depends_on_past": True})
    h: Harness = make(utc(2026, 12, 4, 12))
    settle_in_order(h, "fetch", "load", "report")
    for task_id in ("fetch", "load", "report"):
        assert states(h, task_id) == ["success"] * 4


def settle_in_order(h: Harness, *task_ids: str) -> None:
    """Settle, checking after every tick that a task started (scheduled, running or done) in a
    run only once the same task of the run before had succeeded or been skipped."""
    started = {"scheduled", "queued", "running", "success", "failed", "up_for_retry"}

    def idle() -> bool:
        h.tick()
        for task_id in task_ids:
            seen = states(h, task_id)
            for before, after in itertools.pairwise(seen):
                assert after not in started or before in ("success", "skipped"), (task_id, seen)
        busy = h.store.tis_in_states([TaskState.SCHEDULED, TaskState.RUNNING])
        return not busy and not h.scheduler.executor.running()

    wait_for(idle, what="the scheduler to settle")


def test_the_first_run_and_the_first_after_start_date_have_no_past(make, write_flow, home):
    ingest(write_flow, home, start="2026-12-01", load_args=", depends_on_past=True")
    h: Harness = make(utc(2026, 12, 1, 12))
    h.settle()
    assert states(h, "load") == ["success"]
    # the day's load is marked failed, and the flow now starts on 3 Dec: its run of 3 Dec has
    # the run of 1 Dec before it, from before its start date, so no past (catchup off: the
    # planner, which keeps its place, makes no run of 2 Dec)
    ok(home, "mark", "ingest.load", "--date", "2026-12-01", "--state", "failed")
    ingest(write_flow, home, start="2026-12-03", load_args=", depends_on_past=True", catchup=False)
    h.sync()
    h.at(utc(2026, 12, 3, 12))
    h.settle()
    assert [r["logical_date"][:10] for r in h.runs("ingest")] == ["2026-12-01", "2026-12-03"]
    assert states(h, "load") == ["failed", "success"]


def test_a_task_added_since_the_previous_run_has_no_past(make, write_flow, home):
    write_flow(
        "ingest",
        """
        from cronflow import Flow, Shell
        with Flow("ingest", schedule="30 10 * * *", timezone="UTC", start_date="2026-12-01"):
            Shell("fetch", "true")
        """,
    )
    h: Harness = make(utc(2026, 12, 1, 12))
    h.settle()
    write_flow(
        "ingest",
        """
        from cronflow import Flow, Shell
        with Flow("ingest", schedule="30 10 * * *", timezone="UTC", start_date="2026-12-01"):
            Shell("fetch", "true") >> Shell("load", "true", depends_on_past=True)
        """,
    )
    h.sync()
    h.at(utc(2026, 12, 2, 12))
    h.settle()
    assert states(h, "load") == ["-", "success"]  # only the new run has it; it did not wait


def test_a_skipped_past_counts_as_done(make, write_flow, home):
    ingest(write_flow, home, load_args=", depends_on_past=True")
    h: Harness = make(utc(2026, 12, 1, 12))
    h.settle()
    ok(home, "mark", "ingest.load", "--date", "2026-12-01", "--state", "skipped")
    h.at(utc(2026, 12, 2, 12))
    h.settle()
    assert states(h, "load") == ["skipped", "success"]


def test_wait_for_downstream_waits_for_the_previous_runs_direct_downstream(make, write_flow, home):
    (home / "fail-report-2026-12-01").touch()
    ingest(write_flow, home, mar=2, load_args=", wait_for_downstream=True")
    h: Harness = make(utc(2026, 12, 2, 12))
    h.settle()
    assert states(h, "load") == ["success", "none"]  # 1 Dec's report failed
    assert states(h, "report") == ["failed", "none"]
    reasons = invoke(home, "why", "ingest", "--date", "2026-12-02", "--task", "load").stdout
    assert (
        "load: depends_on_past: waiting for report of its run of 2026-12-01 10:30 CET "
        "(failed), wait_for_downstream" in reasons
    )
    ok(home, "mark", "ingest.report", "--date", "2026-12-01", "--state", "success")
    h.settle()
    assert states(h, "load") == ["success", "success"]


def test_why_names_the_run_waited_for_in_the_flows_timezone(make, write_flow, home):
    (home / "fail-2026-12-02").touch()
    ingest(write_flow, home, load_args=", depends_on_past=True")
    h: Harness = make(utc(2026, 12, 3, 12))
    h.settle()
    out = invoke(home, "why", "ingest", "--date", "2026-12-03").stdout
    assert "load: depends_on_past: waiting for its own run of 2026-12-02 10:30 CET (failed)" in out
    by_task = {r["task"]: r for r in rows(home, "tasks", "ingest", "--date", "2026-12-03")}
    assert by_task["load"]["reason"] == (
        "depends_on_past: waiting for its own run of 2026-12-02 10:30 CET (failed)"
    )
    assert by_task["report"]["reason"] is None  # waits for load, in this run


def test_replay_of_an_old_day_respects_depends_on_past(make, write_flow, home):
    ingest(write_flow, home, load_args=", depends_on_past=True")
    h: Harness = make(utc(2026, 12, 3, 12))
    h.settle()
    assert states(h, "load") == ["success"] * 3
    # 2 Dec's load is marked failed; replaying 3 Dec must wait for it
    ok(home, "mark", "ingest.load", "--date", "2026-12-02", "--state", "failed")
    ok(home, "replay", "ingest", "--date", "2026-12-03", "--task", "load", "--yes")
    h.settle()
    assert states(h, "load") == ["success", "failed", "none"]
    ok(home, "replay", "ingest", "--date", "2026-12-02", "--task", "load", "--yes")
    h.settle()
    assert states(h, "load") == ["success"] * 3


def test_depends_on_past_must_be_a_bool():
    flow = Flow("f", schedule="@daily")
    with flow:
        Shell("a", "true", depends_on_past="yes")
    with pytest.raises(FlowDefinitionError, match="depends_on_past must be True or False"):
        flow.spec()


def test_wait_for_downstream_implies_depends_on_past_and_defaults_apply():
    flow = Flow("f", schedule="@daily", defaults={"wait_for_downstream": True})
    with flow:
        Shell("a", "true") >> Shell("b", "true", wait_for_downstream=False)
    tasks = {t["task_id"]: t for t in flow.spec()["tasks"]}
    assert tasks["a"]["depends_on_past"] is True and tasks["a"]["wait_for_downstream"] is True
    assert "depends_on_past" not in tasks["b"] and "wait_for_downstream" not in tasks["b"]


# --- with the real daemon ------------------------------------------------------------------------
DAYS = """
from cronflow import Flow, Shell
with Flow("days", timezone="Europe/Paris", max_active_runs=2):
    Shell("load", "test ! -e {home}/fail-{{{{ ds }}}}", depends_on_past=True)
"""


@pytest.mark.slow
def test_the_daemon_holds_a_day_until_its_past_is_repaired(home, daemon, write_flow):
    with open(home / "cronflow.toml", "a") as config:  # 2024 dates: keep them
        config.write("[retention]\ndelete_runs_after_days = 0\n")
    write_flow("days", DAYS.format(home=home))
    (home / "fail-2024-03-02").touch()
    daemon()
    assert cli(home, "trigger", "days", "--date", "2024-03-01", "--wait").returncode == 0
    assert cli(home, "trigger", "days", "--date", "2024-03-02", "--wait").returncode == 1
    assert cli(home, "trigger", "days", "--date", "2024-03-03").returncode == 0
    why = wait_for(
        lambda: (
            "its own run" in (out := cli(home, "why", "days", "--date", "2024-03-03").stdout)
            and out
        ),
        what="why to name the past",
    )
    assert "load: depends_on_past: waiting for its own run of 2024-03-02 00:00 CET (failed)" in why
    (home / "fail-2024-03-02").unlink()
    assert cli(home, "replay", "days", "--date", "2024-03-02", "--yes").returncode == 0
    wait_for(lambda: run_states(home) == ["success"] * 3, what="both days to load")


def run_states(home) -> list[str]:
    rows = json.loads(cli(home, "runs", "days", "--json").stdout)
    return [r["state"] for r in sorted(rows, key=lambda r: r["logical_date"])]

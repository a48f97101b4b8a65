"""The library functions the web view added (the CLI can use them too): a page of a flow's
grid, the squares of recent runs, states of given runs, what a mark would change, every try of
a task instance, monitoring figures, web users."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from clikit import DAILY, ok, set_tis, store
from conftest import wait_for

from cronflow import attempts, catalog, monitoring, overview, repair, webusers
from cronflow.config import load_settings
from cronflow.errors import InvalidInputError, NotFoundError


@pytest.fixture
def daily(home, write_flow):
    write_flow("daily", DAILY)
    for day in range(1, 8):
        ok(home, "trigger", "daily", "--date", f"2024-03-{day:02d}")
    settings = load_settings(home)
    db = store(home)
    return settings, db, catalog.sync(db, settings).get("daily")


def test_run_grid_pages_back_through_filtered_runs(daily, home):
    _, db, flow = daily
    runs = {r["logical_date"][:10]: r["run_id"] for r in db.runs_of_flow("daily")}
    set_tis(
        home,
        runs["2024-03-02"],
        a="failed",
        b="upstream_failed",
        c="upstream_failed",
        d="upstream_failed",
    )
    page = overview.run_grid(db, flow, [], None, None, 3)
    assert [r["logical_date"][:10] for r in page["runs"]] == [
        "2024-03-05",
        "2024-03-06",
        "2024-03-07",
    ]
    assert set(page["tasks"]) == {"a", "b", "c", "d"}
    assert page["tasks"].index("a") < page["tasks"].index("b") < page["tasks"].index("c")
    older = overview.run_grid(db, flow, [], None, page["older"], 3)
    assert [r["logical_date"][:10] for r in older["runs"]] == [
        "2024-03-02",
        "2024-03-03",
        "2024-03-04",
    ]
    last = overview.run_grid(db, flow, [], None, older["older"], 3)
    assert [r["logical_date"][:10] for r in last["runs"]] == ["2024-03-01"] and last[
        "older"
    ] is None
    failed = overview.run_grid(db, flow, ["failed"], None, None, 10)
    assert [r["run_id"] for r in failed["runs"]] == [runs["2024-03-02"]]
    assert failed["runs"][0]["task_states"]["a"] == "failed"
    since = overview.run_grid(db, flow, [], "2024-03-06", None, 10)
    assert len(since["runs"]) == 2
    with pytest.raises(InvalidInputError, match="1 to 200"):
        overview.run_grid(db, flow, [], None, None, 201)
    with pytest.raises(InvalidInputError, match="bad page cursor"):
        overview.run_grid(db, flow, [], None, "yesterday", 3)


def test_recent_run_squares_and_run_states(daily):
    _, db, _ = daily
    squares = overview.recent_run_squares(db, 3)["daily"]
    assert [s["logical_date"][:10] for s in squares] == ["2024-03-05", "2024-03-06", "2024-03-07"]
    ids = [s["run_id"] for s in squares]
    states = overview.run_states(db, [*ids, 999999])
    assert set(states) == set(ids)
    assert states[ids[0]] == {"state": "queued", "tasks": dict.fromkeys("abcd", "none")}


def test_plan_mark_lists_exactly_what_mark_changes(daily):
    _, db, flow = daily
    date = "2024-03-03"
    plan = repair.plan_mark(db, flow, "b", date, "failed", downstream=True)
    assert [ti["task_id"] for ti in plan.tis] == ["b", "c"]
    result = repair.mark(db, flow, "b", date, "failed", True, datetime.now(UTC))
    assert result.changed == len(plan.tis)
    whole = repair.plan_mark(db, flow, None, date, "success", downstream=False)
    assert [ti["task_id"] for ti in whole.tis] == ["a", "b", "c", "d"]  # none succeeded yet
    assert repair.mark(db, flow, None, date, "success", False, datetime.now(UTC)).changed == 4
    with pytest.raises(InvalidInputError, match="bad state 'skipped' for a run"):
        repair.plan_mark(db, flow, None, date, "skipped", downstream=False)
    with pytest.raises(NotFoundError):
        repair.plan_mark(db, flow, "nope", date, "failed", downstream=False)


FLAKY = """
from cronflow import Flow, Shell
with Flow("flaky", schedule=None):
    Shell("t", "if [ -e {{ params.marker }} ]; then echo fine; else touch {{ params.marker }}; echo broken; exit 3; fi",
          retries=1, retry_delay=0, params={"marker": "%s"})
"""


def test_tries_reads_earlier_tries_from_their_logs(home, write_flow, daemon, tmp_path):
    write_flow("flaky", FLAKY % (tmp_path / "marker"))
    daemon()
    ok(home, "trigger", "flaky")
    db = store(home)
    run_id = db.runs_of_flow("flaky")[0]["run_id"]
    wait_for(lambda: db.run(run_id)["state"] == "success", what="the flaky run")
    settings = load_settings(home)
    flow = catalog.sync(db, settings).get("flaky")
    tries = attempts.tries(settings, flow, db.ti(run_id, "t"))
    assert [t["try_number"] for t in tries] == [1, 2]
    first, second = tries
    assert first["state"] == "up_for_retry" and first["reason"] == "exit code 3: broken"
    assert first["start_at"] and first["end_at"] and first["duration_s"] is not None
    assert first["host"] == second["host"] and first["host"]
    assert second["state"] == "success" and second["reason"] is None
    attempt = attempts.find_attempt(settings, db, flow, "t", None, 1)
    whole = b"".join(attempts.read_attempt(attempt))
    assert attempts.log_size(attempt) == len(whole)
    part, end = attempts.read_attempt_from(attempt, 10, 20)
    assert part == whole[10:30] and end == 30


def test_tries_of_a_try_whose_log_is_gone(daily):
    settings, db, flow = daily
    run_id = db.runs_of_flow("daily")[0]["run_id"]
    db.update_ti(run_id, "a", try_number=2, state="success")
    tries = attempts.tries(settings, flow, db.ti(run_id, "a"))
    assert tries[0]["state"] is None and tries[0]["start_at"] is None  # said, not guessed
    assert tries[1]["state"] == "success"


def test_monitoring_figures_count_only_live_work_and_recent_ends(daily, home):
    settings, db, _ = daily
    run_id = db.runs_of_flow("daily")[0]["run_id"]
    db.update_ti(run_id, "a", state="scheduled", pool="station")
    db.update_ti(run_id, "b", state="running", pool="station")
    set_tis(
        home,
        db.runs_of_flow("daily")[1]["run_id"],
        a="success",
        b="success",
        c="success",
        d="failed",
    )
    cat = catalog.sync(db, settings)
    figures = monitoring.figures(settings, db, cat, None, datetime.now(UTC))
    assert figures.unfinished_tis[("daily", "none")] == 4 * 7 - 4 - 2
    assert figures.unfinished_tis[("daily", "running")] == 1
    # ended task instances too are looked up by recent logical dates: 2024 ones are not read
    assert figures.ended_tis == {}
    assert figures.pools["station"] == {"slots": 1, "running": 1, "waiting": 1}
    assert figures.unfinished_runs == {("daily", "queued"): 6}
    # ended runs are looked up by recent logical dates only: a 2024 run ending now is not read
    assert figures.ended_runs == {}
    ok(home, "trigger", "daily")  # logical date: now
    recent = db.runs_of_flow("daily")[0]["run_id"]
    set_tis(home, recent, a="success", b="success", c="success", d="success")
    figures = monitoring.figures(settings, db, cat, None, datetime.now(UTC))
    assert figures.ended_runs == {("daily", "success"): 1}
    assert figures.ended_tis == {("daily", "success"): 4}
    assert not figures.daemon.running and figures.daemon.heartbeat_age_s is None
    assert figures.flows == 1 and figures.broken_files == 0


def test_web_users_keep_only_a_scrypt_hash(tmp_path):
    home = tmp_path / "home"
    assert webusers.set_user(home, "alice", "a long password") is True
    assert webusers.set_user(home, "alice", "another password") is False
    assert webusers.verify(home, "alice", "another password")
    assert not webusers.verify(home, "alice", "a long password")
    assert not webusers.verify(home, "nobody", "another password")
    assert "another password" not in webusers.users_path(home).read_text()
    assert webusers.password_matches("x", webusers._DUMMY) is False  # a well-formed dummy
    webusers.delete_user(home, "alice")
    assert webusers.load_users(home) == {}
    with pytest.raises(NotFoundError):
        webusers.delete_user(home, "alice")

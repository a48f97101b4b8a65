"""`cronflow runs`, `backfill`, `mark` and `replay` on a real home, without the daemon."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from clikit import DAILY, MANUAL, TWICE, error, invoke, ok, rows, set_tis, store, ti_states

RUN_KEYS = {"run_id", "flow_id", "logical_date", "run_type", "state", "started_at", "ended_at"}


@pytest.fixture
def daily(home, write_flow):
    """Three backfilled runs of `daily`: 2024-03-01 (run 1) to 2024-03-03 (run 3)."""
    write_flow("daily", DAILY)
    ok(home, "backfill", "daily", "--from", "2024-03-01", "--to", "2024-03-03")
    return home


# --- runs ----------------------------------------------------------------------------------------
def test_runs_lists_newest_first_with_ids_dates_and_states(daily):
    found = rows(daily, "runs", "daily")
    assert [r["run_id"] for r in found] == [3, 2, 1]
    assert all(set(r) >= RUN_KEYS for r in found)
    assert found[0]["logical_date"] == "2024-03-03T01:30:00+00:00"
    assert {r["run_type"] for r in found} == {"backfill"}
    assert {r["state"] for r in found} == {"queued"}
    table = ok(daily, "runs", "daily").stdout
    assert "2024-03-03 02:30" in table and "backfill" in table


def test_runs_filter_by_state_since_and_limit(daily):
    set_tis(daily, 2, a="success", b="failed", c="upstream_failed", d="success")
    assert [r["run_id"] for r in rows(daily, "runs", "daily", "--state", "failed")] == [2]
    both = rows(daily, "runs", "daily", "--state", "failed,queued")
    assert [r["run_id"] for r in both] == [3, 2, 1]
    since = rows(daily, "runs", "daily", "--since", "2024-03-02")
    assert [r["run_id"] for r in since] == [3, 2]
    assert [r["run_id"] for r in rows(daily, "runs", "daily", "--limit", "1")] == [3]
    assert "no runs match" in ok(daily, "runs", "daily", "--state", "running").stdout


def test_runs_bad_input_is_one_line_and_exit_2(daily):
    assert error(daily, "runs", "nope") == "unknown flow 'nope' (known: daily)"
    assert error(daily, "runs", "daily", "--state", "done") == (
        "bad run state 'done': use queued, running, success, failed"
    )
    assert error(daily, "runs", "daily", "--since", "2024-02-30") == (
        "bad date '2024-02-30': no such day"
    )
    assert error(daily, "runs", "daily", "--limit", "0") == (
        "--limit must be between 1 and 10,000, got 0"
    )
    assert error(daily, "runs", "daily", "--limit", "99999999999999999999") == (
        "--limit must be between 1 and 10,000, got 99999999999999999999"
    )


def test_list_queries_use_indexes(daily):
    """`runs --state` reads through the 0002 index, not a scan of the history (`top`: see
    test_store_history.py)."""
    db = store(daily)

    def plan(sql: str, params: list) -> str:
        return " ".join(r[3] for r in db.db.conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))

    runs_plan = plan(
        "SELECT * FROM runs WHERE flow_id = ? AND state IN (?) ORDER BY logical_date DESC LIMIT 5",
        ["daily", "failed"],
    )
    assert "runs_by_flow_state_date" in runs_plan and "SCAN" not in runs_plan


# --- backfill ------------------------------------------------------------------------------------
def test_backfill_creates_a_run_per_fire_time_and_skips_existing_ones(home, write_flow):
    write_flow("twice", TWICE)
    ok(home, "trigger", "twice", "--date", "2024-03-02T06:00")
    created = rows(home, "backfill", "twice", "--from", "2024-03-01", "--to", "2024-03-02")
    assert [r["logical_date"] for r in created] == [
        "2024-03-01T06:00:00+00:00",
        "2024-03-01T18:00:00+00:00",
        "2024-03-02T18:00:00+00:00",
    ]
    assert all({"run_id", "flow_id", "logical_date", "state"} <= set(r) for r in created)
    run = store(home).run(created[1]["run_id"])
    assert run["run_type"] == "backfill"
    assert (run["data_interval_start"], run["data_interval_end"]) == (
        "2024-03-01T06:00:00+00:00",
        "2024-03-01T18:00:00+00:00",
    )
    again = ok(home, "backfill", "twice", "--from", "2024-03-01", "--to", "2024-03-02").stdout
    assert "0 run(s) created, 4 already existed" in again


def test_backfill_stops_at_now(home, write_flow):
    write_flow("twice", TWICE)
    today = datetime.now(UTC).date()
    result = ok(
        home,
        "backfill",
        "twice",
        "--from",
        str(today - timedelta(days=1)),
        "--to",
        str(today + timedelta(days=30)),
    )
    assert "fire times after now are left to the schedule" in result.stdout
    created = store(home).runs_of_flow("twice")
    assert 2 <= len(created) <= 4
    assert all(r["logical_date"] <= datetime.now(UTC).isoformat() for r in created)


def test_backfill_bad_input(home, write_flow):
    write_flow("twice", TWICE)
    write_flow("manual", MANUAL)
    write_flow("minutely", MANUAL.replace('"manual"', '"minutely", schedule="* * * * *"'))
    assert error(home, "backfill", "manual", "--from", "2024-03-01", "--to", "2024-03-02") == (
        "flow 'manual' has no schedule, so no fire times to backfill; use `cronflow trigger --date`"
    )
    assert error(home, "backfill", "twice", "--from", "2024-03-05", "--to", "2024-03-01") == (
        "the range 2024-03-05 .. 2024-03-01 is empty: the end is first"
    )
    assert error(home, "backfill", "twice", "--from", "yesterday", "--to", "2024-03-01").startswith(
        "bad date 'yesterday': use YYYY-MM-DD or an ISO date-time"
    )
    assert error(home, "backfill", "minutely", "--from", "2024-03-01", "--to", "2024-03-10") == (
        "2024-03-01 .. 2024-03-10 holds more than 10000 fire times of 'minutely'; "
        "backfill a shorter range at a time"
    )
    assert store(home).runs_of_flow("twice") == []


# --- mark ----------------------------------------------------------------------------------------
def test_mark_a_task_and_its_downstream_then_the_run_takes_the_outcome(daily):
    result = ok(daily, "mark", "daily.a", "--date", "2024-03-01", "--state", "success")
    assert "marked a of daily 2024-03-01 02:30 success (1 changed); run: queued" in result.stdout
    ok(daily, "mark", "daily.b", "--date", "2024-03-01", "--state", "failed", "--downstream")
    assert ti_states(daily, 1) == {"a": "success", "b": "failed", "c": "failed", "d": "none"}
    assert store(daily).run(1)["state"] == "queued"
    ok(daily, "mark", "daily.d", "--date", "2024-03-01", "--state", "skipped")
    run = store(daily).run(1)
    assert (run["state"], run["ended_at"] is not None) == ("failed", True)
    ti = store(daily).ti(1, "b")
    assert ti["reason"] == "marked failed by hand" and ti["end_at"]
    # back to success: the finished run follows its task instances
    ok(daily, "mark", "daily.b", "--date", "2024-03-01", "--state", "success", "--downstream")
    assert store(daily).run(1)["state"] == "success"


def test_marking_a_failed_task_success_clears_what_its_failure_stopped(daily, write_flow):
    set_tis(daily, 2, a="success", b="failed", c="upstream_failed", d="success")
    result = ok(daily, "mark", "daily.b", "--date", "2024-03-02", "--state", "success")
    assert "cleared c (upstream_failed): the daemon runs them" in result.stdout
    assert ti_states(daily, 2) == {"a": "success", "b": "success", "c": "none", "d": "success"}
    assert store(daily).run(2)["state"] == "queued"
    # a failure elsewhere keeps the run failed: the command says what to do
    set_tis(daily, 3, a="success", b="success", c="failed", d="failed")
    result = ok(daily, "mark", "daily.c", "--date", "2024-03-03", "--state", "success")
    assert "cleared" not in result.stdout
    assert store(daily).run(3)["state"] == "failed"
    assert (
        "note: the run stays failed: d failed or could not run; `cronflow replay daily "
        "--date 2024-03-03T01:30:00+00:00 --only-failed` runs them again"
    ) in " ".join(result.stdout.split())


def test_mark_a_finished_run_back_to_work_requeues_it(daily):
    set_tis(daily, 1, a="success", b="success", c="success", d="success")
    assert store(daily).run(1)["state"] == "success"
    store(daily).update_ti(1, "d", state="none")
    ok(daily, "mark", "daily.c", "--date", "2024-03-01", "--state", "failed")
    assert store(daily).run(1)["state"] == "queued"


def test_mark_a_whole_run(daily):
    set_tis(daily, 2, a="success", b="failed", c="upstream_failed", d="skipped")
    ok(daily, "mark", "daily", "--date", "2024-03-02", "--state", "success")
    assert ti_states(daily, 2) == {"a": "success", "b": "success", "c": "success", "d": "skipped"}
    assert store(daily).run(2)["state"] == "success"
    set_tis(daily, 3, a="success", b="failed")
    ok(daily, "mark", "daily", "--date", "2024-03-03", "--state", "failed")
    assert ti_states(daily, 3) == {"a": "success", "b": "failed", "c": "failed", "d": "failed"}
    assert store(daily).run(3)["state"] == "failed"


def test_mark_bad_input(daily, write_flow):
    write_flow("twice", TWICE)
    ok(daily, "backfill", "twice", "--from", "2024-03-01", "--to", "2024-03-01")
    mark = ["mark", "daily.a", "--date", "2024-03-01", "--state"]
    assert error(daily, *mark, "running") == (
        "bad state 'running' for a task: use failed, skipped, success"
    )
    assert error(daily, "mark", "daily", "--date", "2024-03-01", "--state", "skipped") == (
        "bad state 'skipped' for a run: use success, failed"
    )
    assert error(
        daily, "mark", "daily", "--date", "2024-03-01", "--state", "failed", "--downstream"
    ) == ("--downstream needs a task: FLOW.TASK")
    assert error(daily, "mark", "daily.zz", "--date", "2024-03-01", "--state", "failed") == (
        "flow 'daily' has no task 'zz' (known: a, b, c, d)"
    )
    assert error(daily, "mark", "daily.a.b", "--date", "2024-03-01", "--state", "failed") == (
        "bad target 'daily.a.b': expected FLOW or FLOW.TASK, e.g. meteo.fetch"
    )
    assert error(daily, "mark", "nope.a", "--date", "2024-03-01", "--state", "failed") == (
        "unknown flow 'nope' (known: daily, twice)"
    )
    assert error(daily, "mark", "daily.a", "--date", "2024-04-01", "--state", "failed") == (
        "flow 'daily' has no run on 2024-04-01 (latest: 2024-03-03T02:30:00+01:00, "
        "2024-03-02T02:30:00+01:00, 2024-03-01T02:30:00+01:00)"
    )
    assert error(daily, "mark", "twice.t", "--date", "2024-03-01", "--state", "failed") == (
        "2 runs of flow 'twice' match 2024-03-01: 2024-03-01T06:00:00+00:00, "
        "2024-03-01T18:00:00+00:00; give a date-time"
    )
    assert ti_states(daily, 1) == dict.fromkeys("abcd", "none")


# --- replay --------------------------------------------------------------------------------------
@pytest.fixture
def failed_run(daily):
    """Run 1 failed: a succeeded, b failed after 3 tries, c could not run, d succeeded."""
    set_tis(daily, 1, a="success", b=("failed", 3), c=("upstream_failed", 0), d="success")
    return daily


def test_replay_only_failed_clears_them_and_requeues_the_run(failed_run):
    home = failed_run
    result = ok(home, "replay", "daily", "--date", "2024-03-01", "--only-failed", "--yes")
    assert "cleared 2 task instance(s) in 1 run(s)" in result.stdout
    assert ti_states(home, 1) == {"a": "success", "b": "none", "c": "none", "d": "success"}
    b = store(home).ti(1, "b")
    assert (b["try_number"], b["max_tries"]) == (3, 6)  # 3 tries so far, then 2 retries again
    assert (b["end_at"], b["reason"], b["next_try_at"]) == (None, None, None)
    run = store(home).run(1)
    assert (run["state"], run["ended_at"]) == ("queued", None)


def test_replay_asks_first_and_a_no_changes_nothing(failed_run):
    result = invoke(failed_run, "replay", "daily", "--date", "2024-03-01", input="n\n")
    assert result.exit_code == 1
    assert "Clear 4 task instance(s) in 1 run(s) of daily?" in result.stdout
    assert ti_states(failed_run, 1)["b"] == "failed"
    result = ok(failed_run, "replay", "daily", "--date", "2024-03-01", input="y\n")
    assert ti_states(failed_run, 1) == dict.fromkeys("abcd", "none")


@pytest.mark.parametrize(
    "extra,cleared",
    [
        (["--task", "b"], {"b"}),
        (["--task", "b", "--downstream"], {"b", "c"}),
        (["--task", "b", "--upstream"], {"a", "b"}),
        (["--task", "a", "--downstream"], {"a", "b", "c", "d"}),
        (["--task", "c", "--task", "d"], {"c", "d"}),
    ],
)
def test_replay_chooses_tasks(failed_run, extra, cleared):
    ok(failed_run, "replay", "daily", "--date", "2024-03-01", "--yes", *extra)
    states = ti_states(failed_run, 1)
    assert {t for t, s in states.items() if s == "none"} == cleared


def test_replay_a_range_and_a_day_with_several_runs(daily, write_flow):
    for run_id in (1, 2, 3):
        set_tis(daily, run_id, a="success", b="success", c="success", d="success")
    ok(daily, "replay", "daily", "--date", "2024-03-02", "--to", "2024-03-03", "--task", "d", "-y")
    assert [ti_states(daily, r)["d"] for r in (1, 2, 3)] == ["success", "none", "none"]
    write_flow("twice", TWICE)
    ok(daily, "backfill", "twice", "--from", "2024-03-01", "--to", "2024-03-01")
    result = ok(daily, "replay", "twice", "--date", "2024-03-01", "--yes")
    assert "cleared 2 task instance(s) in 2 run(s)" in result.stdout


def test_replay_with_nothing_to_clear(daily):
    result = ok(daily, "replay", "daily", "--date", "2024-03-01", "--only-failed")
    assert result.stdout.strip() == "nothing to replay: no task instance matches"


def test_replay_bad_input(failed_run):
    home = failed_run
    assert error(home, "replay", "daily", "--date", "2024-03-01", "--task", "x", "-y") == (
        "flow 'daily' has no task 'x' (known: a, b, c, d)"
    )
    assert error(home, "replay", "daily", "--date", "01/03/2024", "-y").startswith(
        "bad date '01/03/2024'"
    )
    assert error(home, "replay", "daily", "--date", "2023-01-01", "--to", "2023-02-01", "-y") == (
        "flow 'daily' has no run from 2023-01-01 to 2023-02-01"
    )
    assert error(home, "replay", "nope", "--date", "2024-03-01") == (
        "unknown flow 'nope' (known: daily)"
    )
    assert ti_states(home, 1)["b"] == "failed"

"""`cronflow logs`: which try's log, compressed logs, and every error (following a running task
with the real daemon is in test_cli_daemon.py)."""

from __future__ import annotations

import gzip

import pytest
from clikit import DAILY, error, invoke, ok, store

from cronflow.logs import attempt_log_path


@pytest.fixture
def daily(home, write_flow):
    """Run 1 of `daily`: b finished after two tries, each with its log; c has not run."""
    write_flow("daily", DAILY)
    ok(home, "backfill", "daily", "--from", "2024-03-01", "--to", "2024-03-01")
    db = store(home)
    db.update_ti(1, "b", state="success", try_number=2)
    db.update_ti(1, "d", state="failed", try_number=1)
    logical = db.run(1)["logical_date"]
    for number in (1, 2):
        path = attempt_log_path(home / "logs", "daily", "b", logical, number)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"output of try {number}\ncronflow: try {number} ended\n")
    return home


def test_logs_shows_the_last_try_by_default_and_any_try_on_demand(daily):
    assert ok(daily, "logs", "daily.b").stdout == "output of try 2\ncronflow: try 2 ended\n"
    result = ok(daily, "logs", "daily.b", "--date", "2024-03-01", "--try", "1")
    assert result.stdout == "output of try 1\ncronflow: try 1 ended\n"


def test_logs_reads_a_compressed_log(daily):
    path = attempt_log_path(daily / "logs", "daily", "b", store(daily).run(1)["logical_date"], 1)
    with gzip.open(path.with_name("try-1.log.gz"), "wb") as handle:
        handle.write(path.read_bytes())
    path.unlink()
    assert ok(daily, "logs", "daily.b", "--try", "1").stdout.startswith("output of try 1")


def test_follow_on_a_finished_task_prints_its_log_and_returns(daily):
    assert ok(daily, "logs", "daily.b", "-f").stdout == "output of try 2\ncronflow: try 2 ended\n"


def test_logs_bad_input(daily):
    assert error(daily, "logs", "daily") == (
        "bad target 'daily': expected FLOW.TASK, e.g. meteo.fetch"
    )
    assert error(daily, "logs", "daily.x") == "flow 'daily' has no task 'x' (known: a, b, c, d)"
    assert error(daily, "logs", "other.b") == "unknown flow 'other' (known: daily)"
    assert error(daily, "logs", "daily.b", "--try", "3") == "--try 3: daily.b has tries 1 to 2"
    assert error(daily, "logs", "daily.c", "--try", "1") == "--try 1: daily.c has no try yet"
    assert error(daily, "logs", "daily.c") == (
        "daily.c has not run yet in the run of 2024-03-01T02:30:00+01:00 (state none); "
        "use -f to wait for it"
    )
    assert error(daily, "logs", "daily.c", "-f") == (
        f"daily.c waits to run, but no daemon is running on {daily}"
    )
    assert error(daily, "logs", "daily.d") == "no log for try 1 of daily.d"
    store(daily).update_ti(1, "c", state="upstream_failed")
    assert error(daily, "logs", "daily.c") == (
        "daily.c did not run in the run of 2024-03-01T02:30:00+01:00 (state upstream_failed)"
    )
    assert error(daily, "logs", "daily.b", "--date", "2024-03-09").startswith(
        "flow 'daily' has no run on 2024-03-09"
    )


def test_logs_try_must_be_a_number(daily):
    result = invoke(daily, "logs", "daily.b", "--try", "last")
    assert result.exit_code == 2  # typer's own check of an int option

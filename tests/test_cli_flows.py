"""`cronflow list`, `show`, `pause`/`unpause`, `why` and `top` on a real home, without the daemon
(the daemon's side is in test_cli_daemon.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from clikit import DAILY, MANUAL, TWICE, error, ok, rows, set_tis, store

from cronflow.states import RunState
from cronflow.timeparse import iso

LIST_KEYS = {"flow_id", "schedule_text", "paused", "run_id", "logical_date", "state"}
LIST_KEYS |= {"next_fire_at", "recent_states", "held_back", "held_fire_at"}
PARIS = ZoneInfo("Europe/Paris")

WAITER = """
from cronflow import Flow, FlowDependency, Shell
with Flow("waiter", schedule="0 5 * * *", timezone="Europe/Paris", start_date="2024-03-01",
          wait_for=[FlowDependency("daily", offset_days=-1)]):
    Shell("t", "true", pool="station")
"""


@pytest.fixture
def daily(home, write_flow):
    write_flow("daily", DAILY)
    ok(home, "backfill", "daily", "--from", "2024-03-01", "--to", "2024-03-03")
    return home


def _now() -> datetime:
    return datetime.now(UTC)


# --- list ----------------------------------------------------------------------------------------
def test_list_shows_last_run_next_run_and_recent_state_counts(daily, write_flow):
    write_flow("broken", "from cronflow import Flow\nFlow('broken', schedule='61 * * * *')\n")
    write_flow("manual", MANUAL)
    set_tis(daily, 1, a="success", b="success", c="success", d="success")
    set_tis(daily, 2, a="success", b="failed", c="upstream_failed", d="success")
    found = rows(daily, "list")
    assert found[0]["flow_id"] is None and "broken.py" in found[0]["path"]
    assert "61" in found[0]["error"]
    flows = {r["flow_id"]: r for r in found[1:]}
    assert all(set(r) >= LIST_KEYS for r in flows.values())
    row = flows["daily"]
    assert row["schedule_text"] == "daily at 02:30 Europe/Paris"
    assert (row["run_id"], row["state"]) == (3, "queued")
    assert row["logical_date"] == "2024-03-03T01:30:00+00:00"
    assert row["recent_states"] == {"success": 1, "failed": 1, "queued": 1}
    assert row["next_fire_at"] > iso(_now())
    assert flows["manual"]["schedule_text"] == "manual only"
    assert flows["manual"]["next_fire_at"] is None
    lines = ok(daily, "list").stdout.splitlines()
    assert lines[0].split()[:3] == ["flow", "schedule", "paused"]
    assert lines[1].split()[0] == "BROKEN"
    daily_line = next(line for line in lines if line.split()[0] == "daily")
    assert "daily at 02:30 Europe/Paris" in daily_line
    assert "2024-03-03 02:30" in daily_line
    assert daily_line.rstrip().endswith("1 ok, 1 failed, 1 queued")


def test_list_does_not_wrap_when_piped(daily):
    env = {**os.environ, "CRONFLOW_HOME": str(daily), "NO_COLOR": "1"}
    env.pop("COLUMNS", None)
    result = subprocess.run(
        [sys.executable, "-m", "cronflow", "list"], capture_output=True, text=True, env=env
    )
    lines = result.stdout.splitlines()
    assert len(lines) == 2, result.stdout  # header + one flow, each on a single line


def test_states_are_coloured_on_a_terminal_and_plain_with_no_color(daily):
    set_tis(daily, 1, a="success", b="success", c="success", d="success")
    env = {**os.environ, "CRONFLOW_HOME": str(daily), "FORCE_COLOR": "1", "COLUMNS": "200"}
    env.pop("NO_COLOR", None)
    command = [sys.executable, "-m", "cronflow", "runs", "daily"]
    coloured = subprocess.run(command, capture_output=True, text=True, env=env).stdout
    assert "\x1b[32msuccess" in coloured  # green
    plain = subprocess.run(
        command, capture_output=True, text=True, env={**env, "NO_COLOR": "1"}
    ).stdout
    assert "\x1b[" not in plain and "success" in plain


def test_a_terminal_table_folds_only_its_wrapping_column_to_the_width(daily):
    env = {**os.environ, "CRONFLOW_HOME": str(daily), "NO_COLOR": "1", "TTY_COMPATIBLE": "1"}
    command = [sys.executable, "-m", "cronflow", "list"]
    wide = subprocess.run(command, capture_output=True, text=True, env={**env, "COLUMNS": "200"})
    assert [line.split()[0] for line in wide.stdout.splitlines()] == ["flow", "daily"]
    assert "daily at 02:30 Europe/Paris" in wide.stdout
    narrow = subprocess.run(command, capture_output=True, text=True, env={**env, "COLUMNS": "60"})
    lines = narrow.stdout.splitlines()
    # the schedule folds at its floor width (12); the other columns stay whole on the first line
    assert lines[1].split()[:4] == ["daily", "daily", "at", "no"]
    assert "2024-03-03 02:30" in lines[1]
    assert [line[:6].strip() + "|" + line[6:].strip() for line in lines[2:]] == [
        "|02:30",
        "|Europe/Paris",
    ]


LONG_ERROR = "raise RuntimeError('" + "a long explanation " * 12 + "')\n"


def test_a_broken_files_long_error_widens_no_column_of_list(daily, write_flow):
    write_flow("broken", LONG_ERROR)
    piped = ok(daily, "list").stdout.splitlines()
    assert piped[1].startswith("BROKEN  ") and "a long explanation" in piped[1]
    assert len(piped[1]) > 200  # the error is whole on its line...
    assert len(piped[2]) < 120  # ...and the flow's row stays as narrow as without it
    assert piped[2].split()[:6] == ["daily", "daily", "at", "02:30", "Europe/Paris", "no"]
    env = {**os.environ, "CRONFLOW_HOME": str(daily), "NO_COLOR": "1", "TTY_COMPATIBLE": "1"}
    terminal = subprocess.run(
        [sys.executable, "-m", "cronflow", "list"],
        capture_output=True,
        text=True,
        env={**env, "COLUMNS": "140"},
    ).stdout.splitlines()
    # on a terminal the error folds within the width, after the first column
    broken = [line for line in terminal if "explanation" in line or line.startswith("BROKEN")]
    assert len(broken) > 1 and all(len(line) <= 140 for line in terminal), terminal
    assert broken[0].startswith("BROKEN  ") and broken[1].startswith(" " * len("BROKEN  "))
    daily_line = next(line for line in terminal if line.startswith("daily"))
    assert "daily at 02:30 Europe/Paris" in daily_line


def test_piped_tables_have_no_trailing_spaces(daily, write_flow):
    set_tis(daily, 1, a="success", b="failed", c="upstream_failed", d="success")
    ok(daily, "var", "set", "short", "1")
    ok(daily, "conn", "add", "st", "sftp://meteo@station:22?key_file=/etc/k")
    write_flow("broken", LONG_ERROR)
    commands = [
        ["list"],
        ["runs", "daily"],
        ["tasks", "daily", "--date", "2024-03-01"],
        ["show", "daily"],
        ["next", "--limit", "3"],
        ["var", "list"],
        ["conn", "list"],
        ["top", "--once"],
        ["xcom", "daily", "--date", "2024-03-01"],
    ]
    for command in commands:
        out = ok(daily, *command).stdout
        trailing = [line for line in out.splitlines() if line != line.rstrip()]
        assert not trailing, (command, trailing)
    conn = ok(daily, "conn", "list").stdout
    assert "sftp://meteo@station:22?key_file=/etc/k" in conn  # not %2Fetc%2Fk


def test_fitting_narrows_the_widest_folding_column_down_to_its_floor():
    from cronflow.cli.tables import MIN_FOLDED_WIDTH, fit

    # 3 columns of 10, 30 and 20 with gaps of 2: 64 wide
    assert fit([10, 30, 20], [False, True, True], 64, [1, 1, 1]) == [10, 30, 20]
    assert fit([10, 30, 20], [False, True, True], 54, [1, 1, 1]) == [10, 20, 20]
    assert fit([10, 30, 20], [False, True, True], 44, [1, 1, 1]) == [10, 15, 15]
    floor = max(MIN_FOLDED_WIDTH, 14)
    assert fit([10, 30, 20], [False, True, True], 10, [1, 14, 1]) == [10, floor, MIN_FOLDED_WIDTH]


# --- show ----------------------------------------------------------------------------------------
def test_show_gives_doc_tree_links_next_fires_and_the_runs_grid(daily, write_flow):
    write_flow("waiter", WAITER)
    set_tis(daily, 2, a="success", b="failed", c="upstream_failed", d="success")
    detail = rows(daily, "show", "daily", "--runs", "2")
    assert detail["doc"] == "A daily flow."
    tasks = {t["task_id"]: t for t in detail["tasks"]}
    assert tasks["a"]["downstream"] == ["b", "d"] and tasks["c"]["upstream"] == ["b"]
    assert detail["waited_by"] == [{"flow_id": "waiter", "offset_days": -1}]
    fires = detail["next_fire_at"]
    assert len(fires) == 5 and fires == sorted(fires) and fires[0] > iso(_now())
    assert [r["run_id"] for r in detail["runs"]] == [2, 3]  # the last two, oldest first
    assert detail["runs"][0]["task_states"] == {
        "a": "success",
        "b": "failed",
        "c": "upstream_failed",
        "d": "success",
    }
    assert [r["run_type"] for r in detail["runs"]] == ["backfill", "backfill"]
    assert rows(daily, "show", "waiter")["wait_for"] == [
        {"flow_id": "daily", "offset_days": -1, "wait_timeout_s": 86400.0, "soft_fail": False}
    ]
    waiter = ok(daily, "show", "waiter").stdout
    assert "waits for: daily (the day before: its whole day, at most 24h00m)" in waiter
    text = ok(daily, "show", "daily", "--runs", "2").stdout
    assert "A daily flow." in text
    assert "waited for by: waiter (the day before)" in text
    assert "└── a (shell, 2 retries)" in text
    grid = {line.split()[0]: line.split()[1:] for line in text.splitlines() if line.strip()}
    assert grid["run"] == ["FAIL", "queue"] and grid["type"] == ["backf", "backf"]
    assert grid["b"] == ["FAIL", "·"] and grid["c"] == ["upfail", "·"]


def test_show_a_diamond_draws_a_shared_task_once(home, write_flow):
    write_flow(
        "diamond",
        """
        from cronflow import Flow, Shell
        with Flow("diamond"):
            top, left, right, bottom = (Shell(n, "true") for n in ("top", "left", "right", "bottom"))
            top >> [left, right]
            [left, right] >> bottom
        """,
    )
    text = ok(home, "show", "diamond").stdout
    assert text.count("bottom (shell)") == 1 and "bottom (see above)" in text
    assert "next runs: none scheduled" in text and "no runs yet" in text


def test_show_bad_input(daily):
    assert error(daily, "show", "nope") == "unknown flow 'nope' (known: daily)"
    assert error(daily, "show", "daily", "--runs", "0") == (
        "--runs must be between 1 and 10,000, got 0"
    )
    assert error(daily, "show", "daily", "--runs", "99999999999999999999") == (
        "--runs must be between 1 and 10,000, got 99999999999999999999"
    )


# --- pause ---------------------------------------------------------------------------------------
def test_pause_and_unpause(daily):
    assert ok(daily, "pause", "daily").stdout.strip() == "flow daily paused"
    assert rows(daily, "list")[0]["paused"] is True
    assert "paused" in ok(daily, "show", "daily").stdout.splitlines()[0]
    assert ok(daily, "unpause", "daily").stdout.strip() == "flow daily unpaused"
    assert rows(daily, "list")[0]["paused"] is False
    assert error(daily, "pause", "nope") == "unknown flow 'nope' (known: daily)"
    assert error(daily, "unpause", "nope") == "unknown flow 'nope' (known: daily)"


# --- why -----------------------------------------------------------------------------------------
def why(home, *args: str) -> list[str]:
    return [line.removeprefix("- ") for line in ok(home, "why", *args).stdout.splitlines()]


def test_why_names_the_missing_daemon_and_the_pause(daily):
    ok(daily, "pause", "daily")
    reasons = why(daily, "daily", "--date", "2024-03-01")
    assert reasons[0] == (
        f"the daemon is not running on {daily}: nothing runs until `cronflow daemon` "
        "(or its systemd service) starts"
    )
    assert reasons[1] == "flow 'daily' is paused: no run starts until `cronflow unpause daily`"
    assert reasons[2] == "the run of 2024-03-01 02:30 CET is queued: it starts once the daemon runs"
    assert reasons[3:] == [f"{t}: waiting for its run to start" for t in "abcd"]


def test_why_there_is_no_run(home, write_flow):
    write_flow("daily", DAILY)
    write_flow("weekly", DAILY.replace('"daily"', '"weekly"').replace("30 2 * * *", "0 9 * * 1"))
    write_flow("manual", MANUAL)
    assert why(home, "daily")[1].startswith("flow 'daily' has no run yet; the next fire time is ")
    assert why(home, "daily", "--date", "2024-02-01")[1] == (
        "2024-02-01 is before the flow's start date 2024-03-01 00:00 CET"
    )
    tomorrow = str((_now() + timedelta(days=2)).date())
    assert why(home, "daily", "--date", tomorrow)[1].startswith(
        f"the run of {tomorrow} is not due yet: it fires at {tomorrow} 02:30"
    )
    assert why(home, "weekly", "--date", "2024-03-05")[1] == (
        "the schedule (at 09:00 on Mon Europe/Paris) does not fire on 2024-03-05"
    )
    assert why(home, "daily", "--date", "2024-03-05")[1] == (
        "no run of 2024-03-05 was created (catchup is off: only the latest missed run is made); "
        "`cronflow backfill daily --from 2024-03-05 --to 2024-03-05` creates it"
    )
    assert why(home, "manual")[1] == "flow 'manual' has no schedule: it runs only when triggered"


def test_why_a_queued_run_waits_for_max_active_runs_and_other_flows(daily, write_flow):
    store(daily).set_run_state(1, RunState.RUNNING, _now())
    assert why(daily, "daily", "--date", "2024-03-02")[1] == (
        "the run of 2024-03-02 02:30 CET is queued: "
        "held back by max_active_runs=1: 1 run active (2024-03-01 02:30 CET)"
    )
    write_flow("waiter", WAITER)
    ok(daily, "backfill", "waiter", "--from", "2024-03-02", "--to", "2024-03-03")
    reasons = why(daily, "waiter", "--date", "2024-03-02")
    # a backfill run counts its wait from its creation: it gives up a day later
    created = store(daily).runs_of_flow("waiter")[-1]["created_at"]
    gives_up = (datetime.fromisoformat(created) + timedelta(days=1)).astimezone(PARIS)
    assert (
        reasons[1]
        == (
            "the run of 2024-03-02 05:00 CET is queued: it waits for daily 2024-03-01: 0 of 1 runs "
            f"succeeded; it gives up at {gives_up:%Y-%m-%d %H:%M %Z} (wait_timeout 1d), then its "
            "first tasks end failed"
        )
        or reasons[1]
    )
    assert reasons[2] == "daily 2024-03-01 02:30 running"  # no doubled quote ('daily''s)
    assert "''" not in "\n".join(reasons)
    set_tis(daily, 2, a="success", b="failed", c="upstream_failed", d="success")
    reasons = why(daily, "waiter", "--date", "2024-03-03")
    assert "it waits for daily 2024-03-02: 0 of 1 runs succeeded" in reasons[1]
    assert reasons[2] == "daily 2024-03-02 02:30 failed"  # at once, not just "waiting"
    (task,) = rows(daily, "tasks", "waiter", "--date", "2024-03-03")
    assert task["reason"] == "the run waits for daily 2024-03-02: 02:30 failed"
    table = ok(daily, "tasks", "waiter", "--date", "2024-03-03").stdout
    assert "the run waits for daily 2024-03-02: 02:30 failed" in table
    # no task of the flow has a Celery queue: no queue column (tests/test_celery.py has one)
    assert task["queue"] is None
    header = next(line for line in table.splitlines() if line.lstrip().startswith("task"))
    assert "host" in header and "queue" not in header
    set_tis(daily, 2, b="success", c="success")
    assert "waits for" not in why(daily, "waiter", "--date", "2024-03-03")[1]


def test_why_a_held_back_fire_time_says_so(daily, write_flow):
    db = store(daily)
    db.set_run_state(3, RunState.RUNNING, _now())
    db.set_last_scheduled("daily", datetime(2024, 3, 3, 1, 30, tzinfo=UTC))
    db.set_held_until("daily", datetime(2024, 3, 5, 1, 30, tzinfo=UTC))  # the planner's record
    for run_id in (1, 2):
        set_tis(daily, run_id, a="success", b="success", c="success", d="success")
    held = "held back by max_active_runs=1: 1 run active"
    assert why(daily, "daily", "--date", "2024-03-04")[1:] == [
        f"flow 'daily': the run of 2024-03-04 02:30 CET is {held}; it is created when one of "
        "them ends",
        f"the run of 2024-03-04 is {held}: it is created when one of them ends",
    ]
    row = rows(daily, "list")[0]
    assert (row["held_back"], row["held_fire_at"]) == (held, "2024-03-04T01:30:00+00:00")
    line = ok(daily, "list").stdout.splitlines()[1]
    assert f"2024-03-04 02:30 {held}" in line
    db.set_run_state(3, RunState.SUCCESS, _now())  # a run ended: nothing is held back any more
    assert rows(daily, "list")[0]["held_back"] is None


def test_why_a_running_run_explains_each_waiting_task(daily, write_flow):
    db = store(daily)
    db.set_run_state(1, RunState.RUNNING, _now())
    db.update_ti(1, "a", state="running", try_number=1, pid=4242, host="srv", start_at=iso(_now()))
    reasons = why(daily, "daily", "--date", "2024-03-01")
    assert reasons[1] == "the run of 2024-03-01 02:30 CET is running"
    assert (
        reasons[2].startswith("a: running since ") and "(try 1 of 3, pid 4242 on srv)" in reasons[2]
    )
    assert reasons[3] == "b: waiting on upstream task(s) a (running)"
    assert reasons[4] == "c: waiting on upstream task(s) b (none)"
    retry_at = (_now() + timedelta(days=3)).replace(microsecond=0)
    db.update_ti(1, "a", state="up_for_retry", reason="exit code 1", next_try_at=iso(retry_at))
    paris = retry_at.astimezone(ZoneInfo("Europe/Paris")).strftime("%Y-%m-%d %H:%M %Z")
    assert why(daily, "daily", "--date", "2024-03-01", "--task", "a")[1:] == [
        "the run of 2024-03-01 02:30 CET is running",
        f"a: try 1 failed (exit code 1); retry at {paris} (try 2 of 3)",
    ]


def test_why_a_ready_task_waits_for_its_pool(daily, write_flow):
    write_flow("waiter", WAITER)
    ok(daily, "backfill", "waiter", "--from", "2024-03-02", "--to", "2024-03-03")
    db = store(daily)
    for run in db.runs_of_flow("waiter"):
        db.set_run_state(run["run_id"], RunState.RUNNING, _now())
    first, second = sorted(r["run_id"] for r in db.runs_of_flow("waiter"))
    db.update_ti(first, "t", state="running", try_number=1, start_at=iso(_now()))
    db.update_ti(second, "t", state="scheduled")
    assert why(daily, "waiter", "--date", "2024-03-03")[-1] == (
        "t: ready, waiting: pool 'station' is full (1 of 1 slots in use)"
    )
    db.update_ti(first, "t", state="success")
    assert why(daily, "waiter", "--date", "2024-03-03")[-1] == (
        "t: ready, starting at the daemon's next pass"
    )


def test_why_a_finished_run_names_its_failures(daily):
    set_tis(daily, 2, a="success", b="failed", c="upstream_failed", d="success")
    store(daily).update_ti(2, "b", reason="exit code 3")
    reasons = why(daily, "daily", "--date", "2024-03-02")
    assert reasons[1].startswith("the run of 2024-03-02 02:30 CET finished failed at ")
    assert reasons[2:] == ["b: finished failed: exit code 3"]


def test_why_bad_input(daily, write_flow):
    write_flow("twice", TWICE)
    ok(daily, "backfill", "twice", "--from", "2024-03-01", "--to", "2024-03-01")
    assert error(daily, "why", "nope") == "unknown flow 'nope' (known: daily, twice)"
    assert error(daily, "why", "daily", "--task", "zz") == (
        "flow 'daily' has no task 'zz' (known: a, b, c, d)"
    )
    assert error(daily, "why", "daily", "--date", "March 1st").startswith("bad date 'March 1st'")
    assert error(daily, "why", "twice", "--date", "2024-03-01").startswith(
        "2 runs of flow 'twice' match 2024-03-01"
    )


# --- top -----------------------------------------------------------------------------------------
def test_top_once_shows_active_tasks_and_recent_failures(daily):
    db = store(daily)
    db.update_ti(1, "a", state="running", try_number=1, pid=4242, start_at=iso(_now()))
    db.update_ti(1, "b", state="queued", try_number=1)
    set_tis(daily, 2, a="success", b=("failed", 3), c="upstream_failed", d="success")
    db.update_ti(2, "b", reason="exit code 9")
    text = ok(daily, "top", "--once").stdout
    assert "daemon not running  1 running, 1 waiting" in text
    active = [line.split() for line in text.splitlines() if line.startswith("daily")]
    assert active[0][:6] == ["daily", "a", "2024-03-01", "02:30", "running", "1/3"]
    assert active[1][:6] == ["daily", "b", "2024-03-01", "02:30", "queued", "1/3"]
    assert active[2][:4] == ["daily", "b", "2024-03-02", "02:30"]
    assert text.rstrip().endswith("exit code 9")
    frame = rows(daily, "top")
    assert frame["counts"] == {"running": 1, "waiting": 1}
    keys = {"flow_id", "task_id", "run_id", "logical_date", "state", "try_number"}
    assert [(r["task_id"], r["state"]) for r in frame["active"]] == [
        ("a", "running"),
        ("b", "queued"),
    ]
    assert all(keys <= set(r) for r in frame["active"] + frame["failures"])
    assert [(r["run_id"], r["reason"]) for r in frame["failures"]] == [(2, "exit code 9")]


def test_table_styles_are_rendered_as_rich_renders_them():
    from rich.color import ColorSystem
    from rich.style import Style

    from cronflow.cli.app import STATE_STYLES
    from cronflow.cli.tables import SGR

    assert set(STATE_STYLES.values()) - {"default"} <= set(SGR)
    for name, codes in SGR.items():
        assert Style.parse(name)._make_ansi_codes(ColorSystem.EIGHT_BIT) == codes, name


def test_why_says_when_a_wait_has_nothing_to_wait_for(home, write_flow):
    write_flow(
        "weekly",
        """
        from cronflow import Flow, Shell
        with Flow("weekly", schedule="0 5 * * 1", timezone="Europe/Paris", start_date="2024-03-04"):
            Shell("t", "true")
        with Flow("after", schedule="0 7 * * *", timezone="Europe/Paris", start_date="2024-03-01",
                  wait_for=["weekly"]):
            Shell("t", "true")
        """,
    )
    ok(home, "backfill", "after", "--from", "2024-03-01", "--to", "2024-03-05")
    assert why(home, "after", "--date", "2024-03-05")[1:] == [
        "the run of 2024-03-05 07:00 CET is queued: it starts once the daemon runs",
        "'weekly' does not fire on 2024-03-05 (at 05:00 on Mon Europe/Paris): nothing to wait for",
        "t: waiting for its run to start",
    ]
    assert why(home, "after", "--date", "2024-03-01")[2] == (
        "2024-03-01 is before the start date of 'weekly': nothing to wait for"
    )
    assert (
        "it waits for weekly 2024-03-04: 0 of 1 runs succeeded"
        in why(home, "after", "--date", "2024-03-04")[1]
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["top", "--once", "--failures", "99999999999999999999"],
            "--failures must be between 0 and 10,000, got 99999999999999999999",
        ),
        (["top", "--once", "--failures", "-1"], "--failures must be between 0 and 10,000, got -1"),
        (
            ["top", "--once", "--interval", "nan"],
            "--interval must be between 0.1 and 3,600, got nan",
        ),
        (
            ["top", "--once", "--interval", "1e308"],
            "--interval must be between 0.1 and 3,600, got 1e+308",
        ),
        (["next", "--limit", "1000000"], "--limit must be between 1 and 10,000, got 1000000"),
        (["next", "daily", "--limit", "10001"], "--limit must be between 1 and 10,000, got 10001"),
    ],
)
def test_counts_and_intervals_are_bounded(daily, args, message):
    assert error(daily, *args) == message


@pytest.mark.parametrize(
    ("args", "bound"),
    [
        (["runs"], "(1 to 10,000)"),
        (["show"], "(1 to 10,000)"),
        (["next"], "(1 to 10,000)"),
        (["top"], "(0 to 10,000)"),
        (["top"], "(0.1 to 3,600)"),
    ],
)
def test_the_help_says_the_bounds(daily, args, bound):
    assert bound in " ".join(ok(daily, *args, "--help").stdout.split())

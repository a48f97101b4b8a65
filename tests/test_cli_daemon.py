"""The repair and inspection commands against the real daemon: replay and mark make it run or
stop tasks, `logs -f` follows a running task to its end, `why` and `top` see live states."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import cli, is_alive, wait_for

pytestmark = pytest.mark.slow

FLAKY = """
from cronflow import Flow, Shell
with Flow("flaky", defaults={{"retry_delay": 0}}):
    first = Shell("first", "echo first")
    shaky = Shell("shaky", "test -f {flag} && echo fixed || {{ echo broken; exit 1; }}")
    last = Shell("last", "echo last")
    first >> shaky >> last
"""

GATED = """
from cronflow import Flow, Shell
with Flow("gated"):
    Shell("wait", "echo $$ >> {pids}; echo waiting; while [ ! -f {gate} ]; do sleep 0.02; done; echo through")
    Shell("after", "echo after")
"""


@pytest.fixture(autouse=True)
def keep_history(home: Path) -> None:
    """These tests use 2024 dates: keep the daemon's retention from deleting those runs."""
    with open(home / "cronflow.toml", "a") as config:
        config.write("[retention]\ndelete_runs_after_days = 0\n")


def tasks_of(home: Path, flow: str, *extra: str) -> dict[str, dict]:
    result = cli(home, "tasks", flow, "--json", *extra)
    assert result.returncode == 0, result.stderr
    return {row["task"]: row for row in json.loads(result.stdout)}


def run_state(home: Path, flow: str) -> str:
    result = cli(home, "runs", flow, "--json", "--limit", "1")
    return json.loads(result.stdout)[0]["state"]


def test_marking_a_failed_task_success_lets_its_downstream_run(home, daemon, write_flow):
    write_flow("flaky", FLAKY.format(flag=home / "never"))
    daemon()
    assert cli(home, "trigger", "flaky", "--date", "2024-03-01", "--wait").returncode == 1
    result = cli(home, "mark", "flaky.shaky", "--date", "2024-03-01", "--state", "success")
    assert result.returncode == 0, result.stderr
    assert "cleared last (upstream_failed)" in result.stdout
    wait_for(lambda: run_state(home, "flaky") == "success", what="the run to go on")
    states = {t: r["state"] for t, r in tasks_of(home, "flaky").items()}
    assert states == {"first": "success", "shaky": "success", "last": "success"}


def test_replay_of_a_failed_task_runs_it_again_with_a_new_try(home, daemon, write_flow):
    flag = home / "fixed"
    write_flow("flaky", FLAKY.format(flag=flag))
    daemon()
    assert cli(home, "trigger", "flaky", "--date", "2024-03-01", "--wait").returncode == 1
    states = {t: r["state"] for t, r in tasks_of(home, "flaky").items()}
    assert states == {"first": "success", "shaky": "failed", "last": "upstream_failed"}
    flag.touch()
    result = cli(home, "replay", "flaky", "--date", "2024-03-01", "--only-failed", "--yes")
    assert result.returncode == 0, result.stderr
    assert "note:" not in result.stderr  # the daemon runs
    wait_for(lambda: run_state(home, "flaky") == "success", what="the replayed run")
    rows = tasks_of(home, "flaky")
    assert {t: (r["state"], r["try_number"]) for t, r in rows.items()} == {
        "first": ("success", 1),
        "shaky": ("success", 2),
        "last": ("success", 1),
    }
    log_dir = home / "logs" / "flaky" / "shaky" / "20240301T000000Z"
    assert "broken" in (log_dir / "try-1.log").read_text()
    assert "fixed" in (log_dir / "try-2.log").read_text()
    logs = cli(home, "logs", "flaky.shaky", "--date", "2024-03-01", "--try", "1")
    assert "broken" in logs.stdout and "fixed" not in logs.stdout


def test_mark_a_running_task_stops_it_and_the_run_goes_on(home, daemon, write_flow):
    pids, gate = home / "pids", home / "gate"
    write_flow("gated", GATED.format(pids=pids, gate=gate))
    daemon()
    assert cli(home, "trigger", "gated").returncode == 0
    wait_for(lambda: pids.exists() and pids.read_text().strip(), what="the task to start")
    pid = int(pids.read_text())
    result = cli(home, "mark", "gated.wait", "--date", _latest(home, "gated"), "--state", "success")
    assert result.returncode == 0, result.stderr
    wait_for(lambda: run_state(home, "gated") == "success", what="the run to end")
    wait_for(lambda: not is_alive(pid), what="the marked task's process to end")
    assert tasks_of(home, "gated")["wait"]["state"] == "success"
    log = next((home / "logs" / "gated" / "wait").rglob("try-1.log")).read_text()
    assert "stopped: its state was changed to success" in log


def test_replay_of_a_running_task_kills_it_and_starts_a_new_try(home, daemon, write_flow):
    pids, gate = home / "pids", home / "gate"
    write_flow("gated", GATED.format(pids=pids, gate=gate))
    daemon()
    assert cli(home, "trigger", "gated").returncode == 0
    wait_for(lambda: pids.exists() and pids.read_text().strip(), what="the first try")
    first = int(pids.read_text())
    date = _latest(home, "gated")
    assert cli(home, "replay", "gated", "--date", date, "--task", "wait", "-y").returncode == 0
    wait_for(lambda: len(pids.read_text().split()) == 2, what="the second try")
    wait_for(lambda: not is_alive(first), what="the first try to be killed")
    assert tasks_of(home, "gated")["wait"]["try_number"] == 2
    gate.touch()
    wait_for(lambda: run_state(home, "gated") == "success", what="the run to end")
    assert tasks_of(home, "gated")["wait"]["try_number"] == 2
    log_dir = next((home / "logs" / "gated" / "wait").iterdir())
    first_log = (log_dir / "try-1.log").read_text().splitlines()
    assert first_log[-1].endswith("stopped: its state was changed to none")  # reaped, once
    assert "through" in (log_dir / "try-2.log").read_text()


@contextmanager
def following(home: Path, target: str) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """`cronflow logs TARGET -f` in the background, its output in a file; stopped if still
    running at the end."""
    out_path = home / "follow.out"
    env = {**os.environ, "CRONFLOW_HOME": str(home), "NO_COLOR": "1"}
    with open(out_path, "wb") as out:
        follower = subprocess.Popen(
            [sys.executable, "-m", "cronflow", "logs", target, "-f"],
            stdout=out,
            stderr=subprocess.PIPE,
            env=env,
        )
    try:
        yield follower, out_path
    finally:
        if follower.poll() is None:
            follower.send_signal(signal.SIGTERM)
            follower.wait()


def test_logs_follow_a_running_task_until_it_ends(home, daemon, write_flow):
    pids, gate = home / "pids", home / "gate"
    write_flow("gated", GATED.format(pids=pids, gate=gate))
    daemon()
    assert cli(home, "trigger", "gated", "--date", "2024-03-01").returncode == 0
    with following(home, "gated.wait") as (follower, out_path):
        wait_for(lambda: b"waiting" in out_path.read_bytes(), what="the task's first line")
        assert follower.poll() is None  # still following: the task runs
        gate.touch()
        assert follower.wait(30) == 0, follower.stderr.read() if follower.stderr else ""
    text = out_path.read_text()
    assert text.index("waiting") < text.index("through") < text.index("cronflow: try 1 ended")
    assert cli(home, "logs", "gated.wait").stdout == text  # the same log, read at once


@pytest.mark.parametrize(
    "follow_first", [True, False], ids=["follow-then-mark", "mark-then-follow"]
)
def test_logs_follow_of_a_marked_task_waits_for_its_end_line(
    home, daemon, write_flow, follow_first
):
    """A task marked while it runs changes state at once; its end line comes only once the
    daemon has stopped its process, here after the SIGKILL grace (it ignores SIGTERM). A
    follower started before the mark, or just after it, prints the log up to that line."""
    write_flow(
        "stubborn",
        """
        from cronflow import Flow, Shell
        with Flow("stubborn"):
            Shell("hold", "trap '' TERM; echo holding; while :; do sleep 0.05; done")
        """,
    )
    daemon()
    assert cli(home, "trigger", "stubborn", "--date", "2024-03-01").returncode == 0
    log_dir = home / "logs" / "stubborn" / "hold"
    wait_for(
        lambda: log_dir.is_dir() and "holding" in cli(home, "logs", "stubborn.hold").stdout,
        what="the task's first line",
    )

    def mark() -> None:
        marked = cli(home, "mark", "stubborn.hold", "--date", "2024-03-01", "--state", "failed")
        assert marked.returncode == 0, marked.stderr

    if not follow_first:
        mark()
    with following(home, "stubborn.hold") as (follower, out_path):
        wait_for(lambda: b"holding" in out_path.read_bytes(), what="the follower's first line")
        if follow_first:
            mark()
        assert follower.wait(60) == 0, follower.stderr.read() if follower.stderr else ""
    text = out_path.read_text()
    assert "stopped: its state was changed to failed" in text.splitlines()[-1]
    assert cli(home, "logs", "stubborn.hold").stdout == text


def test_why_and_top_see_what_the_daemon_does(home, daemon, write_flow):
    write_flow(
        "retrying",
        """
        from cronflow import Flow, Shell
        with Flow("retrying"):
            Shell("fails", "exit 4", retries=1, retry_delay="1h")
        """,
    )
    daemon()
    assert cli(home, "trigger", "retrying", "--date", "2024-03-01").returncode == 0
    wait_for(
        lambda: tasks_of(home, "retrying")["fails"]["state"] == "up_for_retry", what="the retry"
    )
    reasons = cli(home, "why", "retrying").stdout.splitlines()
    assert reasons[0] == "- the run of 2024-03-01 00:00 UTC is running"
    assert reasons[1].startswith("- fails: try 1 failed (exit code 4); retry at ")
    assert reasons[1].endswith(" (try 2 of 2)")
    frame = json.loads(cli(home, "top", "--json").stdout)
    assert [(r["task_id"], r["state"]) for r in frame["active"]] == [("fails", "up_for_retry")]
    assert frame["active"][0]["pid"] is None  # the failed try's process is gone
    assert tasks_of(home, "retrying")["fails"]["try_number"] == 1
    text = cli(home, "top").stdout  # not a terminal: one frame
    assert "daemon pid" in text and "up_for_retry" in text
    assert "0 running, 1 waiting" in text
    (row,) = [line.split() for line in text.splitlines() if " fails " in line]
    assert row[-1] == "-"  # no pid shown
    status = json.loads(cli(home, "status", "--json").stdout)
    assert (status["running_tasks"], status["waiting_tasks"]) == (0, 1)  # as top says


def test_backfill_and_pause_with_the_daemon(home, daemon, write_flow):
    write_flow(
        "days",
        """
        from cronflow import Flow, Shell
        with Flow("days", schedule="0 12 * * *", max_active_runs=2):
            Shell("t", "echo {{ ds }}")
        """,
    )
    daemon()
    assert cli(home, "pause", "days").returncode == 0
    result = cli(home, "backfill", "days", "--from", "2024-03-01", "--to", "2024-03-04")
    assert "4 run(s) created, 0 already existed" in result.stdout
    assert "note: days is paused; `cronflow unpause days` to run them" in result.stderr
    assert "flow 'days' is paused" in cli(home, "why", "days", "--date", "2024-03-01").stdout
    assert cli(home, "unpause", "days").returncode == 0

    def states() -> list[str]:
        return [r["state"] for r in json.loads(cli(home, "runs", "days", "--json").stdout)]

    wait_for(lambda: states() == ["success"] * 4, what="the backfilled runs")


def _latest(home: Path, flow: str) -> str:
    return json.loads(cli(home, "runs", flow, "--json", "--limit", "1").stdout)[0]["logical_date"]

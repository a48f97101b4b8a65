"""Faults, each against the real daemon: crashes, full disks, stuck readers, broken inputs."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from datetime import datetime
from pathlib import Path

import pytest
from conftest import cli, wait_for

pytestmark = pytest.mark.slow


def tis(home: Path, flow: str) -> dict[str, dict]:
    result = cli(home, "tasks", flow, "--json")
    assert result.returncode == 0, result.stderr
    return {row["task"]: row for row in json.loads(result.stdout)}


def test_kill_9_with_20_running_tasks_loses_nothing(home, daemon, write_flow):
    (home / "cronflow.toml").write_text("parallelism = 20\n")
    started = home / "started"
    started.mkdir()
    write_flow(
        "twenty",
        f"""
        from cronflow import Flow, Shell
        with Flow("twenty", defaults={{"retries": 1, "retry_delay": 0}}):
            for i in range(20):
                Shell(f"t{{i}}", "touch {started}/$CRONFLOW_TASK_ID-$CRONFLOW_TRY_NUMBER; "
                                 "[ $CRONFLOW_TRY_NUMBER -gt 1 ] || sleep 600")
    """,
    )
    first = daemon()
    assert cli(home, "trigger", "twenty").returncode == 0
    wait_for(lambda: len(list(started.iterdir())) == 20, what="20 running tasks")
    first.signal(signal.SIGKILL)
    first.wait()
    daemon()
    wait_for(
        lambda: all(r["state"] == "success" for r in tis(home, "twenty").values()),
        what="every task to succeed on its second try",
    )
    rows = tis(home, "twenty")
    assert len(rows) == 20
    assert {r["try_number"] for r in rows.values()} == {2}
    runs = cli(home, "tasks", "twenty", "--json")
    assert {row["logical_date"] for row in json.loads(runs.stdout)} == {rows["t0"]["logical_date"]}
    wait_for(lambda: cli(home, "status", "--json").returncode == 0, what="status")
    status = json.loads(cli(home, "status", "--json").stdout)
    assert status["running_tasks"] == 0


def test_a_long_cli_read_transaction_does_not_stall_the_daemon(home, daemon, write_flow):
    write_flow(
        "quick",
        """
        from cronflow import Flow, Shell
        with Flow("quick"):
            a = Shell("a", "true")
            b = Shell("b", "true")
            a >> b
    """,
    )
    daemon()
    reader = sqlite3.connect(home / "cronflow.db")
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM task_instances").fetchall()  # holds a read snapshot
    try:
        result = cli(home, "trigger", "quick", "--wait")
        assert result.returncode == 0, result.stderr
        with sqlite3.connect(home / "cronflow.db") as db:
            created, a_start, a_end, b_start = db.execute(
                """SELECT r.created_at, a.start_at, a.end_at, b.start_at FROM runs r
                   JOIN task_instances a ON a.run_id = r.run_id AND a.task_id = 'a'
                   JOIN task_instances b ON b.run_id = r.run_id AND b.task_id = 'b'"""
            ).fetchone()
    finally:
        reader.rollback()
        reader.close()
    # The stall is measured, not only survived: a writer blocked by the reader would wait for
    # the busy timeout (30 s) at each write; the daemon's own steps take milliseconds (3 s is
    # room for a busy test machine).
    stamps = [datetime.fromisoformat(t) for t in (created, a_start, a_end, b_start)]
    steps = {
        "run created -> a started": stamps[1] - stamps[0],
        "a ended -> b started": stamps[3] - stamps[2],
    }
    assert all(step.total_seconds() < 3.0 for step in steps.values()), steps


def test_a_full_disk_for_one_log_fails_that_task_not_the_daemon(home, daemon, write_flow):
    write_flow(
        "full",
        """
        from cronflow import Flow, Shell
        with Flow("full"):
            Shell("t", "echo hello")
    """,
    )
    write_flow(
        "fine",
        """
        from cronflow import Flow, Shell
        with Flow("fine"):
            Shell("t", "echo fine")
    """,
    )
    process = daemon()
    # The first try's log is /dev/full: every write to it fails with ENOSPC, as on a full disk.
    log_dir = home / "logs" / "full" / "t" / "20240301T000000Z"
    log_dir.mkdir(parents=True)
    (log_dir / "try-1.log").symlink_to("/dev/full")
    assert (
        cli(home, "trigger", "full", "--date", "2024-03-01T00:00:00+00:00", "--wait").returncode
        == 1
    )
    row = tis(home, "full")["t"]
    assert row["state"] == "failed"
    assert row["reason"] == (
        f"cannot start: cannot write the task log {log_dir / 'try-1.log'}: No space left on device"
    )
    assert process.proc.poll() is None
    assert "event=log_write_failed" in process.output()
    assert cli(home, "trigger", "fine", "--wait").returncode == 0


def test_broken_flow_files_are_isolated(home, daemon, write_flow):
    (home / "cronflow.toml").write_text("import_timeout_s = 2\n")
    write_flow("syntax", "from cronflow import Flow\nFlow('syntax'\n")
    write_flow("hangs", "import time\ntime.sleep(3600)\n")
    write_flow(
        "chatty",
        "import sys\nsys.stdout.write('x' * 5_000_000)\nprint('y' * 1000, file=sys.stderr)\n"
        "from cronflow import Flow, Shell\nwith Flow('chatty'):\n    Shell('t', 'true')\n",
    )
    write_flow(
        "good",
        """
        from cronflow import Flow, Shell
        with Flow("good"):
            Shell("t", "true")
    """,
    )
    daemon()
    assert cli(home, "trigger", "good", "--wait").returncode == 0
    assert cli(home, "trigger", "chatty", "--wait").returncode == 0
    listing = json.loads(cli(home, "list", "--json").stdout)
    errors = {Path(r["path"]).name: r["error"] for r in listing if r.get("error")}
    assert set(errors) == {"syntax.py", "hangs.py"}
    assert "syntax.py: line 2: SyntaxError" in errors["syntax.py"]
    assert "did not finish within 2s" in errors["hangs.py"]


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ("parallelism = [", "cronflow.toml: invalid TOML"),
        ("parallelism = 'four'", "cronflow.toml: parallelism must be int"),
        (None, "cronflow.toml: cannot read"),  # a directory where the file should be
    ],
)
def test_a_corrupt_or_unreadable_config_stops_the_daemon_with_one_line(home, config, expected):
    path = home / "cronflow.toml"
    path.unlink()
    if config is None:
        path.mkdir()
    else:
        path.write_text(config)
    result = cli(home, "daemon", timeout=30)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and expected in lines[0]


def test_files_are_private_and_secrets_stay_out_of_the_daemon_log(home, daemon, write_flow):
    from cronflow.store import Store

    Store(home / "cronflow.db").set_variable("token", "s3cr3t-value", is_secret=True)
    write_flow(
        "secret",
        f"""
        from cronflow import Flow, Shell
        with Flow("secret"):
            Shell("t", "echo {{{{ var.token }}}} > {home}/out.txt")
    """,
    )
    process = daemon()
    assert cli(home, "trigger", "secret", "--wait").returncode == 0
    assert (home / "out.txt").read_text().strip() == "s3cr3t-value"
    process.stop()
    assert "s3cr3t-value" not in process.output()
    for path in [home / "cronflow.db", *home.joinpath("logs").rglob("*.log")]:
        assert os.stat(path).st_mode & 0o077 == 0, path
    for path in home.joinpath("logs").rglob("*"):
        if path.is_dir():
            assert os.stat(path).st_mode & 0o077 == 0, path

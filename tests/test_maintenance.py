"""Retention, db clean/backup and doctor, on real files and a real store."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

from conftest import cli, utc, wait_for

from cronflow import catalog
from cronflow.config import load_settings
from cronflow.control import trigger
from cronflow.housekeeping import (
    Report,
    cap_total_size,
    compress_old_logs,
    delete_old_logs,
    remove_stale_attempt_files,
)
from cronflow.logs import read_log
from cronflow.states import RunState, TaskState
from cronflow.store import Store

DAY = 86400


def make_log(path: Path, text: str, age_days: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    stamp = time.time() - age_days * DAY
    os.utime(path, (stamp, stamp))
    return path


def test_old_logs_are_compressed_and_still_readable(tmp_path):
    old = make_log(tmp_path / "f" / "t" / "d1" / "try-1.log", "old output\n", 10)
    new = make_log(tmp_path / "f" / "t" / "d2" / "try-1.log", "new output\n", 1)
    running = make_log(tmp_path / "f" / "t" / "d3" / "try-1.log", "still running\n", 10)
    report = Report()
    compress_old_logs(tmp_path, 7 * DAY, time.time(), {str(running)}, report)
    assert report.compressed == 1
    assert not old.exists() and old.with_name("try-1.log.gz").exists()
    assert read_log(old) == b"old output\n"
    assert new.exists() and running.exists()
    assert os.stat(old.with_name("try-1.log.gz")).st_mode & 0o077 == 0


def test_logs_past_their_age_are_deleted(tmp_path):
    old = make_log(tmp_path / "a" / "try-1.log.gz", "x", 100)
    young = make_log(tmp_path / "b" / "try-1.log", "y", 5)
    report = Report()
    delete_old_logs(tmp_path, 90 * DAY, time.time(), set(), report)
    assert not old.exists() and young.exists()
    assert (report.deleted_logs, report.freed_bytes) == (1, 1)


def test_total_size_cap_removes_oldest_first_but_never_a_running_log(tmp_path):
    oldest = make_log(tmp_path / "1" / "try-1.log", "a" * 1000, 30)
    running = make_log(tmp_path / "2" / "try-1.log", "b" * 1000, 20)
    middle = make_log(tmp_path / "3" / "try-1.log", "c" * 1000, 10)
    newest = make_log(tmp_path / "4" / "try-1.log", "d" * 1000, 1)
    cap_total_size(tmp_path, 2000, {str(running)}, Report())
    assert [p.exists() for p in (oldest, running, middle, newest)] == [False, True, False, True]


def test_attempt_files_a_crash_left_behind_are_removed_but_not_a_running_attempts(tmp_path):
    stale = make_log(tmp_path / "1" / "try-1.cmd", "echo secret", 2)
    stale_record = make_log(tmp_path / "1" / "try-1.status", "0\n", 2)
    running = make_log(tmp_path / "2" / "try-1.cmd", "sleep 100000", 2)
    fresh = make_log(tmp_path / "3" / "try-1.cmd", "true", 0)
    log = make_log(tmp_path / "1" / "try-1.log", "out", 2)
    report = Report()
    remove_stale_attempt_files(tmp_path, time.time(), {str(tmp_path / "2" / "try-1.log")}, report)
    assert [p.exists() for p in (stale, stale_record, running, fresh, log)] == [
        False,
        False,
        True,
        True,
        True,
    ]
    assert report.stale_attempt_files == 2


def seed_history(home: Path, write_flow) -> Store:
    write_flow(
        "hist",
        """
        from cronflow import Flow, Shell
        with Flow("hist"):
            Shell("t", "true")
    """,
    )
    settings = load_settings(home)
    store = Store(settings.db_path)
    flow = catalog.sync(store, settings).get("hist")
    for day in (1, 2, 3):
        run_id = trigger(store, flow, utc(2020, 1, day))
        store.update_ti(run_id, "t", state=TaskState.SUCCESS, log_path="x")
        store.set_run_state(run_id, RunState.SUCCESS, utc(2020, 1, day))
        store.push_xcom(run_id, "t", "return_value", day)
        make_log(home / "logs" / "hist" / "t" / f"2020010{day}T000000Z" / "try-1.log", "out", 0)
    trigger(store, flow, utc(2020, 1, 4))  # still queued: never cleaned
    return store


def test_db_clean_dry_run_then_for_real(home, write_flow):
    store = seed_history(home, write_flow)
    result = cli(home, "db", "clean", "--older-than", "1d", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("would delete 3 run(s) and 3 task instance(s)")
    assert len(store.runs_between("hist", utc(2019, 1, 1), utc(2021, 1, 1))) == 4
    result = cli(home, "db", "clean", "--older-than", "1d")
    assert result.stdout.startswith("deleted 3 run(s) and 3 task instance(s)")
    runs = store.runs_between("hist", utc(2019, 1, 1), utc(2021, 1, 1))
    assert [r["state"] for r in runs] == ["queued"]
    assert store.pull_xcom(1, "t") is None
    assert not (home / "logs" / "hist" / "t" / "20200101T000000Z").exists()
    assert store.db.execute("SELECT count(*) FROM task_instances").fetchone()[0] == 1


def test_db_clean_rejects_a_bad_age(home):
    result = cli(home, "db", "clean", "--older-than", "soon")
    assert result.returncode == 2
    assert result.stderr.startswith("Error: --older-than: cannot read 'soon'")
    huge = cli(home, "db", "clean", "--older-than", "99999999999d")
    assert huge.returncode == 2
    assert huge.stderr == (
        "Error: --older-than must be at most 36,500 days, got 99,999,999,999 days\n"
    )


def test_db_backup_is_a_consistent_private_copy(home, write_flow, tmp_path):
    seed_history(home, write_flow)
    target = tmp_path / "backup.db"
    result = cli(home, "db", "backup", str(target))
    assert result.returncode == 0, result.stderr
    copy = sqlite3.connect(target)
    assert copy.execute("SELECT count(*) FROM runs").fetchone()[0] == 4
    assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert os.stat(target).st_mode & 0o077 == 0
    live = cli(home, "db", "backup", str(home / "cronflow.db"))
    assert live.returncode == 2 and "is the live database itself" in live.stderr
    nowhere = cli(home, "db", "backup", str(tmp_path / "no" / "dir" / "b.db"))
    assert nowhere.returncode == 2 and "does not exist" in nowhere.stderr


def test_doctor_reports_a_missing_daemon_and_broken_flows(home, write_flow):
    write_flow("broken", "raise RuntimeError('boom')\n")
    result = cli(home, "doctor", "--json")
    assert result.returncode == 1
    findings = {(f["check"], f["status"]) for f in json.loads(result.stdout)}
    assert ("daemon", "fail") in findings
    assert ("flows", "fail") in findings
    assert ("database", "ok") in findings


def test_doctor_is_happy_with_a_running_daemon(home, daemon, write_flow):
    os.chmod(home, 0o700)
    write_flow(
        "ok",
        """
        from cronflow import Flow, Shell
        with Flow("ok"):
            Shell("t", "true")
    """,
    )
    daemon()
    result = cli(home, "doctor")
    assert result.returncode == 0, result.stdout
    assert "ok    daemon" in result.stdout


def test_daemon_applies_retention_soon_after_start(home, daemon):
    old = make_log(home / "logs" / "f" / "t" / "20200101T000000Z" / "try-1.log", "x", 30)
    daemon()
    wait_for(
        lambda: old.with_name("try-1.log.gz").exists(), timeout=60, what="the log to be compressed"
    )
    assert not old.exists()

"""Who changed what: every trigger, mark, replay, backfill, pause and unpause, variable and
connection change is recorded by the library function that makes it (so every face leaves the
trail), with time, user and what it touched, never a secret value; `cronflow audit` lists it;
retention applies."""

from __future__ import annotations

import json
import pwd
from datetime import UTC, datetime, timedelta

import pytest
from clikit import DAILY, error, invoke, ok, rows, store
from conftest import cli

from cronflow import catalog, control, repair
from cronflow.audit import Actor, local_actor
from cronflow.config import load_settings
from cronflow.connections import parse_uri, save_connection
from cronflow.errors import NotFoundError
from cronflow.housekeeping import run_housekeeping
from cronflow.store import RunExistsError
from cronflow.variables import delete_variable, set_variable

ME = pwd.getpwuid(__import__("os").geteuid()).pw_name


@pytest.fixture
def daily(home, write_flow, monkeypatch):
    monkeypatch.delenv("SUDO_USER", raising=False)
    write_flow("daily", DAILY)
    return home


def test_every_change_by_hand_is_recorded_newest_first_without_secrets(daily):
    home = daily
    ok(home, "trigger", "daily", "--date", "2024-03-05", "--conf", '{"station": "north"}')
    ok(home, "backfill", "daily", "--from", "2024-03-01", "--to", "2024-03-02")
    ok(home, "mark", "daily.b", "--date", "2024-03-01", "--state", "failed", "--downstream")
    ok(home, "replay", "daily", "--date", "2024-03-01", "--only-failed", "--yes")
    ok(home, "pause", "daily")
    ok(home, "unpause", "daily")
    ok(home, "var", "set", "token", "--secret", "--stdin", input="tok-very-secret\n")
    ok(home, "var", "set", "region", "eu-west-visible")
    ok(home, "var", "delete", "region")
    uri = "sftp://meteo@station.example:2222?key_file=/k"
    ok(home, "conn", "add", "station", uri, "--password-stdin", input="pw-very-secret\n")
    ok(home, "conn", "add", "station", uri, "--replace")
    ok(home, "conn", "delete", "station")
    entries = rows(home, "audit")
    assert [e["action"] for e in entries] == [
        "conn_delete",
        "conn_set",
        "conn_set",
        "var_delete",
        "var_set",
        "var_set",
        "unpause",
        "pause",
        "replay",
        "mark",
        "backfill",
        "trigger",
    ]
    assert {(e["user"], e["face"]) for e in entries} == {(ME, "cli")}
    assert [e["flow_id"] for e in entries][-6:] == ["daily"] * 6
    by_action = {e["action"]: e for e in reversed(entries)}  # the newest of each
    trigger = by_action["trigger"]
    assert trigger["summary"] == "manual run 1 for 2024-03-05 02:30 CET"
    assert trigger["details"] == {
        "run_id": 1,
        "logical_date": "2024-03-05T01:30:00+00:00",
        "conf_keys": ["station"],
    }
    assert by_action["backfill"]["summary"] == (
        "backfill 2024-03-01 .. 2024-03-02: 2 run(s) created, 0 existed"
    )
    assert by_action["backfill"]["details"]["created"]["count"] == 2
    mark = by_action["mark"]
    assert mark["summary"] == "marked b, c of 2024-03-01 02:30 CET failed (2 changed)"
    assert mark["details"]["tasks"] == {"items": ["b", "c"], "count": 2}
    assert mark["details"]["state"] == "failed" and mark["details"]["downstream"] is True
    replay = by_action["replay"]
    assert replay["summary"] == (
        "replayed 2 task instance(s) of 2024-03-01 02:30 CET (failed tasks)"
    )
    assert replay["details"]["runs"] == {"items": ["2024-03-01T01:30:00+00:00"], "count": 1}
    assert by_action["pause"]["summary"] == "paused daily"
    assert [e["summary"] for e in entries if e["action"] == "var_set"] == [
        "created variable region",
        "created variable token (secret)",
    ]
    conn_sets = [e for e in entries if e["action"] == "conn_set"]
    assert [e["summary"] for e in conn_sets] == [
        "replaced connection station: sftp://station.example:2222",
        "added connection station: sftp://station.example:2222",
    ]
    assert conn_sets[1]["details"]["password"] == "set"
    assert conn_sets[1]["details"]["extra_keys"] == ["key_file"]
    everything = ok(home, "audit", "--json").stdout + ok(home, "audit").stdout
    for secret in ("tok-very-secret", "pw-very-secret", "eu-west-visible", "north"):
        assert secret not in everything  # values are never recorded, secret or not
    table = ok(home, "audit").stdout
    header, first, *_ = table.splitlines()
    assert header.split() == ["time", "user", "via", "action", "flow", "what"]
    assert f"{ME}" in first and "conn_delete" in first and "deleted connection station" in first


def test_audit_filters_by_flow_and_time_is_bounded_and_checks_its_input(daily, write_flow):
    home = daily
    write_flow("other", DAILY.replace('"daily"', '"other"'))
    ok(home, "trigger", "daily", "--date", "2024-03-05")
    ok(home, "pause", "other")
    ok(home, "var", "set", "plain", "x")
    assert [e["action"] for e in rows(home, "audit", "--flow", "daily")] == ["trigger"]
    assert [e["action"] for e in rows(home, "audit", "--flow", "other")] == ["pause"]
    assert [e["action"] for e in rows(home, "audit", "--limit", "2")] == ["var_set", "pause"]
    today = datetime.now().astimezone().date()
    assert len(rows(home, "audit", "--since", today.isoformat())) == 3
    assert rows(home, "audit", "--since", (today + timedelta(days=1)).isoformat()) == []
    assert ok(home, "audit", "--flow", "nope").stdout == "no changes recorded for nope\n"
    assert error(home, "audit", "--limit", "0") == "--limit must be between 1 and 10000, got 0"
    assert error(home, "audit", "--since", "yesterday").startswith("bad date 'yesterday'")
    plan = (
        store(home)
        .conn.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM audit_log WHERE flow_id = ? AND at >= ? "
            "ORDER BY at DESC, entry_id DESC LIMIT 5",
            ["daily", "2024"],
        )
        .fetchall()
    )
    assert "audit_by_flow_time" in " ".join(str(tuple(row)) for row in plan)


def test_another_face_passes_its_login_through_the_same_functions(daily):
    settings = load_settings(daily)
    db = store(daily)
    cat = catalog.sync(db, settings)
    flow = cat.get("daily")
    web = Actor("alice", "web")
    at = datetime(2024, 3, 5, 1, 30, tzinfo=UTC)
    control.trigger(db, flow, at, actor=web)
    repair.mark(db, flow, "a", "2024-03-05", "success", False, datetime.now(UTC), actor=web)
    plan = repair.plan_replay(db, flow, "2024-03-05")
    repair.replay(db, plan, datetime.now(UTC), actor=web)
    repair.backfill(db, flow, "2024-03-01", "2024-03-01", datetime.now(UTC), actor=web)
    db.set_paused("daily", True, actor=web)
    set_variable(db, "v", "1", actor=web)
    delete_variable(db, "v", actor=web)
    save_connection(db, parse_uri("h", "https://example.com/api"), actor=web)
    found = rows(daily, "audit")
    assert len(found) == 8
    assert {(e["user"], e["face"]) for e in found} == {("alice", "web")}
    # a run a flow's TriggerFlow creates is the flow's doing, not a change by hand
    from cronflow.states import RunType

    control.trigger(db, flow, datetime(2024, 3, 9, tzinfo=UTC), run_type=RunType.TRIGGERED)
    assert len(rows(daily, "audit")) == 8


def test_a_change_that_fails_leaves_no_entry(daily):
    db = store(daily)
    flow = catalog.sync(db, load_settings(daily)).get("daily")
    at = datetime(2024, 3, 5, 1, 30, tzinfo=UTC)
    control.trigger(db, flow, at)
    with pytest.raises(RunExistsError):
        control.trigger(db, flow, at)
    with pytest.raises(NotFoundError):
        delete_variable(db, "missing")
    assert error(daily, "pause", "nope").startswith("unknown flow 'nope'")
    assert [e["action"] for e in rows(daily, "audit")] == ["trigger"]
    assert len(db.runs_between("daily", at, at + timedelta(seconds=1))) == 1


def test_the_user_is_the_unix_user_or_who_ran_sudo(monkeypatch):
    monkeypatch.delenv("SUDO_USER", raising=False)
    assert local_actor() == Actor(ME, "cli")
    monkeypatch.setenv("SUDO_USER", "bob")
    assert local_actor().user == (f"bob (as {ME})" if ME != "bob" else "bob")


def test_the_real_command_records_its_user(daily):
    result = cli(daily, "trigger", "daily", "--date", "2024-03-05")
    assert result.returncode == 0, result.stderr
    (entry,) = json.loads(cli(daily, "audit", "--json").stdout)
    assert (entry["user"], entry["face"], entry["action"]) == (ME, "cli", "trigger")


def test_retention_removes_old_entries_and_missed_deadlines(daily):
    ok(daily, "pause", "daily")
    db = store(daily)
    now = datetime.now(UTC)
    db.record_deadline_checks(
        {},
        [
            {
                "flow_id": "daily",
                "task_id": "",
                "fire_at": "2024-03-01T01:30:00+00:00",
                "deadline_at": "2024-03-01T03:30:00+00:00",
                "missed_at": (now - timedelta(days=10)).isoformat(),
                "run_id": None,
                "message": "missed deadline: ...",
            }
        ],
    )
    settings = load_settings(daily)
    report = run_housekeeping(settings, db, now + timedelta(days=30))
    assert (report.deleted_audit_entries, report.deleted_deadline_misses) == (0, 0)
    (daily / "cronflow.toml").write_text("[retention]\ndelete_audit_after_days = 10\n")
    report = run_housekeeping(load_settings(daily), db, now + timedelta(days=30))
    assert report.deleted_audit_entries == 1 and rows(daily, "audit") == []
    report = run_housekeeping(load_settings(daily), db, now + timedelta(days=400))
    assert report.deleted_deadline_misses == 1


def test_audit_bad_limit_through_invoke_names_the_option(daily):
    result = invoke(daily, "audit", "--limit", "20000")
    assert result.exit_code == 2
    assert result.stderr == "Error: --limit must be between 1 and 10000, got 20000\n"


def test_two_manual_runs_in_one_second_both_start_a_date_given_twice_does_not(daily):
    """A script triggering in a loop gets a run each time: the second run of the same second
    takes the moment to the microsecond. A date asked for twice is still refused."""
    db = store(daily)
    flow = catalog.sync(db, load_settings(daily)).get("daily")
    now = datetime(2024, 3, 5, 1, 30, 7, 250000, tzinfo=UTC)
    first, first_at = control.trigger_manual(db, flow, None, now)
    second, second_at = control.trigger_manual(db, flow, None, now, {"k": 1})
    assert first != second
    assert (first_at, second_at) == (now.replace(microsecond=0), now)
    assert db.run(second)["logical_date"] == "2024-03-05T01:30:07.250000+00:00"
    with pytest.raises(RunExistsError):
        control.trigger_manual(db, flow, None, now)  # that microsecond is taken too
    with pytest.raises(RunExistsError):
        control.trigger_manual(db, flow, "2024-03-05T01:30:07+00:00", now)
    assert len(rows(daily, "audit")) == 2

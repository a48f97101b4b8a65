"""Operators that need no outside server, run for real by the scheduler on a fake clock:
sensors (poke, reschedule, timeout, soft_fail), XCom, skips, TriggerFlow, FlowSensor,
callbacks, and secret masking in task logs."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from clikit import ok, rows
from conftest import wait_for
from opskit import Runner

from cronflow.store import Store


def test_file_sensor_reschedule_frees_the_slot_and_keeps_the_try(home, write_flow, tmp_path):
    target = tmp_path / "in" / "2024-03-01.csv"
    write_flow(
        "wait",
        f"""
        from cronflow import Flow, FileSensor, Shell
        with Flow("wait"):
            s = FileSensor("arrive", "{tmp_path}/in/{{{{ ds }}}}.*", poke_interval="5m",
                           timeout="1h", mode="reschedule")
            s >> Shell("after", "echo after")
        """,
    )
    r = Runner(home)
    run_id = r.run("wait")
    ti = r.ti(run_id, "arrive")
    assert ti["state"] == "up_for_reschedule"
    assert ti["try_number"] == 0  # the poke is not counted
    assert ti["next_try_at"] == "2024-03-02T12:05:00+00:00"  # now + poke_interval
    assert ti["reason"].startswith(f"not yet: no file matches {tmp_path}/in/2024-03-01.*")
    assert ti["first_poke_at"] is not None
    first_poke = ti["first_poke_at"]
    assert not r.scheduler.executor.running()  # nothing holds a slot while it waits
    r.advance(60)  # not due yet
    assert r.state(run_id, "arrive") == "up_for_reschedule"
    r.advance(240)  # due: pokes again, still nothing
    assert r.ti(run_id, "arrive")["first_poke_at"] == first_poke
    # between pokes, `tasks` and `logs` show try 1, whose log has both pokes so far
    (row,) = [t for t in rows(home, "tasks", "wait") if t["task"] == "arrive"]
    assert (row["state"], row["try_number"]) == ("up_for_reschedule", 1)
    shown = ok(home, "logs", "wait.arrive").stdout
    assert shown.count("try 1 poke ended") == 2 and shown == r.log(run_id, "arrive")
    target.parent.mkdir()
    target.write_text("x")
    r.advance(300)
    ti = r.ti(run_id, "arrive")
    assert (ti["state"], ti["try_number"]) == ("success", 1)
    assert ti["first_poke_at"] is None
    assert r.xcom(run_id, "arrive") == [str(target)]
    assert r.state(run_id, "after") == "success"
    log = r.log(run_id, "arrive")  # every poke of try 1 in one log
    assert log.count("try 1 poke ended") == 2
    assert "try 1 ended" in log and "satisfied: 1 file(s) match" in log


def test_sensor_timeout_fails_or_with_soft_fail_skips(home, write_flow, tmp_path):
    write_flow(
        "late",
        f"""
        from cronflow import Flow, FileSensor, Shell
        with Flow("late"):
            hard = FileSensor("hard", "{tmp_path}/never", poke_interval=1, timeout=0)
            soft = FileSensor("soft", "{tmp_path}/never", poke_interval=1, timeout=0,
                              soft_fail=True, mode="reschedule")
            soft >> Shell("downstream", "true")
        """,
    )
    r = Runner(home)
    run_id = r.run("late")
    assert r.states(run_id) == {"hard": "failed", "soft": "skipped", "downstream": "skipped"}
    # the wait counts the poke itself (the first one renders the path: Jinja is imported)
    gave_up = rf"no file matches {re.escape(str(tmp_path))}/never; gave up after \d+s \(timeout\)"
    assert re.fullmatch("skipped: " + gave_up, r.ti(run_id, "soft")["reason"])
    assert "SensorTimeoutError" not in r.log(run_id, "hard")
    assert re.search(gave_up, r.log(run_id, "hard"))


def test_file_sensor_in_poke_mode_waits_in_its_slot(home, write_flow, tmp_path):
    flag = tmp_path / "flag"
    sensor_log = home / "logs/poke/wait/20240301T000000Z/try-1.log"
    write_flow(
        "poke",
        f"""
        from cronflow import Flow, FileSensor, Shell
        with Flow("poke"):
            FileSensor("wait", "{flag}", poke_interval=0.05, timeout=60)
            # the file appears only once the sensor has poked in vain
            Shell("make", "until grep -q 'not yet' {sensor_log}; do sleep 0.05; done; touch {flag}")
        """,
    )
    r = Runner(home)
    run_id = r.run("poke")
    assert r.states(run_id) == {"make": "success", "wait": "success"}
    log = r.log(run_id, "wait")
    assert f"not yet: no file matches {flag}; next poke in 0s" in log
    assert f"satisfied: 1 file(s) match {flag}" in log
    assert r.ti(run_id, "wait")["try_number"] == 1


def test_a_shell_task_exiting_75_or_99_simply_fails(home, write_flow):
    write_flow(
        "codes",
        """
        from cronflow import Flow, Shell
        with Flow("codes"):
            Shell("tempfail", "exit 75")
            Shell("ninety_nine", "exit 99")
        """,
    )
    r = Runner(home)
    run_id = r.run("codes")
    assert r.states(run_id) == {"tempfail": "failed", "ninety_nine": "failed"}
    assert r.ti(run_id, "tempfail")["reason"] == "exit code 75"


XCOM_FLOW = """
from cronflow import Flow, Python, Shell, SkipTask

def produce(context):
    context["xcom"].push("rows", 42)
    return {{"path": "/data/{{ds}}.csv".replace("{{ds}}", context["ds"])}}

def consume(context):
    print("pulled", context["xcom"].pull("produce"), context["xcom"].pull("produce", "rows"))
    print("missing", context["xcom"].pull("nobody", default="none"))
    return context["xcom"].pull("produce", "rows") + 1

def too_big():
    return "x" * {size}

def not_json():
    return {{1, 2}}

def exits(code):
    import sys
    sys.exit(code)

def skip():
    raise SkipTask("nothing to do today")

with Flow("xc"):
    p = Python("produce", produce)
    c = Python("consume", consume)
    s = Shell("shell", "echo path={{{{ xcom.produce }}}}")
    p >> [c, s]
    Python("too_big", too_big)
    Python("not_json", not_json)
    Python("exit_zero", exits, args=[0])
    Python("exit_75", exits, args=[75])
    Python("skip", skip) >> Shell("after_skip", "true")
"""


def test_xcom_push_pull_templates_limits_and_outcomes(home, write_flow):
    (home / "cronflow.toml").write_text("xcom_max_bytes = 1000\n")
    write_flow("xc", XCOM_FLOW.format(size=2000))
    r = Runner(home)
    run_id = r.run("xc")
    assert r.states(run_id) == {
        "produce": "success",
        "consume": "success",
        "shell": "success",
        "too_big": "failed",
        "not_json": "failed",
        "exit_zero": "success",
        "exit_75": "failed",
        "skip": "skipped",
        "after_skip": "skipped",
    }
    assert r.xcom(run_id, "produce") == {"path": "/data/2024-03-01.csv"}
    assert r.xcom(run_id, "produce", "rows") == 42
    assert r.xcom(run_id, "consume") == 43
    assert "pulled {'path': '/data/2024-03-01.csv'} 42" in r.log(run_id, "consume")
    assert "missing none" in r.log(run_id, "consume")
    assert 'path={"path": "/data/2024-03-01.csv"}' in r.log(run_id, "shell")
    assert (
        "cronflow: task 'too_big': xcom 'return_value' is 2.0 KiB of JSON, over the limit of "
        "0.976562 KiB (xcom_max_bytes in cronflow.toml); write large data to a file and pass "
        "its path" in r.log(run_id, "too_big")
    )
    assert "xcom 'return_value' is not JSON-serialisable" in r.log(run_id, "not_json")
    assert "the task called sys.exit(75)" in r.log(run_id, "exit_75")
    assert r.ti(run_id, "skip")["reason"] == "skipped: nothing to do today"
    assert r.run_state(run_id).value == "failed"


def test_trigger_flow_starts_the_run_once_and_waits_for_it(home, write_flow, tmp_path):
    write_flow(
        "next",
        """
        from cronflow import Flow, Shell
        with Flow("next", schedule="0 6 * * *", timezone="Europe/Paris"):
            Shell("work", "echo source={{ conf.source }} day={{ ds }}")
        """,
    )
    write_flow(
        "first",
        """
        from cronflow import Flow, TriggerFlow
        with Flow("first"):
            fire = TriggerFlow("fire", "next", conf={"source": "{{ flow_id }}"})
            fire >> TriggerFlow("fire_again", "next")
            fire >> TriggerFlow("wait", "next", wait=True, poke_interval=30, mode="reschedule")
        """,
    )
    r = Runner(home)
    run_id = r.trigger("first")
    r.settle()
    runs = r.store.runs_between("next", *_whole_time())
    assert len(runs) == 1  # three tasks, one run
    target = runs[0]
    # by default the triggering run's logical date-time (midnight: "first" has no schedule)
    assert target["logical_date"] == "2024-03-01T00:00:00+00:00"
    assert target["run_type"] == "triggered"
    assert json.loads(target["triggered_by"]) == {
        "flow_id": "first",
        "run_id": run_id,
        "task_id": "fire",
        "logical_date": r.store.run(run_id)["logical_date"],
    }
    (listed,) = rows(home, "runs", "next")
    assert listed["run_type"] == "triggered" and listed["triggered_by"]["flow_id"] == "first"
    assert "triggered by first 2024-03-01" in ok(home, "runs", "next").stdout
    assert json.loads(target["conf"]) == {"source": "first"}
    assert r.xcom(run_id, "fire") == {
        "flow_id": "next",
        "run_id": target["run_id"],
        "logical_date": "2024-03-01T00:00:00+00:00",
    }
    assert r.xcom(run_id, "fire_again") == r.xcom(run_id, "fire")
    # The target ran meanwhile (same scheduler); the waiting task sees it at its next poke.
    assert r.state(target["run_id"], "work") == "success"
    assert "source=first day=2024-03-01" in r.log(target["run_id"], "work")
    assert r.state(run_id, "wait") in ("up_for_reschedule", "success")
    r.advance(30)
    assert r.state(run_id, "wait") == "success"


def test_an_hourly_flow_triggers_one_run_per_hour(home, write_flow):
    write_flow(
        "target",
        """
        from cronflow import Flow, Shell
        with Flow("target", schedule="0 6 * * *", timezone="Europe/Paris"):
            Shell("work", "echo {{ logical_date }}")
        """,
    )
    write_flow(
        "hourly",
        """
        from cronflow import Flow, TriggerFlow
        with Flow("hourly", schedule="0 * * * *", timezone="Europe/Paris"):
            TriggerFlow("each_hour", "target")
            TriggerFlow("once_a_day", "target", date="{{ ds }}")
        """,
    )
    r = Runner(home)
    first = r.run("hourly", "2024-03-01T10:00")
    second = r.run("hourly", "2024-03-01T11:00")
    assert r.states(first) == r.states(second) == {"each_hour": "success", "once_a_day": "success"}
    dates = [run["logical_date"] for run in r.store.runs_between("target", *_whole_time())]
    # 10:00 and 11:00 in Paris (each hour's own run), and the target's fire time that day
    assert dates == [
        "2024-03-01T05:00:00+00:00",
        "2024-03-01T09:00:00+00:00",
        "2024-03-01T10:00:00+00:00",
    ]
    assert r.xcom(second, "each_hour")["logical_date"] == "2024-03-01T10:00:00+00:00"
    assert r.xcom(first, "once_a_day") == r.xcom(second, "once_a_day")


def test_trigger_flow_waiting_for_a_failed_run_fails(home, write_flow):
    write_flow(
        "broken_next",
        """
        from cronflow import Flow, Shell
        with Flow("broken_next"):
            Shell("work", "exit 3")
        """,
    )
    write_flow(
        "caller",
        """
        from cronflow import Flow, TriggerFlow
        with Flow("caller"):
            TriggerFlow("wait", "broken_next", wait=True, poke_interval=10, mode="reschedule")
        """,
    )
    r = Runner(home)
    run_id = r.run("caller")
    r.advance(10)
    ti = r.ti(run_id, "wait")
    assert ti["state"] == "failed"
    assert "is failed" in r.log(run_id, "wait")


def test_flow_sensor_waits_for_another_flows_task(home, write_flow, tmp_path):
    write_flow(
        "upstream",
        f"""
        from cronflow import Flow, Shell
        with Flow("upstream", timezone="Europe/Paris"):
            Shell("load", "test -f {tmp_path}/go")
        """,
    )
    write_flow(
        "downstream",
        """
        from cronflow import Flow, FlowSensor
        with Flow("downstream"):
            FlowSensor("wait_load", "upstream", task="load", date="{{ ds }}",
                       poke_interval=60, mode="reschedule")
            FlowSensor("wait_run", "upstream", poke_interval=60, mode="reschedule")
        """,
    )
    r = Runner(home)
    down = r.run("downstream")
    assert r.ti(down, "wait_load")["reason"] == (
        "not yet: flow 'upstream' has no run for 2024-03-01 yet"
    )
    up = r.run("upstream", "2024-03-01")
    assert r.state(up, "load") == "failed"
    r.advance(60)
    assert r.ti(down, "wait_load")["reason"] == (
        "not yet: task upstream.load for 2024-03-01: failed"
    )
    (tmp_path / "go").touch()
    r.store.clear_tis({up: {"load": 0}}, r.clock.now())  # a replay
    r.settle()
    r.advance(60)
    assert r.states(down) == {"wait_load": "success", "wait_run": "success"}


def test_flow_sensor_waits_for_every_fire_time_of_the_day(home, write_flow):
    """One successful run of two is not the day: the fire time without a run is waited for,
    as `wait_for` does; a day the target never fires has nothing to wait for."""
    write_flow(
        "twice",
        """
        from cronflow import Flow, Shell
        with Flow("twice", schedule="0 6,18 * * *", start_date="2024-01-01"):
            Shell("load", "true")
        """,
    )
    write_flow(
        "mondays",
        """
        from cronflow import Flow, Shell
        with Flow("mondays", schedule="0 6 * * 1", start_date="2024-01-01"):
            Shell("load", "true")
        """,
    )
    write_flow(
        "after",
        """
        from cronflow import Flow, FlowSensor
        with Flow("after"):
            FlowSensor("day", "twice", date="{{ ds }}", poke_interval=60, mode="reschedule")
            FlowSensor("task", "twice", task="load", date="{{ ds }}", poke_interval=60,
                       mode="reschedule")
            FlowSensor("friday", "mondays", date="{{ ds }}", poke_interval=60, mode="reschedule")
        """,
    )
    r = Runner(home)
    assert r.state(r.run("twice", "2024-03-01T06:00:00+00:00"), "load") == "success"
    down = r.run("after", "2024-03-01")  # a Friday
    assert r.state(down, "friday") == "success"
    assert "mondays' does not fire on 2024-03-01" in r.log(down, "friday")
    for task_id in ("day", "task"):
        assert r.ti(down, task_id)["reason"] == (
            "not yet: flow 'twice' has no run yet for 1 of its fire times on 2024-03-01 "
            "(the first at 18:00)"
        )
    assert r.state(r.run("twice", "2024-03-01T18:00:00+00:00"), "load") == "success"
    r.advance(60)
    assert r.states(down) == {"day": "success", "task": "success", "friday": "success"}


def _whole_time():  # type: ignore[no-untyped-def]
    from conftest import utc

    return utc(1970, 1, 1), utc(2100, 1, 1)


CALLBACK_FLOW = """
from pathlib import Path
from cronflow import Flow, Shell

OUT = Path({out!r})

def record(context):
    with open(OUT / f"{{context['task_id']}}.{{context['event']}}", "a") as f:
        f.write(f"{{context['state']}} try={{context['try_number']}} reason={{context['reason']}}\\n")

def flow_level(context):
    (OUT / f"flow.{{context['task_id']}}.{{context['event']}}").write_text(context["state"])

def broken(context):
    raise RuntimeError("the callback itself is broken")

with Flow("cb", on_failure=flow_level, on_success=flow_level,
          defaults={{"retry_delay": 0}}):
    Shell("flaky", "test -f {out}/flag || {{ touch {out}/flag; exit 1; }}", retries=1,
          on_retry=record, on_success=record)
    Shell("doomed", "exit 4", on_failure=record)
    Shell("fine", "true")
    Shell("bad_callback", "exit 1", on_failure=broken)
"""


def test_callbacks_at_task_and_flow_level_run_outside_the_daemon(
    home, write_flow, tmp_path, caplog
):
    out = tmp_path / "out"
    out.mkdir()
    write_flow("cb", CALLBACK_FLOW.format(out=str(out)))
    r = Runner(home)
    caplog.set_level("INFO", logger="cronflow")
    run_id = r.run("cb")
    r.wait_callbacks()
    assert r.states(run_id) == {
        "flaky": "success",
        "doomed": "failed",
        "fine": "success",
        "bad_callback": "failed",
    }
    assert (out / "flaky.on_retry").read_text() == "up_for_retry try=1 reason=exit code 1\n"
    assert (out / "flaky.on_success").read_text() == "success try=2 reason=None\n"
    assert (out / "doomed.on_failure").read_text() == "failed try=1 reason=exit code 4\n"
    assert (out / "flow.fine.on_success").read_text() == "success"  # the flow's default
    assert not (out / "flow.flaky.on_success").exists()  # the task's own wins
    assert not (out / "flow.doomed.on_failure").exists()
    assert "RuntimeError: the callback itself is broken" in r.log(run_id, "bad_callback")
    failed = [m for m in caplog.messages if m.startswith("event=callback_failed")]
    assert failed == [
        f"event=callback_failed flow=cb task=bad_callback run={run_id} try=1 "
        "callback=on_failure exit_code=1 (see the task log)"
    ]
    started = [m for m in caplog.messages if m.startswith("event=callback_started")]
    assert len(started) == 5


SECRET_FLOW = """
import os, subprocess, sys
from cronflow import Flow, Python, Shell

def leak(context):
    print("python prints", context["var"]["token"])
    print("stderr too", context["conn"]["db"].password, file=sys.stderr)
    subprocess.run(["sh", "-c", "echo child says $CRONFLOW_VAR_ENVPASS"], check=True)
    raise RuntimeError("failing with " + context["var"]["token"])

with Flow("secrets"):
    Shell("shell", "echo token={{ var.token }}; echo plain={{ var.plain }}; "
                   "printenv CRONFLOW_VAR_ENVPASS; printf 'split-sec'; sleep 0.2; "
                   "printf 'ret-value\\n'; echo conn=$DBPW",
          env={"DBPW": "{{ var.token }}"})
    Python("python", leak)
"""


def test_secrets_are_masked_in_every_task_log(home, write_flow, monkeypatch):
    store = Store(home / "cronflow.db")
    store.set_variable("token", "tok-1234-secret", is_secret=True)
    store.set_variable("plain", "visible-value")
    store.set_variable("split", "split-secret-value", is_secret=True)
    store.set_connection("db", "http", "db.example", None, "u", "conn-pw-5678", {})
    monkeypatch.setenv("CRONFLOW_VAR_ENVPASS", "env-pass-0000")
    write_flow("secrets", SECRET_FLOW)
    r = Runner(home)
    run_id = r.run("secrets")
    shell = r.log(run_id, "shell")
    assert "token=***" in shell and "plain=visible-value" in shell
    assert "\n***\n" in shell  # printenv of an environment secret
    assert "***\n" in shell.split("plain=visible-value")[1]  # the value split over two writes
    assert "conn=***" in shell
    python = r.log(run_id, "python")
    assert "python prints ***" in python
    assert "stderr too ***" in python
    assert "child says ***" in python
    assert "RuntimeError: failing with ***" in python
    everything = shell + python + json.dumps(r.store.tis_of_runs([run_id]))
    for secret in ("tok-1234-secret", "conn-pw-5678", "env-pass-0000", "split-secret-value"):
        assert secret not in everything


def test_the_masking_filter_keeps_exit_codes_and_timeouts(home, write_flow, tmp_path):
    Store(home / "cronflow.db").set_variable("k", "secret-k-value", is_secret=True)
    pidfile = tmp_path / "pid"
    write_flow(
        "wrapped",
        f"""
        from cronflow import Flow, Shell
        with Flow("wrapped"):
            Shell("code", "echo {{{{ var.k }}}}; exit 7")
            Shell("slow", "echo $$ > {pidfile}; sleep 60", timeout=5)
            Shell("background", "sleep 5 & echo started")
        """,
    )
    r = Runner(home)
    run_id = r.run("wrapped")
    assert r.states(run_id) == {"code": "failed", "slow": "failed", "background": "success"}
    assert r.ti(run_id, "code")["reason"] == "exit code 7: ***"  # its last line, masked
    assert "***" in r.log(run_id, "code")
    assert r.ti(run_id, "slow")["reason"] == "timed out after 5s"
    pid = int(pidfile.read_text())
    wait_for(lambda: not Path(f"/proc/{pid}").exists() or _zombie(pid), what="the command's end")


def test_output_the_masking_filter_cannot_write_is_noted_in_the_exit_record(home, tmp_path):
    """A full disk under the log: the filter drops the output (the task must not block) but
    says so in the attempt's record, beside the command's own exit status."""
    import subprocess
    import sys

    from cronflow import supervisor

    Store(home / "cronflow.db").set_variable("k", "secret-k-value", is_secret=True)
    log_path = tmp_path / "try-1.log"
    argv = [sys.executable, "-m", "cronflow.masking", "--", "/bin/sh", "-c", "echo hello; exit 4"]
    with open("/dev/full", "wb") as full:
        code = subprocess.run(
            supervisor.supervised(argv, log_path, 0o022),
            stdout=full,
            stderr=full,
            env={**os.environ, "CRONFLOW_HOME": str(home)},
            timeout=60,
        ).returncode
    assert code == 4
    ending = supervisor.read_ending(log_path)
    assert ending is not None and ending.exit_code == 4
    assert ending.notes == (
        "output lost: 6 bytes could not be written to the log (No space left on device)",
    )


def test_a_note_in_the_exit_record_reaches_the_reason_and_the_daemon_log(home, write_flow, caplog):
    write_flow(
        "noted",
        """
        from cronflow import Flow, Shell
        with Flow("noted"):
            Shell("t", "echo 'output lost: 9 bytes could not be written' >> $CRONFLOW_STATUS_FILE")
        """,
    )
    r = Runner(home)
    with caplog.at_level("ERROR", logger="cronflow.scheduler"):
        run_id = r.run("noted")
    ti = r.ti(run_id, "t")
    assert (ti["state"], ti["reason"]) == ("success", "output lost: 9 bytes could not be written")
    assert "event=task_note" in caplog.text and "output lost: 9 bytes" in caplog.text


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.parametrize("mode", ["poke", "reschedule"])
def test_sensor_attempt_limit_follows_its_wait(mode):
    from cronflow import FileSensor, Flow

    with Flow("limits") as flow:
        FileSensor("s", "/x", poke_interval=30, timeout="2h", mode=mode)
    task = flow.spec()["tasks"][0]
    expected = 2 * 3600 + 30 + 60 if mode == "poke" else 600
    assert task["timeout_s"] == expected
    assert task["op"]["mode"] == mode and task["op"]["timeout_s"] == 7200


def test_following_a_rescheduled_sensor_goes_on_across_its_pokes(home, write_flow, tmp_path):
    write_flow(
        "wait",
        f"""
        from cronflow import Flow, FileSensor
        with Flow("wait"):
            FileSensor("arrive", "{tmp_path}/{{{{ ds }}}}.csv", poke_interval="5m",
                       timeout="1h", mode="reschedule")
        """,
    )
    from cronflow import attempts

    r = Runner(home)
    run_id = r.run("wait")
    flow = r.scheduler.catalog.get("wait")
    attempt = attempts.find_attempt(r.settings, r.store, flow, "arrive", None, None)
    assert attempt.try_number == 1 and attempt.ti["state"] == "up_for_reschedule"
    pokes = []

    def sleep(_: float) -> None:  # each pause of the follower lets five minutes pass
        pokes.append(1)
        if len(pokes) == 3:
            (tmp_path / "2024-03-01.csv").write_text("x")
        r.advance(300)

    followed = b"".join(attempts.follow_attempt(r.settings, r.store, attempt, lambda: True, sleep))
    text = followed.decode()
    assert r.state(run_id, "arrive") == "success"
    assert text.count("try 1 poke ended") >= 2 and "try 1 ended" in text
    assert text == r.log(run_id, "arrive")


def test_a_python_task_gets_the_documented_context_without_plumbing(home, write_flow):
    from cronflow.context import TEMPLATE_NAMES

    write_flow(
        "ctx",
        """
        from cronflow import Flow, Python

        def keys(context):
            return {
                "keys": sorted(context),
                "types": [type(context[k]).__name__ for k in ("ds", "logical_date", "data_interval_end")],
                "hour": context["logical_date"].hour,
            }

        with Flow("ctx", timezone="Europe/Paris"):
            Python("keys", keys)
        """,
    )
    r = Runner(home)
    r.store.set_variable("token", "s3cr3t-value", is_secret=True)  # the home has secrets
    run_id = r.run("ctx", "2024-03-01T09:00")
    assert r.states(run_id) == {"keys": "success"}, r.log(run_id, "keys")
    result = r.xcom(run_id, "keys")
    assert result["keys"] == sorted(TEMPLATE_NAMES)  # no secrets, store or settings
    assert result["types"] == ["str", "LocalDateTime", "LocalDateTime"]
    assert result["hour"] == 9

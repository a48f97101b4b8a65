"""Deadlines ("it should have run by now"), driven by a fake clock: each fire time is checked
once at its deadline, with or without a run; the failure alerts fire once, across restarts; what
holds the run back is named; paused flows and history are not checked; a long stop is bounded.

Tasks and alert callbacks are real processes; only time is injected.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime

import pytest
from conftest import utc, wait_for
from test_scheduler import Harness

from cronflow import deadlines
from cronflow.config import Settings
from cronflow.reasons import Explainer


@pytest.fixture
def make(settings: Settings) -> Callable[[datetime], Harness]:
    return lambda start: Harness(settings, start)


# meteo_ingest loads at 23:50 and fails unless the file ingest-ok exists; meteo_daily at 00:30
# waits for yesterday's ingest and must be done 2 hours after it fires. Its on_failure writes
# each alert it gets to alerts.jsonl in the home.
METEO = """
import json
from cronflow import Flow, FlowDependency, Shell

def alert(context):
    with open("{home}/alerts.jsonl", "a") as out:
        fields = ("flow_id", "task_id", "run_id", "event", "reason", "ds", "deadline_at")
        out.write(json.dumps({{k: context[k] for k in fields}}) + "\\n")

with Flow("meteo_ingest", schedule="50 23 * * *", start_date="2026-12-02"):
    Shell("load", "test -f {home}/ingest-ok")

with Flow("meteo_daily", schedule="30 0 * * *", start_date="2026-12-03", deadline="2h",
          on_failure=alert, wait_for=[FlowDependency("meteo_ingest", offset_days=-1)]):
    Shell("report", "true")
"""


def alerts(home) -> list[dict]:
    path = home / "alerts.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def misses(h: Harness) -> list[dict]:
    rows = h.store.conn.execute("SELECT * FROM deadline_misses ORDER BY fire_at, task_id")
    return [dict(row) for row in rows]


def settle_alerts(h: Harness) -> None:
    def done() -> bool:
        h.scheduler.callbacks.reap()
        return h.scheduler.callbacks.running() == 0

    wait_for(done, what="the alert processes to end")


def meteo(make, write_flow, home, start: datetime) -> Harness:
    write_flow("meteo", METEO.format(home=home))
    h = make(start)
    h.store.record_daemon(1, "host", start)  # this daemon runs since `start`
    return h


def test_a_run_held_back_by_its_wait_misses_its_deadline_once_with_the_reason(
    make, write_flow, home
):
    h = meteo(make, write_flow, home, utc(2026, 12, 2, 23, 0))
    h.tick()
    h.at(utc(2026, 12, 2, 23, 50))
    h.settle()
    assert [r["state"] for r in h.runs("meteo_ingest")] == ["failed"]
    h.at(utc(2026, 12, 3, 0, 30))
    assert [r["state"] for r in h.runs("meteo_daily")] == ["queued"]
    # the daemon wakes exactly at the deadline instant
    assert h.scheduler.deadlines.next_check_at == utc(2026, 12, 3, 2, 30)
    h.at(utc(2026, 12, 3, 2, 29, 59))
    assert misses(h) == []
    h.at(utc(2026, 12, 3, 2, 30))
    settle_alerts(h)
    expected = (
        "missed deadline: meteo_daily 2026-12-03 not done 2h after 00:30 "
        "(waiting for meteo_ingest 2026-12-02: 23:50 failed)"
    )
    ((miss,),) = [misses(h)]
    assert miss["message"] == expected
    assert miss["run_id"] == h.runs("meteo_daily")[0]["run_id"] and miss["alerted_at"]
    (alert,) = alerts(home)
    assert alert == {
        "flow_id": "meteo_daily",
        "task_id": None,
        "run_id": miss["run_id"],
        "event": "deadline_missed",
        "reason": expected,
        "ds": "2026-12-03",
        "deadline_at": "2026-12-03T02:30:00+00:00",
    }
    for minute in (31, 45, 59):  # later ticks alert nothing again
        h.at(utc(2026, 12, 3, 2, minute))
    settle_alerts(h)
    assert len(alerts(home)) == 1 and len(misses(h)) == 1
    # the next deadline is the next fire time's
    assert h.scheduler.deadlines.next_check_at == utc(2026, 12, 4, 2, 30)


def test_a_run_done_in_time_misses_nothing(make, write_flow, home):
    (home / "ingest-ok").touch()
    h = meteo(make, write_flow, home, utc(2026, 12, 2, 23, 0))
    h.tick()
    h.at(utc(2026, 12, 2, 23, 50))
    h.settle()
    h.at(utc(2026, 12, 3, 0, 30))
    h.settle()
    h.tick()
    assert [r["state"] for r in h.runs("meteo_daily")] == ["success"]
    h.at(utc(2026, 12, 3, 2, 30))
    h.at(utc(2026, 12, 3, 9, 0))
    assert misses(h) == [] and alerts(home) == []


def test_the_alert_fires_once_across_a_restart_and_a_crash_before_it(make, write_flow, home):
    h = meteo(make, write_flow, home, utc(2026, 12, 3, 0, 0))
    h.tick()
    h.at(utc(2026, 12, 3, 2, 30))
    settle_alerts(h)
    assert len(alerts(home)) == 1
    # a new daemon on the same store: nothing is checked or alerted again
    again = make(utc(2026, 12, 3, 2, 40))
    again.tick()
    again.at(utc(2026, 12, 3, 3, 0))
    settle_alerts(again)
    assert len(alerts(home)) == 1 and len(misses(again)) == 1
    # a crash after the miss was recorded but before its alert started: the next start sends it
    again.store.conn.execute("UPDATE deadline_misses SET alerted_at = NULL")
    third = make(utc(2026, 12, 3, 3, 5))
    third.tick()
    settle_alerts(third)
    third.at(utc(2026, 12, 3, 3, 10))
    settle_alerts(third)
    assert len(alerts(home)) == 2 and misses(third)[0]["alerted_at"]


# hourly waits for a manual-only flow (no run: it waits) and max_active_runs=1 holds the next
# fire times back: they have no run at all, and miss their deadline all the same.
HELD = """
from cronflow import Flow, Shell

def alert(context):
    with open("{home}/alerts.jsonl", "a") as out:
        out.write(repr(context["reason"]) + "\\n")

with Flow("ingest"):
    Shell("load", "true")

with Flow("hourly", schedule="0 * * * *", start_date="2024-06-03T09:30", catchup=True,
          max_active_runs=1, wait_for=["ingest"], deadline="30m", on_failure=alert):
    Shell("t", "true")
"""


def test_fire_times_without_a_run_miss_their_deadline_too(make, write_flow, home):
    write_flow("held", HELD.format(home=home))
    h = make(utc(2024, 6, 3, 9, 59))
    h.store.record_daemon(1, "host", h.clock.now())
    h.tick()
    h.at(utc(2024, 6, 3, 10, 30))
    h.at(utc(2024, 6, 3, 11, 30))
    settle_alerts(h)
    assert len(h.runs("hourly")) == 1  # 11:00 is held back: no run
    assert [m["message"] for m in misses(h)] == [
        "missed deadline: hourly 2024-06-03 not done 30m after 10:00 (waiting for ingest "
        "2024-06-03: no run yet (it has no schedule: a run of that day is needed))",
        "missed deadline: hourly 2024-06-03 not done 30m after 11:00 (no run: held back by "
        "max_active_runs=1: 1 run active)",
    ]
    assert [m["run_id"] is None for m in misses(h)] == [False, True]
    assert len((home / "alerts.jsonl").read_text().splitlines()) == 2


def test_fire_times_passed_while_the_daemon_was_down_are_checked_at_its_start(
    make, write_flow, home
):
    write_flow("held", HELD.format(home=home))
    first = make(utc(2024, 6, 3, 9, 0))
    first.tick()  # the deadline is known from 08:30 on; then the daemon stops
    again = make(utc(2024, 6, 3, 12, 45))
    again.store.record_daemon(2, "host", again.clock.now())
    again.tick()
    settle_alerts(again)
    rows = misses(again)
    assert [m["fire_at"][11:16] for m in rows] == ["10:00", "11:00", "12:00"]
    assert rows[1]["message"].endswith("(no run: held back by max_active_runs=1: 1 run active)")
    # one alert for all of them: the oldest, and how many more
    (line,) = (home / "alerts.jsonl").read_text().splitlines()
    assert "not done 30m after 10:00" in line and "; and 2 more fire times missed" in line


DAEMON_DOWN = """
from cronflow import Flow, Shell

def alert(context):
    with open("{home}/alerts.jsonl", "a") as out:
        out.write(repr(context["reason"]) + "\\n")

with Flow("nightly", schedule="0 2 * * *", start_date="2024-06-03", catchup=False,
          deadline="1h", on_failure=alert):
    Shell("t", "true")
"""


def test_a_fire_time_skipped_while_the_daemon_was_down_says_so(make, write_flow, home):
    write_flow("nightly", DAEMON_DOWN.format(home=home))
    first = make(utc(2024, 6, 3, 0, 0))
    first.store.record_daemon(1, "host", first.clock.now())
    first.tick()
    again = make(utc(2024, 6, 4, 12, 0))  # down from 00:00 on the 3rd to noon on the 4th
    again.store.record_daemon(2, "host", again.clock.now())
    again.tick()
    rows = misses(again)
    # catchup=False ran the 4th's fire time now (too late); the 3rd's never got a run
    assert [(m["fire_at"][:10], m["run_id"] is None) for m in rows] == [
        ("2024-06-03", True),
        ("2024-06-04", False),
    ]
    assert rows[0]["message"] == (
        "missed deadline: nightly 2024-06-03 not done 1h after 02:00 "
        "(no run: the daemon was not running at 2024-06-03 02:00 UTC)"
    )


def test_history_is_not_checked_and_a_long_stop_is_bounded(make, write_flow, home, caplog):
    write_flow(
        "minutely",
        """
        from cronflow import Flow, Shell
        with Flow("minutely", schedule="* * * * *", start_date="2020-01-01", deadline="5m"):
            Shell("t", "true")
        """,
    )
    h = make(utc(2024, 6, 3, 12, 0))
    h.tick()  # four years of fire times since the start date: none is checked
    assert misses(h) == []
    cursors = h.store.deadline_cursors()
    assert cursors == {("minutely", ""): "2024-06-03T11:55:00+00:00"}
    # a stop of a month: at most MAX_FIRES_PER_CHECK fire times are checked one by one
    later = make(utc(2024, 7, 3, 12, 0))
    with caplog.at_level("WARNING", logger="cronflow.deadlines"):
        later.tick()
    assert len(misses(later)) == deadlines.MAX_FIRES_PER_CHECK
    assert "event=deadline_checks_skipped flow=minutely" in caplog.text
    assert later.store.deadline_cursors()[("minutely", "")] == "2024-07-03T11:55:00+00:00"


def test_a_paused_flow_is_not_checked_and_unpausing_alerts_nothing_old(make, write_flow, home):
    h = meteo(make, write_flow, home, utc(2026, 12, 3, 0, 0))
    h.store.set_paused("meteo_daily", True)
    h.tick()
    h.at(utc(2026, 12, 3, 2, 30))
    h.at(utc(2026, 12, 4, 2, 30))
    assert misses(h) == []
    h.store.set_paused("meteo_daily", False)
    h.at(utc(2026, 12, 4, 3, 0))
    assert misses(h) == []
    h.at(utc(2026, 12, 5, 2, 30))  # the first fire time after the pause is checked
    assert [m["fire_at"] for m in misses(h)] == ["2026-12-05T00:30:00+00:00"]


TASK_DEADLINE = """
from cronflow import Flow, Shell

def flow_alert(context):
    with open("{home}/flow-alerts", "a") as out:
        out.write(context["reason"] + "\\n")

def task_alert(context):
    with open("{home}/task-alerts", "a") as out:
        out.write(context["task_id"] + ": " + context["reason"] + "\\n")

with Flow("load", schedule="0 6 * * *", start_date="2024-06-03", on_failure=flow_alert):
    get = Shell("get", "exit 3", retries=1, retry_delay="1h", deadline="20m",
                on_failure=task_alert)
    put = Shell("put", "true")
    get >> put
"""


def test_a_task_deadline_alerts_the_task_and_names_its_state(make, write_flow, home):
    write_flow("load", TASK_DEADLINE.format(home=home))
    h = make(utc(2024, 6, 3, 5, 59))
    h.tick()
    h.at(utc(2024, 6, 3, 6, 0))
    h.settle()
    assert h.ti("load", "get")["state"] == "up_for_retry"
    h.at(utc(2024, 6, 3, 6, 20))
    settle_alerts(h)
    (miss,) = misses(h)
    assert miss["task_id"] == "get"
    assert miss["message"].startswith(
        "missed deadline: load.get 2024-06-03 not done 20m after 06:00 (get try 1 failed "
        "(exit code 3); retry at "
    )
    assert (home / "task-alerts").read_text() == "get: " + miss["message"] + "\n"
    assert not (home / "flow-alerts").exists()  # the flow itself has no deadline


def test_why_says_the_deadline_before_it_passes_and_the_miss_after(make, write_flow, home):
    h = meteo(make, write_flow, home, utc(2026, 12, 3, 0, 0))
    h.tick()
    h.settle()  # yesterday's 23:50 ingest (caught up at the start) has failed
    assert [r["state"] for r in h.runs("meteo_ingest")][-1] == "failed"
    h.at(utc(2026, 12, 3, 0, 30))
    flow = h.scheduler.catalog.get("meteo_daily")

    def why(now: datetime) -> list[str]:
        explainer = Explainer(h.settings, h.store, h.scheduler.catalog, flow, now, True)
        return explainer.explain("2026-12-03", None)

    assert "deadline: the run must be done by 02:30:00 UTC (2h)" in why(utc(2026, 12, 3, 1))
    h.at(utc(2026, 12, 3, 2, 30))
    lines = why(utc(2026, 12, 3, 3))
    assert lines[-1] == (
        "missed deadline: meteo_daily 2026-12-03 not done 2h after 00:30 (waiting for "
        "meteo_ingest 2026-12-02: 23:50 failed), seen at 02:30:00 UTC"
    )
    assert not any(line.startswith("deadline:") for line in lines)


@pytest.mark.parametrize(
    "source,message",
    [
        (
            'Flow("f", schedule="@daily", deadline="soon")',
            "flow 'f': deadline: cannot read 'soon' (use seconds or units like 30s, 5m, 2h, 90d)",
        ),
        ('Flow("f", schedule="@daily", deadline=0)', "flow 'f': deadline must be longer than 0"),
        (
            'Flow("f", deadline="1h")',
            "flow 'f': deadline counts from each fire time of the schedule, and the flow has none",
        ),
        (
            'Flow("f", schedule="@reboot", deadline="1h")',
            "flow 'f': deadline counts from each fire time of the schedule, and the flow has none",
        ),
    ],
)
def test_a_bad_flow_deadline_is_named(source, message):
    from cronflow import Flow
    from cronflow.errors import FlowDefinitionError

    with pytest.raises(FlowDefinitionError) as caught:
        eval(source, {"Flow": Flow})
    assert str(caught.value).startswith(message)


def test_a_task_deadline_is_checked_with_the_flow_and_stored_in_the_spec():
    from cronflow import Flow, Shell
    from cronflow.errors import FlowDefinitionError

    def page(context):
        return None

    with Flow("manual") as manual:
        Shell("t", "true", deadline="1h")
    with pytest.raises(FlowDefinitionError) as caught:
        manual.spec()
    assert re.sub(r" \(line \d+\)", "", str(caught.value)) == (
        "flow 'manual': task 't': deadline counts from each fire time of the schedule, and the "
        "flow has none"
    )
    with Flow(
        "f", schedule="@daily", deadline="2h", on_failure=page, email_on_failure="a@b.c"
    ) as f:
        Shell("t", "true", deadline="90m", email_on_failure=[])
        Shell("u", "true")
    spec = f.spec()
    assert spec["deadline_s"] == 7200.0
    assert spec["alerts"] == {
        "callbacks": {"on_failure": f"{__name__}.{page.__qualname__}"},
        "email_on_failure": ["a@b.c"],
    }
    assert [t.get("deadline_s") for t in spec["tasks"]] == [5400.0, None]


def test_list_top_and_tasks_show_a_missed_deadline_until_a_run_succeeds(make, write_flow, home):
    from clikit import invoke, ok, rows

    h = meteo(make, write_flow, home, utc(2026, 12, 3, 0, 0))
    h.tick()
    h.at(utc(2026, 12, 3, 2, 30))
    settle_alerts(h)
    (daily,) = [r for r in rows(home, "list") if r["flow_id"] == "meteo_daily"]
    assert daily["missed_deadline"]["fire_at"] == "2026-12-03T00:30:00+00:00"
    assert daily["missed_deadline"]["message"].startswith("missed deadline: meteo_daily 2026-12-03")
    text = ok(home, "list").stdout
    header, *lines = text.splitlines()
    assert header.rstrip().endswith("missed deadline")
    (line,) = [x for x in lines if x.startswith("meteo_daily")]
    assert line.rstrip().endswith("2026-12-03 00:30")
    (ingest_line,) = [x for x in lines if x.startswith("meteo_ingest")]
    assert not ingest_line.rstrip().endswith("00:30")
    frame = json.loads(invoke(home, "top", "--json").stdout)
    (miss,) = frame["missed_deadlines"]
    assert (miss["flow_id"], miss["task_id"], miss["run_state"]) == ("meteo_daily", None, "queued")
    assert "missed deadlines" in ok(home, "top", "--once").stdout
    # once the run succeeds (here by hand), list no longer flags the flow
    ok(home, "mark", "meteo_daily", "--date", "2026-12-03", "--state", "success")
    (daily,) = [r for r in rows(home, "list") if r["flow_id"] == "meteo_daily"]
    assert daily["missed_deadline"] is None
    frame = json.loads(invoke(home, "top", "--json").stdout)
    assert frame["missed_deadlines"][0]["run_state"] == "success"  # top still shows it


def test_a_deadline_taken_off_and_set_again_starts_afresh(make, write_flow, home):
    source = """
    from cronflow import Flow, Shell
    with Flow("f", schedule="0 * * * *", start_date="2024-06-03"{deadline}):
        Shell("t", "exit 1")
    """
    write_flow("f", source.format(deadline=', deadline="10m"'))
    h = make(utc(2024, 6, 3, 0, 0))
    h.tick()
    assert ("f", "") in h.store.deadline_cursors()
    write_flow("f", source.format(deadline=""))
    h.sync()
    h.at(utc(2024, 6, 3, 0, 5))
    assert h.store.deadline_cursors() == {}
    write_flow("f", source.format(deadline=', deadline="10m"'))
    h.sync()
    h.at(utc(2024, 6, 3, 5, 0))  # the fire times while it was off are not checked
    assert misses(h) == []
    h.at(utc(2024, 6, 3, 6, 10))
    assert [m["fire_at"][11:16] for m in misses(h)] == ["05:00", "06:00"]

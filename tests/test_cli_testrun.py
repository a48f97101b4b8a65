"""`cronflow test`: a flow run in the foreground, without the daemon, leaving the home alone."""

from __future__ import annotations

from pathlib import Path

import pytest
from clikit import TWICE, error, invoke, ok, store

TRY = """
from cronflow import Flow, Python, Shell

def measure(path, context):
    print("measuring", path, "with", context["var"]["station"])
    return 3

with Flow("try", schedule="30 2 * * *", timezone="Europe/Paris"):
    fetch = Shell("fetch", "echo fetching {{ ds }}; echo home=$CRONFLOW_HOME; echo to-stderr >&2")
    check = Python("check", measure, args=["/data/{{ ds_nodash }}.csv"])
    report = Shell("report", "echo report; exit {code}")
    publish = Shell("publish", "echo publish")
    cleanup = Shell("cleanup", "echo cleanup [red]not markup[/]", trigger_rule="all_done")
    slow = Shell("slow", "sleep 30", timeout=0.3)
    fetch >> check >> report >> publish >> cleanup
"""


@pytest.fixture
def flow(home, write_flow):
    def write(code: int = 0) -> Path:
        write_flow("try", TRY.replace("{code}", str(code)))
        return home

    store(home).set_variable("station", "north")
    return write


def lines_of(text: str, task: str) -> list[str]:
    return [line.split(" | ", 1)[1] for line in text.splitlines() if line.startswith(f"{task} | ")]


def test_a_flow_runs_in_order_streams_output_and_fails_with_exit_1(flow):
    home = flow(code=5)
    result = invoke(home, "test", "try", "--date", "2024-03-01")
    assert result.exit_code == 1
    out = result.stdout
    assert lines_of(out, "fetch")[0] == "fetching 2024-03-01"
    assert "to-stderr" in lines_of(out, "fetch")
    assert lines_of(out, "check") == ["measuring /data/20240301.csv with north"]
    assert lines_of(out, "report") == ["report"]
    assert lines_of(out, "publish") == []
    assert lines_of(out, "cleanup") == ["cleanup [red]not markup[/]"]
    assert out.index("fetch |") < out.index("check |") < out.index("report |")
    ended = {
        line.split(":")[0]: line.split(":", 1)[1].strip() for line in result.stderr.splitlines()
    }
    assert ended["fetch"].startswith("success in ")
    assert ended["report"].endswith(": exit code 5")
    assert ended["publish"] == "upstream_failed: all_success"
    assert ended["cleanup"].startswith("success")
    assert ended["slow"].endswith(": timed out after 0.3s")
    assert result.stderr.splitlines()[-1] == "try: failed"
    assert result.stderr.splitlines()[0] == "testing try for 2024-03-01T02:30:00+01:00"


def test_the_home_is_left_alone(flow):
    home = flow(code=0)
    result = invoke(home, "test", "try", "--date", "2024-03-01")
    task_home = lines_of(result.stdout, "fetch")[1].removeprefix("home=")
    assert task_home != str(home) and not Path(task_home).exists()  # a scratch home, removed
    db = store(home)
    assert db.runs_of_flow("try") == []
    assert not (home / "logs").exists() or not any((home / "logs").rglob("*.log"))


def test_one_task_alone(flow):
    home = flow(code=0)
    result = ok(home, "test", "try", "--task", "report", "--date", "2024-03-01T09:00")
    assert result.stdout == "report | report\n"
    assert result.stderr.splitlines()[-1] == "try: success"
    assert "testing try for 2024-03-01T09:00:00+01:00" in result.stderr


def test_test_bad_input(flow, write_flow):
    home = flow()
    write_flow("twice", TWICE)
    assert error(home, "test", "nope") == "unknown flow 'nope' (known: try, twice)"
    assert error(home, "test", "try", "--task", "zz") == (
        "flow 'try' has no task 'zz' (known: fetch, check, report, publish, cleanup, slow)"
    )
    assert error(home, "test", "try", "--date", "2024-13-01") == (
        "bad date '2024-13-01': no such day"
    )
    assert error(home, "test", "twice", "--date", "2024-03-01") == (
        "flow 'twice' fires 2 times on 2024-03-01: 2024-03-01T06:00:00+00:00, "
        "2024-03-01T18:00:00+00:00; give a date-time"
    )


HISTORY = """
from cronflow import Flow, Python, Shell

def total(context):
    counts = context["xcom"].pull("count", flow="ingest", date=context["prev_ds"])
    print("python total", sum(counts), "of", len(counts))

with Flow("ingest", schedule="*/10 * * * *", timezone="Europe/Paris"):
    Shell("count", "true")

with Flow("report", schedule="0 1 * * *", timezone="Europe/Paris"):
    Shell("stamp", "echo meteo_{{ logical_date.strftime('%Y%m%d%H%M') }}.csv "
                   "{{ data_interval_start | ds }} {{ ds | ds_add(-1) }}")
    Shell("total", "echo total {{ xcom.pull('count', flow='ingest', date=prev_ds) | sum }}")
    Python("py", total)
"""


def test_templates_render_as_under_the_daemon_and_read_the_homes_xcoms(home, write_flow):
    """The issue's case: a task alone renders its dates without any XCom, and other runs'
    XComs come from the home's store although the test run lives in a scratch one."""
    from cronflow import catalog, control
    from cronflow.config import load_settings

    write_flow("history", HISTORY)
    db = store(home)
    ingest = catalog.sync(db, load_settings(home)).get("ingest")
    for at, count in (("2024-03-01T00:10", 4), ("2024-03-01T23:50", 6), ("2024-03-02T00:00", 99)):
        run_id = control.trigger(db, ingest, control.logical_date_for_trigger(ingest, at, None))
        db.push_xcom(run_id, "count", "return_value", count)
    result = ok(home, "test", "report", "--task", "stamp", "--date", "2024-03-02")
    assert lines_of(result.stdout, "stamp") == ["meteo_202403020100.csv 2024-03-01 2024-03-01"]
    result = ok(home, "test", "report", "--date", "2024-03-02")
    assert lines_of(result.stdout, "total") == ["total 10"]
    assert lines_of(result.stdout, "py") == ["python total 10 of 2"]

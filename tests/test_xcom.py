"""XComs across runs: `xcom.pull(task, key, flow=, date=)` in Python and in templates, and
`cronflow xcom FLOW`."""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from clikit import error, invoke, ok, rows
from conftest import utc
from opskit import Runner

from cronflow import catalog, control
from cronflow.config import load_settings
from cronflow.context import task_context
from cronflow.errors import CronflowError, InvalidInputError, NotFoundError
from cronflow.store import Store
from cronflow.templates import render

INGEST = """
from cronflow import Flow, Python

def count(context):
    return context["logical_date"].hour * 10 + context["logical_date"].minute // 10

with Flow("ingest", schedule="*/10 * * * *", timezone="Europe/Paris"):
    Python("count", count)
"""

REPORT = """
from cronflow import Flow, Python, Shell

def total(context):
    counts = context["xcom"].pull("count", flow="ingest", date=context["prev_ds"])
    return {"counts": counts, "sum": sum(counts)}

with Flow("report", schedule="0 1 * * *", timezone="Europe/Paris"):
    Python("total", total)
    Shell("shell", "echo sum={{ xcom.pull('count', flow='ingest', date=prev_ds) | sum }} "
                   "n={{ xcom.pull('count', flow='ingest', date=prev_ds) | length }}")
"""


class Home:
    """A home with the ingest and report flows loaded, runs created as the daemon would."""

    def __init__(self, home: Path, write_flow: Any) -> None:
        write_flow("ingest", INGEST)
        write_flow("report", REPORT)
        self.settings = load_settings(home)
        self.store = Store(self.settings.db_path)
        self.catalog = catalog.sync(self.store, self.settings)

    def run(self, flow_id: str, at: datetime) -> dict[str, Any]:
        flow = self.catalog.get(flow_id)
        return self.store.run(control.trigger(self.store, flow, at))

    def xcom(self, flow_id: str, run: dict[str, Any], task_id: str = "total") -> Any:
        flow = self.catalog.get(flow_id)
        return task_context(flow, flow.task(task_id), run, 1, self.store)["xcom"]


@pytest.fixture
def h(home: Path, write_flow: Any) -> Home:
    return Home(home, write_flow)


def test_pull_reads_every_run_of_a_day_oldest_first(h: Home) -> None:
    # three ingest runs on 1 March (Paris), one just before and one just after that local day
    stamps = {
        utc(2024, 2, 29, 22, 50): "the day before",  # 23:50 on 29 Feb in Paris
        utc(2024, 2, 29, 23, 0): 1,  # 00:00 on 1 March in Paris
        utc(2024, 3, 1, 12, 10): 2,
        utc(2024, 3, 1, 22, 50): 3,  # 23:50 on 1 March in Paris
        utc(2024, 3, 1, 23, 0): "the day after",
    }
    for at, value in stamps.items():
        h.store.push_xcom(h.run("ingest", at)["run_id"], "count", "return_value", value)
    h.run("ingest", utc(2024, 3, 1, 13))  # a run of the day without the value: left out
    xcom = h.xcom("report", h.run("report", utc(2024, 3, 2, 0)))
    assert xcom.pull("count", flow="ingest", date="2024-03-01") == [1, 2, 3]
    assert xcom.pull("count", flow="ingest", date=date(2024, 3, 1)) == [1, 2, 3]
    assert xcom.pull("count", flow="ingest", date="2024-03-05") == []
    # a date-time names one run: its value, or the default
    assert xcom.pull("count", flow="ingest", date="2024-03-01T13:10:00+01:00") == 2
    paris = datetime(2024, 3, 1, 13, 10, tzinfo=ZoneInfo("Europe/Paris"))
    assert xcom.pull("count", flow="ingest", date=paris) == 2
    assert xcom.pull("count", flow="ingest", date="2024-03-01T13:10") == 2  # in ingest's zone
    assert xcom.pull("count", flow="ingest", date="2024-03-01T14:00", default=-1) == -1
    assert xcom.pull("count", "other_key", flow="ingest", date="2024-03-01T13:10") is None


def test_pull_of_this_flows_other_runs_and_without_a_date(h: Home) -> None:
    yesterday = h.run("report", utc(2024, 3, 1, 0))
    h.store.push_xcom(yesterday["run_id"], "total", "return_value", {"sum": 5})
    h.store.push_xcom(yesterday["run_id"], "total", "rows", 7)
    today = h.run("report", utc(2024, 3, 2, 0))
    h.store.push_xcom(today["run_id"], "total", "return_value", {"sum": 9})
    xcom = h.xcom("report", today)
    context = task_context(
        h.catalog.get("report"), h.catalog.get("report").task("total"), today, 1, h.store
    )
    prev = context["data_interval_start"]  # the previous fire time: yesterday's run
    assert xcom.pull("total", date=prev) == {"sum": 5}
    assert xcom.pull("total", "rows", date=context["prev_ds"]) == [7]
    assert xcom.pull("total") == {"sum": 9}  # this run, as before
    assert xcom.pull("total", flow="report") == {"sum": 9}  # the run at this logical date
    assert render("{{ xcom.pull('total', date=data_interval_start).sum }}", context) == "5"
    assert render("{{ xcom.total.sum }}", context) == "9"


@pytest.mark.parametrize(
    ("kwargs", "error_type", "message"),
    [
        ({"flow": "nope", "date": "2024-03-01"}, NotFoundError, "unknown flow 'nope'"),
        ({"flow": "ingest", "date": "yesterday"}, InvalidInputError, "bad date 'yesterday'"),
        ({"flow": "ingest", "date": 20240301}, CronflowError, "date must be a day"),
    ],
)
def test_pull_errors_name_what_is_wrong(
    h: Home, kwargs: Any, error_type: Any, message: str
) -> None:
    xcom = h.xcom("report", h.run("report", utc(2024, 3, 2, 0)))
    with pytest.raises(error_type, match=message):
        xcom.pull("count", **kwargs)


def test_a_daily_flow_reads_the_counts_of_its_ingest_runs(home: Path, write_flow: Any) -> None:
    write_flow("ingest", INGEST)
    write_flow("report", REPORT)
    r = Runner(home)
    for at in ("2024-03-01T00:00", "2024-03-01T10:20", "2024-03-01T23:50", "2024-03-02T00:00"):
        r.run("ingest", at)
    run_id = r.run("report", "2024-03-02")  # about yesterday: prev_ds
    assert r.states(run_id) == {"total": "success", "shell": "success"}
    assert r.xcom(run_id, "total") == {"counts": [0, 102, 235], "sum": 337}
    assert "sum=337 n=3" in r.log(run_id, "shell")


# --- cronflow xcom ------------------------------------------------------------------------------


def test_cli_xcom_lists_values_of_a_run_or_a_day_masked(h: Home, home: Path) -> None:
    first = h.run("ingest", utc(2024, 3, 1, 9))
    second = h.run("ingest", utc(2024, 3, 1, 10))
    h.store.push_xcom(first["run_id"], "count", "return_value", 4)
    h.store.push_xcom(second["run_id"], "count", "return_value", {"token": "s3cr3t-token", "n": 5})
    h.store.push_xcom(second["run_id"], "count", "path", "/data/x.csv")
    ok(home, "var", "set", "token", "s3cr3t-token", "--secret")
    latest = rows(home, "xcom", "ingest")
    assert [(r["task_id"], r["key"], r["value"]) for r in latest] == [
        ("count", "path", "/data/x.csv"),
        ("count", "return_value", {"token": "***", "n": 5}),
    ]
    assert latest[0]["logical_date"] == "2024-03-01T10:00:00+00:00"
    day = rows(home, "xcom", "ingest", "--date", "2024-03-01", "--task", "count")
    assert [(r["run_id"], r["key"]) for r in day] == [
        (first["run_id"], "return_value"),
        (second["run_id"], "path"),
        (second["run_id"], "return_value"),
    ]
    table = ok(home, "xcom", "ingest", "--date", "2024-03-01").stdout
    assert "s3cr3t" not in table
    lines = table.splitlines()
    assert lines[0].split() == ["logical", "date", "task", "key", "value"]
    assert lines[1].split() == ["2024-03-01", "10:00", "count", "return_value", "4"]
    assert lines[3].endswith('{"token": "***", "n": 5}')
    assert all(line == line.rstrip() for line in lines)


def test_cli_xcom_bad_input(h: Home, home: Path) -> None:
    assert error(home, "xcom", "nope").startswith("unknown flow 'nope'")
    assert "has no runs yet" in error(home, "xcom", "ingest")
    h.run("ingest", utc(2024, 3, 1, 9))
    assert "has no task 'nope'" in error(home, "xcom", "ingest", "--task", "nope")
    assert "bad date" in error(home, "xcom", "ingest", "--date", "someday")
    result = invoke(home, "xcom", "ingest")
    assert result.exit_code == 0 and "no XCom values" in result.stdout
    assert json.loads(ok(home, "xcom", "ingest", "--json").stdout) == []


def test_a_replay_clears_the_xcoms_of_what_it_clears(home: Path, write_flow: Any) -> None:
    """As Airflow's clear: the replayed task starts without the values its last try pushed;
    the task instances left alone keep theirs."""
    write_flow(
        "pair",
        """
        from cronflow import Flow, Python

        def one(context):
            context["xcom"].push("extra", "from the first try")
            return 1

        with Flow("pair"):
            Python("a", one)
            Python("b", lambda: 2)
        """,
    )
    r = Runner(home)
    run_id = r.run("pair")
    assert (r.xcom(run_id, "a"), r.xcom(run_id, "a", "extra"), r.xcom(run_id, "b")) == (
        1,
        "from the first try",
        2,
    )
    assert r.store.clear_tis({run_id: {"a": 0}}, r.clock.now()) == 1
    assert r.store.xcom_rows([run_id], "a") == []
    assert r.xcom(run_id, "b") == 2
    r.settle()
    assert r.states(run_id) == {"a": "success", "b": "success"}
    assert r.xcom(run_id, "a") == 1

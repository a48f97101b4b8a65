"""Mapping (Airflow's dynamic task mapping): one task instance per item of a list known only at
run time.

Scheduler-level tests drive a real scheduler (real worker processes) with a fake clock; the
addressing of one instance (`T[3]`) goes through the CLI; the end-to-end tests run the daemon.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
from test_scheduler import Harness, utc

from cronflow import control
from cronflow.config import Settings
from cronflow.mapping import expand_graph, items_problem, split_id

# list_files returns the run's conf "files"; process runs once per file and writes what it
# got; report waits for every instance (its trigger rule from the conf of the test).
FILES = """
from cronflow import Flow, Python, Shell

def list_files(context):
    return context["conf"]["files"]

def process(path, context):
    if path == "bad":
        raise ValueError("cannot process " + path)
    return {"path": path, "index": context["map_index"]}

with Flow("files", timezone="UTC"):
    get = Python("list_files", list_files)
    each = Python("process", process).map(over=get, arg="path")
    report = Shell("report", "echo reported", trigger_rule="RULE")
    each >> report
"""


@pytest.fixture
def make(settings: Settings) -> Callable[[datetime], Harness]:
    return lambda start: Harness(settings, start)


def run_with(h: Harness, day: int, conf: dict) -> dict[str, dict]:
    """Trigger a run of `files` with this conf, let it finish; its task instances by id."""
    run_id = control.trigger(h.store, h.scheduler.catalog.get("files"), utc(2026, 12, day), conf)
    h.settle()
    return {t["task_id"]: t for t in h.store.tis_of_runs([run_id])}


def states_of(tis: dict[str, dict]) -> dict[str, str]:
    return {task_id: ti["state"] for task_id, ti in tis.items()}


# --- pure parts ------------------------------------------------------------------------------
def test_instance_ids_and_the_expanded_graph():
    assert split_id("process[12]") == ("process", 12)
    assert split_id("process") == ("process", None)
    graph = {"get": ([], "all_success"), "p": (["get"], "all_success"), "r": (["p"], "one_failed")}
    expanded, order = expand_graph(graph, ["get", "p", "r"], {"p": 2})
    assert order == ["get", "p[0]", "p[1]", "r"]
    assert expanded["p[1]"] == (["get"], "all_success")
    assert expanded["r"] == (["p[0]", "p[1]"], "one_failed")


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (None, "it returned nothing (None), not a list"),
        ({"a": 1}, "it returned a dict, not a list"),
        ("a.csv", "it returned a str, not a list"),
        (list(range(10_001)), "10001 items, over the limit of 10000"),
    ],
)
def test_what_cannot_be_mapped_over_is_said_in_words(value, words):
    assert words in (items_problem(value, "get") or "")
    assert items_problem([1, 2], "get") is None


# --- the scheduler ---------------------------------------------------------------------------
def test_one_instance_per_item_each_with_its_item_and_xcom(make, write_flow):
    write_flow("files", FILES.replace("RULE", "all_success"))
    h: Harness = make(utc(2026, 12, 3, 12))
    tis = run_with(h, 1, {"files": ["a.csv", "b.csv", "c.csv"]})
    assert states_of(tis) == {
        "list_files": "success",
        "process[0]": "success",
        "process[1]": "success",
        "process[2]": "success",
        "report": "success",
    }
    assert [tis[f"process[{i}]"]["map_index"] for i in range(3)] == [0, 1, 2]
    run_id = tis["report"]["run_id"]
    assert h.store.pull_xcom(run_id, "process[1]") == {"path": "b.csv", "index": 1}
    logs = {tis[f"process[{i}]"]["log_path"] for i in range(3)}
    assert len(logs) == 3  # a log each


def test_an_empty_list_skips_the_mapped_task_and_trigger_rules_follow(make, write_flow):
    write_flow("files", FILES.replace("RULE", "all_success"))
    h: Harness = make(utc(2026, 12, 3, 12))
    tis = run_with(h, 1, {"files": []})
    assert states_of(tis) == {"list_files": "success", "process": "skipped", "report": "skipped"}
    assert "'list_files' returned an empty list" in tis["process"]["reason"]
    assert h.store.run(tis["process"]["run_id"])["state"] == "success"


def test_a_value_that_is_not_a_list_fails_the_mapped_task_with_the_reason(make, write_flow):
    write_flow("files", FILES.replace("RULE", "all_success"))
    h: Harness = make(utc(2026, 12, 3, 12))
    tis = run_with(h, 1, {"files": "a.csv"})
    assert states_of(tis) == {
        "list_files": "success",
        "process": "failed",
        "report": "upstream_failed",
    }
    assert tis["process"]["reason"] == "cannot map over 'list_files': it returned a str, not a list"
    assert h.store.run(tis["process"]["run_id"])["state"] == "failed"


@pytest.mark.parametrize(
    ("rule", "report"),
    [("all_success", "upstream_failed"), ("all_done", "success"), ("one_failed", "success")],
)
def test_the_downstream_waits_for_every_instance_by_its_trigger_rule(
    make, write_flow, rule, report
):
    write_flow("files", FILES.replace("RULE", rule))
    h: Harness = make(utc(2026, 12, 3, 12))
    tis = run_with(h, 1, {"files": ["a.csv", "bad", "c.csv"]})
    assert [tis[f"process[{i}]"]["state"] for i in range(3)] == ["success", "failed", "success"]
    assert "cannot process bad" in tis["process[1]"]["reason"]
    assert tis["report"]["state"] == report
    assert h.store.run(tis["report"]["run_id"])["state"] == "failed"


FLAKY = """
from cronflow import Flow, Python, Shell

def list_files(context):
    return ["a", "flaky", "c"]

def process(item, context):
    if item == "flaky" and context["try_number"] == 1:
        raise RuntimeError("flaky the first time")
    return item.upper()

with Flow("files", timezone="UTC"):
    each = Python("process", process, retries=1, retry_delay="60s").map(
        over=Python("list_files", list_files)
    )
    each >> Shell("report", "echo reported")
"""


def test_only_the_failed_instance_is_retried(make, write_flow):
    write_flow("files", FLAKY)
    h: Harness = make(utc(2026, 12, 3, 12))
    tis = run_with(h, 1, {})
    assert tis["process[1]"]["state"] == "up_for_retry"
    assert [tis[f"process[{i}]"]["try_number"] for i in (0, 2)] == [1, 1]
    assert tis["report"]["state"] == "none"  # waits for every instance
    h.at(utc(2026, 12, 3, 12, 1, 1))
    h.settle()
    after = {t["task_id"]: t for t in h.store.tis_of_runs([tis["report"]["run_id"]])}
    assert (after["process[1]"]["state"], after["process[1]"]["try_number"]) == ("success", 2)
    assert [after[f"process[{i}]"]["try_number"] for i in (0, 2)] == [1, 1]
    assert after["report"]["state"] == "success"
    assert h.store.pull_xcom(after["report"]["run_id"], "process[1]") == "FLAKY"


POOLED = """
from cronflow import Flow, Python, Shell

def list_files(context):
    return list(range(4))

with Flow("pooled", timezone="UTC"):
    each = Shell(
        "station", "echo $(date +%s.%N) start {{ item }} >> OUT; sleep 0.2; "
        "echo $(date +%s.%N) end {{ item }} >> OUT", pool="station",
    ).map(over=Python("list_files", list_files))
"""


def test_instances_count_against_their_pool(make, write_flow, home):
    out = home / "pool.txt"
    write_flow("pooled", POOLED.replace("OUT", str(out)))
    h: Harness = make(utc(2026, 12, 3, 12))
    control.trigger(h.store, h.scheduler.catalog.get("pooled"), utc(2026, 12, 1))
    h.settle()
    events = [line.split()[1:] for line in out.read_text().splitlines()]
    assert [e[0] for e in events] == ["start", "end"] * 4  # never two at once in a 1-slot pool
    assert sorted(e[1] for e in events if e[0] == "start") == ["0", "1", "2", "3"]


def test_instances_count_against_parallelism(make, write_flow, home):
    write_flow(
        "pooled",
        POOLED.replace('pool="station"', 'pool="default"').replace("OUT", str(home / "p.txt")),
    )
    h: Harness = make(utc(2026, 12, 3, 12))
    h.scheduler.executor.parallelism = 2
    control.trigger(h.store, h.scheduler.catalog.get("pooled"), utc(2026, 12, 1))
    h.tick()  # list_files starts
    h.settle()
    assert max_running_at_once(home / "p.txt") <= 2


def max_running_at_once(path: Path) -> int:
    events = sorted(
        (float(t), kind) for t, kind, _ in (line.split() for line in path.read_text().splitlines())
    )
    running = most = 0
    for _, kind in events:
        running += 1 if kind == "start" else -1
        most = max(most, running)
    return most

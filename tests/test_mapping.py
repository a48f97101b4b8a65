"""Mapping (Airflow's dynamic task mapping): one task instance per item of a list known only at
run time.

Scheduler-level tests drive a real scheduler (real worker processes) with a fake clock; the
addressing of one instance (`T[3]`) goes through the CLI; the end-to-end tests run the daemon.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
from clikit import error, invoke, ok, rows
from conftest import cli, wait_for
from test_scheduler import Harness, utc

from cronflow import control
from cronflow.checks import check_flows
from cronflow.config import Settings
from cronflow.deps import Decision, resolve_run
from cronflow.mapping import expand_graph, items_problem, split_id
from cronflow.states import TaskState

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

def collect(context):
    return context["xcom"].pull("process")

with Flow("files", timezone="UTC"):
    get = Python("list_files", list_files)
    each = Python("process", process).map(over=get, arg="path")
    report = Python("report", collect, trigger_rule="RULE")
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
    assert expanded["r"] == (["p"], "one_failed")  # p stands for its instances (groups)


def test_a_task_after_a_mapped_task_is_decided_from_its_instances_states():
    graph = {"p[0]": ([], "all_success"), "p[1]": ([], "all_success"), "r": (["p"], "RULE")}
    done, one_failed = [TaskState.SUCCESS], [TaskState.SUCCESS, TaskState.FAILED]
    running = [TaskState.SUCCESS, TaskState.RUNNING]
    states = {"p[0]": TaskState.SUCCESS, "p[1]": TaskState.SUCCESS, "r": TaskState.NONE}
    for rule, group, decision in [
        ("all_success", done, Decision.RUN),
        ("all_success", running, Decision.WAIT),
        ("all_success", one_failed, Decision.UPSTREAM_FAILED),
        ("one_failed", one_failed, Decision.RUN),
        ("all_done", running, Decision.WAIT),
    ]:
        rules = {**graph, "r": (["p"], rule)}
        assert resolve_run(rules, states, ["r"], groups={"p": group})["r"] is decision, rule


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
    assert h.store.pull_xcom(run_id, "report") == [  # their values, as a list, in item order
        {"path": f"{name}.csv", "index": i} for i, name in enumerate("abc")
    ]


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


def test_only_the_failed_instance_is_retried(make, write_flow, home):
    write_flow("files", FLAKY)
    h: Harness = make(utc(2026, 12, 3, 12))
    tis = run_with(h, 1, {})
    assert tis["process[1]"]["state"] == "up_for_retry"
    why = ok(home, "why", "files", "--date", "2026-12-01", "--task", "report").stdout
    assert "waiting on upstream task(s) process (up_for_retry)" in why
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
    assert len((home / "p.txt").read_text().splitlines()) == 8  # 4 instances started and ended


def max_running_at_once(path: Path) -> int:
    events = sorted(
        (float(t), kind) for t, kind, _ in (line.split() for line in path.read_text().splitlines())
    )
    running = most = 0
    for _, kind in events:
        running += 1 if kind == "start" else -1
        most = max(most, running)
    return most


# --- addressing one instance or all: tasks, logs, mark, replay, show -------------------------
LISTED = """
from cronflow import Flow, Python, Shell

def list_files(context):
    return open(LIST).read().split()

with Flow("files", timezone="UTC"):
    get = Python("list_files", list_files)
    each = Shell("process", "echo processing {{ item }} as {{ map_index }}").map(over=get)
    each >> Shell("report", "echo reported")
"""


def listed_flow(write_flow, home: Path, names: str) -> Path:
    listing = home / "list.txt"
    listing.write_text(names)
    write_flow("files", LISTED.replace("LIST", repr(str(listing))))
    return listing


def test_tasks_and_logs_show_each_instance(make, write_flow, home):
    listed_flow(write_flow, home, "a.csv b.csv c.csv")
    h: Harness = make(utc(2026, 12, 3, 12))
    run_with(h, 1, {})
    listed = [(r["task"], r["state"]) for r in rows(home, "tasks", "files")]
    assert listed == [
        ("list_files", "success"),
        ("process[0]", "success"),
        ("process[1]", "success"),
        ("process[2]", "success"),
        ("report", "success"),
    ]
    shown = ok(home, "logs", "files.process[2]").stdout
    assert "processing c.csv as 2" in shown
    assert "files.process[2] for" in shown  # the header names the instance
    assert "process[0] to process[2]" in error(home, "logs", "files.process")
    assert "is not mapped" in error(home, "logs", "files.report[1]")
    assert "has no task 'process[7]'" in error(home, "logs", "files.process[7]")
    grid = {
        line.split()[0]: line.split()[1:]
        for line in ok(home, "show", "files").stdout.splitlines()
        if line.split() and line.split()[0] in ("process", "report")
    }
    assert grid["process"][-1] == "ok"  # one cell for the three instances


def test_mark_one_instance_or_all_of_them(make, write_flow, home):
    listed_flow(write_flow, home, "a.csv b.csv c.csv")
    h: Harness = make(utc(2026, 12, 3, 12))
    run_id = run_with(h, 1, {})["report"]["run_id"]
    ok(home, "mark", "files.process[1]", "--date", "2026-12-01", "--state", "failed")
    states = {t["task_id"]: t["state"] for t in h.store.tis_of_runs([run_id])}
    assert [states[f"process[{i}]"] for i in range(3)] == ["success", "failed", "success"]
    assert h.store.run(run_id)["state"] == "failed"
    grid = [line.split() for line in ok(home, "show", "files").stdout.splitlines() if line.strip()]
    assert [cells[-1] for cells in grid if cells[0] == "process"] == ["FAIL"]
    ok(home, "mark", "files.process", "--date", "2026-12-01", "--state", "skipped")
    states = {t["task_id"]: t["state"] for t in h.store.tis_of_runs([run_id])}
    assert [states[f"process[{i}]"] for i in range(3)] == ["skipped"] * 3
    assert h.store.run(run_id)["state"] == "success"


def test_replay_one_instance_keeps_the_others(make, write_flow, home):
    listed_flow(write_flow, home, "a.csv b.csv c.csv")
    h: Harness = make(utc(2026, 12, 3, 12))
    before = run_with(h, 1, {})
    ok(home, "replay", "files", "--date", "2026-12-01", "--task", "process[1]", "--yes")
    h.settle()
    after = {t["task_id"]: t for t in h.store.tis_of_runs([before["report"]["run_id"]])}
    assert [after[f"process[{i}]"]["try_number"] for i in range(3)] == [1, 2, 1]
    assert "process" not in after  # the run started again without a placeholder
    assert after["process[1]"]["state"] == "success"


def test_replaying_the_upstream_with_its_downstream_maps_the_new_list(make, write_flow, home):
    listing = listed_flow(write_flow, home, "a.csv b.csv c.csv")
    h: Harness = make(utc(2026, 12, 3, 12))
    run_id = run_with(h, 1, {})["report"]["run_id"]
    listing.write_text("x.csv y.csv")
    ok(
        home,
        "replay",
        "files",
        "--date",
        "2026-12-01",
        "--task",
        "list_files",
        "--downstream",
        "--yes",
    )
    placeholder = {t["task_id"]: t for t in h.store.tis_of_runs([run_id])}
    assert sorted(placeholder) == ["list_files", "process", "report"]  # mapped again later
    assert placeholder["process"]["try_number"] == 1  # the next try writes a new log
    h.settle()
    after = {t["task_id"]: t for t in h.store.tis_of_runs([run_id])}
    assert sorted(after) == ["list_files", "process[0]", "process[1]", "report"]
    assert after["process[1]"]["try_number"] == 2
    assert "processing y.csv as 1" in Path(after["process[1]"]["log_path"]).read_text()
    assert h.store.run(run_id)["state"] == "success"


def test_replaying_the_mapped_task_as_a_whole_maps_it_again(make, write_flow, home):
    listing = listed_flow(write_flow, home, "a.csv b.csv c.csv")
    h: Harness = make(utc(2026, 12, 3, 12))
    run_id = run_with(h, 1, {})["report"]["run_id"]
    listing.write_text("ignored: list_files is not run again")
    ok(home, "replay", "files", "--date", "2026-12-01", "--task", "process", "--yes")
    assert "process" in {t["task_id"] for t in h.store.tis_of_runs([run_id])}
    h.settle()
    after = {t["task_id"]: t["state"] for t in h.store.tis_of_runs([run_id])}
    assert [k for k in after if k.startswith("process")] == [f"process[{i}]" for i in range(3)]


def test_cronflow_test_runs_the_mapped_task_over_the_list(home, write_flow):
    # its own flow id: flow files imported in-process by other tests stay out of its way
    listing = home / "list.txt"
    listing.write_text("a.csv b.csv")
    write_flow("tested", LISTED.replace("LIST", repr(str(listing))).replace('"files"', '"tested"'))
    result = invoke(home, "test", "tested", "--date", "2026-12-01")
    assert result.exit_code == 0, result.output
    assert "processing b.csv as 1" in result.stdout
    ended = [line.split(":")[0] for line in result.stderr.splitlines()[1:-1]]
    assert ended == ["list_files", "process[0]", "process[1]", "report"]


@pytest.mark.parametrize(
    ("mapping", "words"),
    [
        ('.map(over="nowhere")', "task 'process' maps over unknown task 'nowhere'"),
        ('.map(over=get, arg="not a name")', "map arg must be a Python name"),
    ],
)
def test_check_names_a_bad_map(tmp_path, mapping, words):
    source = LISTED.replace(".map(over=get)", mapping).replace("LIST", "'/nonexistent'")
    (tmp_path / "files.py").write_text(source)
    report = check_flows(tmp_path, timeout_s=30)
    assert any(words in str(p) for p in report.problems), report.problems


# --- with the real daemon ------------------------------------------------------------------------
GATED = """
from cronflow import Flow, Python, Shell

def list_files(context):
    return ["a.csv", "b.csv", "c.csv", "d.csv"]

with Flow("gated", timezone="UTC"):
    each = Shell(
        "process",
        "echo $CRONFLOW_TRY_NUMBER >> RUNS/{{ map_index }}; "
        "while [ ! -e GATE ]; do sleep 0.1; done; echo done {{ item }}",
    ).map(over=Python("list_files", list_files))
    each >> Shell("report", "echo reported")
"""


def daemon_tis(home: Path, flow: str) -> dict[str, dict]:
    result = cli(home, "tasks", flow, "--json")
    assert result.returncode == 0, result.stderr
    return {row["task"]: row for row in json.loads(result.stdout)}


@pytest.mark.slow
def test_the_daemon_maps_and_survives_a_kill_9_mid_mapped_run(home, daemon, write_flow):
    runs, gate = home / "runs", home / "gate"
    runs.mkdir()
    write_flow("gated", GATED.replace("RUNS", str(runs)).replace("GATE", str(gate)))
    first = daemon()
    assert cli(home, "trigger", "gated", "--date", "2026-12-01").returncode == 0
    wait_for(lambda: len(list(runs.iterdir())) == 4, what="4 running instances")
    wait_for(
        lambda: all(
            r["state"] == "running" for t, r in daemon_tis(home, "gated").items() if "[" in t
        ),
        what="the 4 tries recorded as running",
    )
    first.signal(signal.SIGKILL)
    first.wait()
    gate.touch()  # they end while no daemon runs
    second = daemon()
    wait_for(
        lambda: daemon_tis(home, "gated")["report"]["state"] == "success",
        what="the run to end after the restart",
    )
    rows = daemon_tis(home, "gated")
    assert sorted(rows) == ["list_files", *(f"process[{i}]" for i in range(4)), "report"]
    for i in range(4):
        assert (runs / str(i)).read_text().split() == ["1"]  # each ran once
        assert rows[f"process[{i}]"]["try_number"] == 1
    assert "done c.csv" in cli(home, "logs", "gated.process[2]", "--date", "2026-12-01").stdout
    assert "event=task_mapped flow=gated task=process" in first.output()
    second.stop()


@pytest.mark.slow
def test_the_daemon_replays_one_instance_and_maps_again_after_a_replay(home, daemon, write_flow):
    runs, gate = home / "runs", home / "gate"
    runs.mkdir()
    gate.touch()
    write_flow("gated", GATED.replace("RUNS", str(runs)).replace("GATE", str(gate)))
    daemon()
    result = cli(home, "trigger", "gated", "--date", "2026-12-01", "--wait")
    assert result.returncode == 0, result.stderr
    replay = ["replay", "gated", "--date", "2026-12-01", "--yes"]
    assert cli(home, *replay, "--task", "process[3]").returncode == 0
    wait_for(lambda: (runs / "3").read_text().split() == ["1", "2"], what="process[3] again")
    wait_for(
        lambda: daemon_tis(home, "gated")["process[3]"]["state"] == "success",
        what="process[3] to succeed again",
    )
    assert (runs / "0").read_text().split() == ["1"]
    assert cli(home, *replay, "--task", "list_files", "--downstream").returncode == 0
    wait_for(
        lambda: (
            daemon_tis(home, "gated").get("report", {}).get("state") == "success"
            and all((runs / str(i)).read_text().split()[-1] != "1" for i in range(4))
        ),
        what="every instance mapped and run again",
    )
    # mapped again from the next try on of any instance: each instance's log is new
    assert (runs / "0").read_text().split() == ["1", "3"]
    assert (runs / "3").read_text().split() == ["1", "2", "3"]


def test_the_web_view_shows_a_mapped_task_and_each_instance(make, write_flow, home):
    from webkit import WebProcess

    listed_flow(write_flow, home, "a.csv b.csv")
    h: Harness = make(utc(2026, 12, 3, 12))
    run_id = run_with(h, 1, {})["report"]["run_id"]
    site = WebProcess(home)
    try:
        client = site.client()
        flow_page = client.get("/flows/files")
        assert flow_page.status == 200, flow_page.text
        assert f'href="/flows/files/runs/{run_id}/tasks/process"' in flow_page.text  # one cell
        one = client.get(f"/flows/files/runs/{run_id}/tasks/process%5B1%5D")
        assert one.status == 200, one.text
        assert "processing b.csv as 1" in one.text
        whole = client.get(f"/flows/files/runs/{run_id}/tasks/process")
        assert "process[0] to process[1]" in whole.text
    finally:
        site.stop()


DEADLINED = """
from cronflow import Flow, Python, Shell

def list_files(context):
    return ["a", "b"]

with Flow("timed", schedule="0 6 * * *", start_date="2024-06-03", timezone="UTC"):
    Shell("process", "echo {{ item }}", deadline="20m").map(over=Python("list", list_files))
"""


def test_a_deadline_on_a_mapped_task_counts_its_instances(make, write_flow):
    write_flow("timed", DEADLINED)
    h: Harness = make(utc(2024, 6, 3, 5, 59))
    h.tick()
    h.at(utc(2024, 6, 3, 6, 0))
    h.settle()
    assert h.ti("timed", "process[1]")["state"] == "success"
    h.at(utc(2024, 6, 3, 6, 21))
    rows = h.store.conn.execute("SELECT * FROM deadline_misses").fetchall()
    assert rows == []  # done in time: every instance succeeded


def test_wait_for_downstream_waits_for_every_instance_of_a_mapped_task(make, write_flow, home):
    """The task a mapped task maps over, with wait_for_downstream: its next run waits for each
    instance of the previous run, not for the placeholder those instances replaced."""
    source = FILES.replace("RULE", "all_done").replace(
        'Python("list_files", list_files)',
        'Python("list_files", list_files, wait_for_downstream=True)',
    )
    write_flow("files", source)
    h: Harness = make(utc(2026, 12, 2, 12))
    first = run_with(h, 1, {"files": ["a", "bad"]})
    assert states_of(first)["process[1]"] == "failed" and "process" not in first
    second = run_with(h, 2, {"files": ["c"]})
    assert second["list_files"]["state"] == "none"  # held by process[1] of 1 Dec
    why = invoke(home, "why", "files", "--date", "2026-12-02", "--task", "list_files").stdout
    assert "waiting for process[1] of its run of 2026-12-01" in why, why
    ok(home, "mark", "files.process[1]", "--date", "2026-12-01", "--state", "success")
    h.settle()
    assert h.store.ti(second["list_files"]["run_id"], "list_files")["state"] == "success"


def test_xcom_of_a_mapped_task_lists_every_instance(make, write_flow, home):
    write_flow("files", FILES.replace("RULE", "all_success"))
    h: Harness = make(utc(2026, 12, 2, 12))
    run_with(h, 1, {"files": ["a", "b"]})
    listed = rows(home, "xcom", "files", "--date", "2026-12-01", "--task", "process")
    assert [(r["task_id"], r["value"]["path"]) for r in listed] == [
        ("process[0]", "a"),
        ("process[1]", "b"),
    ]
    one = rows(home, "xcom", "files", "--date", "2026-12-01", "--task", "process[1]")
    assert [r["task_id"] for r in one] == ["process[1]"]


def test_marking_an_instance_the_run_did_not_map_is_an_error(make, write_flow, home):
    write_flow("files", FILES.replace("RULE", "all_success"))
    h: Harness = make(utc(2026, 12, 2, 12))
    before = run_with(h, 1, {"files": ["a", "b"]})
    assert (
        error(home, "mark", "files.process[7]", "--date", "2026-12-01", "--state", "failed")
        == "the run of 2026-12-01 00:00 UTC has no task 'process[7]'"
    )
    after = {t["task_id"]: t for t in h.store.tis_of_runs([before["process[0]"]["run_id"]])}
    assert states_of(after) == states_of(before)  # nothing written

"""Branches and short-circuits: a Python task decides which tasks after it run.

Scheduler-level tests drive a real scheduler (real worker processes) with a fake clock; `why`,
`show` and `test` go through the CLI; the end-to-end test runs the real daemon.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime

import pytest
from clikit import invoke, ok, rows
from conftest import cli
from test_scheduler import Harness, utc

from cronflow import control
from cronflow.checks import check_flows
from cronflow.config import Settings

# pick >> [small, large]; large >> after_large; [small, after_large] >> join (and join_all).
# The branch reads its choice from the run's conf.
SIZES = """
from cronflow import Branch, Flow, Shell

def pick(context):
    return context["conf"]["choice"]

with Flow("sizes", timezone="Europe/Paris"):
    choose = Branch("pick", pick)
    small = Shell("small", "true")
    large = Shell("large", "true")
    after_large = Shell("after_large", "true")
    join = Shell("join", "true", trigger_rule="none_failed_min_one_success")
    join_all = Shell("join_all", "true")
    choose >> [small, large]
    large >> after_large
    [small, after_large] >> join
    [small, after_large] >> join_all
"""

GATED = """
from cronflow import Flow, Shell, ShortCircuit

def has_files(context):
    return context["conf"]["files"]

with Flow("gated", timezone="UTC"):
    gate = ShortCircuit("any_files", has_files)
    load = Shell("load", "true")
    report = Shell("report", "true")
    cleanup = Shell("cleanup", "true", trigger_rule="all_done")
    gate >> load >> report >> cleanup
"""


@pytest.fixture
def make(settings: Settings) -> Callable[[datetime], Harness]:
    return lambda start: Harness(settings, start)


def run_with(h: Harness, flow_id: str, day: int, conf: dict) -> dict[str, dict]:
    """Trigger a run with this conf, let it finish; its task instances by task id."""
    run_id = control.trigger(h.store, h.scheduler.catalog.get(flow_id), utc(2026, 12, day), conf)
    h.settle()
    return {t["task_id"]: t for t in h.store.tis_of_runs([run_id])}


def states_of(tis: dict[str, dict]) -> dict[str, str]:
    return {task_id: ti["state"] for task_id, ti in tis.items()}


def test_a_branch_runs_the_chosen_path_and_skips_the_other(make, write_flow):
    write_flow("sizes", SIZES)
    h: Harness = make(utc(2026, 12, 3, 12))
    tis = run_with(h, "sizes", 1, {"choice": "small"})
    assert states_of(tis) == {
        "pick": "success",
        "small": "success",
        "large": "skipped",
        "after_large": "skipped",  # its trigger rule (all_success) after a skipped upstream
        "join": "success",  # none_failed_min_one_success: the join after a branch
        "join_all": "skipped",  # all_success keeps its meaning: a skipped upstream skips it
    }
    assert tis["large"]["reason"] == "skipped: branch 'pick' chose small"
    assert h.store.run(tis["pick"]["run_id"])["state"] == "success"


def test_a_branch_may_choose_several_paths_or_none(make, write_flow):
    write_flow("sizes", SIZES)
    h: Harness = make(utc(2026, 12, 3, 12))
    both = states_of(run_with(h, "sizes", 1, {"choice": ["small", "large"]}))
    assert set(both.values()) == {"success"}
    none = run_with(h, "sizes", 2, {"choice": None})
    assert states_of(none)["small"] == states_of(none)["large"] == "skipped"
    assert states_of(none)["join"] == "skipped"  # no upstream succeeded
    assert none["small"]["reason"] == "skipped: branch 'pick' chose none"


def test_a_branch_that_names_a_task_not_directly_after_it_fails(make, write_flow):
    write_flow("sizes", SIZES)
    h: Harness = make(utc(2026, 12, 3, 12))
    tis = run_with(h, "sizes", 1, {"choice": "join"})
    assert tis["pick"]["state"] == "failed"
    assert tis["pick"]["reason"] == (
        "branch 'pick' returned 'join': 'join' is not one of its direct downstream tasks "
        "(known: large, small)"
    )
    assert tis["small"]["state"] == tis["large"]["state"] == "upstream_failed"


def test_a_short_circuit_that_returns_false_skips_everything_after_it(make, write_flow):
    write_flow("gated", GATED)
    h: Harness = make(utc(2026, 12, 3, 12))
    stopped = run_with(h, "gated", 1, {"files": []})
    # all of them, even the all_done cleanup: Airflow's ShortCircuitOperator does the same
    assert states_of(stopped) == {
        "any_files": "success",
        "load": "skipped",
        "report": "skipped",
        "cleanup": "skipped",
    }
    assert stopped["cleanup"]["reason"] == "skipped: short-circuit 'any_files' returned False"
    going = run_with(h, "gated", 2, {"files": ["a.csv"]})
    assert set(states_of(going).values()) == {"success"}


def test_replaying_a_branch_follows_its_new_choice(make, write_flow, home):
    choice = home / "choice"
    write_flow(
        "sizes",
        SIZES.replace('context["conf"]["choice"]', f"open({str(choice)!r}).read().split()"),
    )
    choice.write_text("small")
    h: Harness = make(utc(2026, 12, 3, 12))
    first = run_with(h, "sizes", 1, {})
    assert states_of(first)["large"] == "skipped"
    choice.write_text("large")
    ok(home, "replay", "sizes", "--date", "2026-12-01", "--yes")
    h.settle()
    again = {t["task_id"]: t["state"] for t in h.store.tis_of_runs([first["pick"]["run_id"]])}
    assert again["small"] == "skipped" and again["large"] == again["after_large"] == "success"


def test_why_tasks_and_show_say_which_branch_ran(make, write_flow, home):
    write_flow("sizes", SIZES)
    h: Harness = make(utc(2026, 12, 3, 12))
    run_with(h, "sizes", 1, {"choice": "small"})
    run_with(h, "sizes", 2, {"choice": "large"})
    why = ok(home, "why", "sizes", "--date", "2026-12-01", "--task", "large").stdout
    assert "large: finished skipped: skipped: branch 'pick' chose small" in why
    by_task = {r["task"]: r for r in rows(home, "tasks", "sizes", "--date", "2026-12-02")}
    assert by_task["small"]["state"] == "skipped"
    grid = {
        line.split()[0]: line.split()[1:]
        for line in ok(home, "show", "sizes").stdout.splitlines()
        if line.split() and line.split()[0] in ("small", "large", "join_all")
    }
    assert grid["small"][-2:] == ["ok", "skip"]  # oldest run first
    assert grid["large"][-2:] == ["skip", "ok"]


def test_cronflow_test_follows_the_branch(home, write_flow):
    # its own flow id: flow files imported in-process by other tests stay out of its way
    source = SIZES.replace('context["conf"]["choice"]', '"large"').replace('"sizes"', '"sized"')
    write_flow("sized", source)
    result = invoke(home, "test", "sized", "--date", "2026-12-01")
    assert result.exit_code == 0, result.output
    ended = {line.split(":")[0]: line for line in result.stderr.splitlines()}
    assert ended["small"] == "small: skipped: skipped: branch 'pick' chose large"
    assert ended["large"].startswith("large: success")


# --- with the real daemon ------------------------------------------------------------------------
@pytest.mark.slow
def test_the_daemon_follows_a_branch(home, daemon, write_flow):
    write_flow("sizes", SIZES)
    daemon()
    conf = json.dumps({"choice": "large"})
    result = cli(home, "trigger", "sizes", "--date", "2026-12-01", "--conf", conf, "--wait")
    assert result.returncode == 0, result.stderr
    tasks = json.loads(cli(home, "tasks", "sizes", "--json").stdout)
    states = {row["task"]: row["state"] for row in tasks}
    assert states == {
        "pick": "success",
        "small": "skipped",
        "large": "success",
        "after_large": "success",
        "join": "success",
        "join_all": "skipped",
    }


def test_check_notes_an_all_success_join_after_a_branch(tmp_path):
    (tmp_path / "sizes.py").write_text(SIZES)
    report = check_flows(tmp_path, timeout_s=30)
    assert not report.problems
    assert [n for n in report.notes if "branch" in n] == [
        "flow 'sizes': task 'join_all' joins paths of branch 'pick' with trigger_rule "
        "all_success, so it is skipped whenever the branch skips one of them; "
        "trigger_rule='none_failed_min_one_success' runs it after the path taken"
    ]


def test_a_short_circuit_marked_success_by_hand_decides_nothing(make, write_flow, home):
    write_flow("gated", GATED.replace('context["conf"]["files"]', "[]"))
    h: Harness = make(utc(2026, 12, 3, 12))
    run_id = control.trigger(h.store, h.scheduler.catalog.get("gated"), utc(2026, 12, 1), {})
    ok(home, "mark", "gated.any_files", "--date", "2026-12-01", "--state", "success")
    h.settle()
    states = {t["task_id"]: t["state"] for t in h.store.tis_of_runs([run_id])}
    assert states == dict.fromkeys(("any_files", "load", "report", "cleanup"), "success")

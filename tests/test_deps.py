"""Tests for cronflow.deps: task graphs, trigger rules, propagation, run outcome, flow waits."""

from __future__ import annotations

from datetime import UTC, date, datetime
from itertools import pairwise

import pytest

from cronflow.deps import (
    Decision,
    branch_joins,
    branch_skips,
    day_progress,
    decide,
    find_flow_cycle,
    resolve_run,
    run_outcome,
    topological_order,
    upstream_day,
)
from cronflow.errors import FlowDefinitionError
from cronflow.states import RunState, TaskState, TriggerRule

S = TaskState.SUCCESS
F = TaskState.FAILED
UF = TaskState.UPSTREAM_FAILED
K = TaskState.SKIPPED
N = TaskState.NONE
R = TaskState.RUNNING
Q = TaskState.QUEUED
SCH = TaskState.SCHEDULED
RETRY = TaskState.UP_FOR_RETRY
RESCHED = TaskState.UP_FOR_RESCHEDULE

RUN = Decision.RUN
WAIT = Decision.WAIT
SKIP = Decision.SKIP
UPF = Decision.UPSTREAM_FAILED


def cycle_edges(message: str) -> list[tuple[str, str]]:
    """The `x >> y` pairs a cycle message claims, e.g. 'dependency cycle: a >> b >> a'."""
    names = message.split("dependency cycle: ", 1)[1].split(" >> ")
    return list(pairwise(names))


# --- topological_order --------------------------------------------------------------------------


def test_topological_order_puts_every_task_after_its_upstreams() -> None:
    upstreams = {"report": ["load", "check"], "load": ["fetch"], "check": ["fetch"], "fetch": []}
    order = topological_order(upstreams)
    assert sorted(order) == sorted(upstreams)
    for task, ups in upstreams.items():
        for up in ups:
            assert order.index(up) < order.index(task)


def test_topological_order_keeps_declaration_order_of_independent_tasks() -> None:
    assert topological_order({"c": [], "a": [], "b": []}) == ["c", "a", "b"]


def test_topological_order_of_nothing_is_empty() -> None:
    assert topological_order({}) == []


def test_unknown_upstream_names_the_task_and_the_missing_one() -> None:
    with pytest.raises(FlowDefinitionError, match="task 'load' depends on unknown task 'fetsh'"):
        topological_order({"fetch": [], "load": ["fetsh"]})


def test_self_dependency_is_a_cycle() -> None:
    with pytest.raises(FlowDefinitionError, match=r"dependency cycle: a >> a"):
        topological_order({"a": ["a"]})


@pytest.mark.parametrize(
    "upstreams",
    [
        {"a": ["b"], "b": ["a"]},
        # user wrote a >> b >> c >> a
        {"a": ["c"], "b": ["a"], "c": ["b"]},
        # a cycle below an innocent root: root >> x >> y >> z >> x
        {"root": [], "x": ["root", "z"], "y": ["x"], "z": ["y"]},
        # the same, declared in another order
        {"z": ["y"], "y": ["x"], "x": ["root", "z"], "root": []},
    ],
)
def test_cycle_message_names_the_cycle_in_the_order_it_was_written(
    upstreams: dict[str, list[str]],
) -> None:
    with pytest.raises(FlowDefinitionError, match="dependency cycle: ") as caught:
        topological_order(upstreams)
    edges = cycle_edges(str(caught.value))
    assert edges[0][0] == edges[-1][1], "the cycle closes on itself"
    assert "root" not in str(caught.value)
    for before, after in edges:
        # `before >> after` must be a real edge: `before` is an upstream of `after`
        assert before in upstreams[after], f"{before} >> {after} is not in the graph"


# --- decide: every trigger rule against upstream state combinations -----------------------------


@pytest.mark.parametrize(
    ("rule", "upstream_states", "expected"),
    [
        # all_success
        ("all_success", [S, S], RUN),
        ("all_success", [S], RUN),
        ("all_success", [S, R], WAIT),
        ("all_success", [S, N], WAIT),
        ("all_success", [S, Q], WAIT),
        ("all_success", [S, SCH], WAIT),
        ("all_success", [S, RETRY], WAIT),
        ("all_success", [S, RESCHED], WAIT),
        ("all_success", [S, F], UPF),
        ("all_success", [R, F], UPF),  # fails fast, without waiting for the others
        ("all_success", [S, UF], UPF),
        ("all_success", [S, K], SKIP),
        ("all_success", [R, K], SKIP),
        ("all_success", [K, F], UPF),  # a failure wins over a skip
        # all_done
        ("all_done", [S, F], RUN),
        ("all_done", [UF, K], RUN),
        ("all_done", [K, K], RUN),
        ("all_done", [F, F], RUN),
        ("all_done", [S, R], WAIT),
        ("all_done", [F, RETRY], WAIT),
        ("all_done", [F, N], WAIT),
        # all_failed
        ("all_failed", [F, F], RUN),
        ("all_failed", [F, UF], RUN),
        ("all_failed", [F, R], WAIT),
        ("all_failed", [F, RETRY], WAIT),
        ("all_failed", [F, S], SKIP),
        ("all_failed", [R, S], SKIP),
        ("all_failed", [F, K], SKIP),
        # one_success
        ("one_success", [S, R], RUN),
        ("one_success", [F, S], RUN),
        ("one_success", [K, S], RUN),
        ("one_success", [F, R], WAIT),
        ("one_success", [N, N], WAIT),
        ("one_success", [F, F], UPF),
        ("one_success", [F, K], UPF),
        ("one_success", [UF, UF], UPF),
        ("one_success", [K, K], SKIP),
        # one_failed
        ("one_failed", [F, R], RUN),
        ("one_failed", [UF, R], RUN),
        ("one_failed", [S, F], RUN),
        ("one_failed", [S, R], WAIT),
        ("one_failed", [S, RETRY], WAIT),
        ("one_failed", [S, S], SKIP),
        ("one_failed", [S, K], SKIP),
        # none_failed
        ("none_failed", [S, S], RUN),
        ("none_failed", [S, K], RUN),
        ("none_failed", [K, K], RUN),
        ("none_failed", [S, R], WAIT),
        ("none_failed", [K, RETRY], WAIT),
        ("none_failed", [S, F], UPF),
        ("none_failed", [R, UF], UPF),
        # none_failed_min_one_success: the join after a branch
        ("none_failed_min_one_success", [S, K], RUN),
        ("none_failed_min_one_success", [S, S], RUN),
        ("none_failed_min_one_success", [K, K], SKIP),
        ("none_failed_min_one_success", [K, R], WAIT),
        ("none_failed_min_one_success", [S, F], UPF),
        ("none_failed_min_one_success", [K, UF], UPF),
    ],
)
def test_decide(rule: str, upstream_states: list[TaskState], expected: Decision) -> None:
    assert decide(rule, upstream_states) is expected
    assert decide(TriggerRule(rule), upstream_states) is expected


@pytest.mark.parametrize("rule", [r.value for r in TriggerRule])
def test_a_task_without_upstreams_runs_whatever_its_rule(rule: str) -> None:
    assert decide(rule, []) is RUN


@pytest.mark.parametrize("rule", [r.value for r in TriggerRule])
def test_every_rule_waits_while_all_upstreams_are_running(rule: str) -> None:
    assert decide(rule, [R, R]) is WAIT


def test_decide_rejects_an_unknown_rule() -> None:
    with pytest.raises(ValueError, match="all_sucess"):
        decide("all_sucess", [S])


# --- resolve_run --------------------------------------------------------------------------------


def chain(*ids: str, rule: str = "all_success") -> dict[str, tuple[list[str], str]]:
    return {t: ([ids[i - 1]] if i else [], rule) for i, t in enumerate(ids)}


def test_a_failure_reaches_every_leaf_in_one_pass() -> None:
    # fetch >> [clean, check]; clean >> load >> report; check >> report; fetch >> archive
    tasks = {
        "fetch": ([], "all_success"),
        "clean": (["fetch"], "all_success"),
        "check": (["fetch"], "all_success"),
        "load": (["clean"], "all_success"),
        "report": (["load", "check"], "all_success"),
        "archive": (["fetch"], "all_success"),
    }
    decisions = resolve_run(tasks, {"fetch": F})
    assert decisions == {t: UPF for t in tasks if t != "fetch"}


def test_failure_propagation_does_not_depend_on_declaration_order() -> None:
    tasks = dict(reversed(chain("a", "b", "c", "d").items()))
    assert resolve_run(tasks, {"a": F}) == {"b": UPF, "c": UPF, "d": UPF}


def test_skipped_propagates_under_all_success() -> None:
    decisions = resolve_run(chain("a", "b", "c"), {"a": K})
    assert decisions == {"b": SKIP, "c": SKIP}


def test_skip_then_failure_downstream_of_a_join() -> None:
    # a skipped, x failed, both feed j (all_success): the failure wins, and reaches j's child
    tasks = {
        "a": ([], "all_success"),
        "x": ([], "all_success"),
        "j": (["a", "x"], "all_success"),
        "leaf": (["j"], "all_success"),
    }
    assert resolve_run(tasks, {"a": K, "x": F}) == {"j": UPF, "leaf": UPF}


def test_all_done_cleanup_runs_after_a_failure() -> None:
    tasks = {
        "fetch": ([], "all_success"),
        "load": (["fetch"], "all_success"),
        "cleanup": (["load"], "all_done"),
        "after_cleanup": (["cleanup"], "all_success"),
    }
    decisions = resolve_run(tasks, {"fetch": F})
    # load cannot run, which finishes it, so cleanup may run now; its child waits for it
    assert decisions == {"load": UPF, "cleanup": RUN, "after_cleanup": WAIT}


def test_one_failed_alert_runs_on_a_failure_and_is_skipped_without_one() -> None:
    tasks = {
        "a": ([], "all_success"),
        "b": (["a"], "all_success"),
        "alert": (["a", "b"], "one_failed"),
    }
    assert resolve_run(tasks, {"a": F}) == {"b": UPF, "alert": RUN}
    assert resolve_run(tasks, {"a": S, "b": S}) == {"alert": SKIP}


def test_none_failed_join_after_a_skipped_branch_runs() -> None:
    tasks = {
        "branch_a": ([], "all_success"),
        "branch_b": ([], "all_success"),
        "join": (["branch_a", "branch_b"], "none_failed"),
    }
    assert resolve_run(tasks, {"branch_a": S, "branch_b": K}) == {"join": RUN}


def test_resolve_run_only_decides_tasks_in_state_none() -> None:
    tasks = chain("a", "b", "c")
    states = {"a": S, "b": R, "c": N}
    assert resolve_run(tasks, states) == {"c": WAIT}
    assert resolve_run(tasks, {"a": S, "b": S, "c": S}) == {}


def test_resolve_run_treats_missing_states_as_none() -> None:
    assert resolve_run(chain("a", "b"), {}) == {"a": RUN, "b": WAIT}


def test_resolve_run_waits_while_an_upstream_retries() -> None:
    assert resolve_run(chain("a", "b", "c"), {"a": RETRY}) == {"b": WAIT, "c": WAIT}


def test_resolve_run_does_not_change_the_given_states() -> None:
    states = {"a": F}
    resolve_run(chain("a", "b"), states)
    assert states == {"a": F}


def test_resolve_run_rejects_a_cycle() -> None:
    with pytest.raises(FlowDefinitionError, match="dependency cycle"):
        resolve_run({"a": (["b"], "all_success"), "b": (["a"], "all_success")}, {})


# --- run_outcome --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        ([S, S], RunState.SUCCESS),
        ([S, K], RunState.SUCCESS),
        ([K, K], RunState.SUCCESS),
        ([S, F], RunState.FAILED),
        ([S, UF], RunState.FAILED),
        # a cleanup that succeeded after a failure does not make the run green
        ([F, UF, S], RunState.FAILED),
        ([S, R], None),
        ([F, N], None),
        ([F, RETRY], None),
        ([S, Q], None),
        ([S, RESCHED], None),
    ],
)
def test_run_outcome(states: list[TaskState], expected: RunState | None) -> None:
    assert run_outcome(states) == expected


def test_run_outcome_accepts_any_iterable() -> None:
    assert run_outcome(s for s in [S, S]) is RunState.SUCCESS


# --- flows waiting for flows --------------------------------------------------------------------


def test_same_day_flow_cycle_is_found() -> None:
    cycle = find_flow_cycle({"ingest": [("report", 0)], "report": [("ingest", 0)]})
    assert cycle is not None
    assert set(cycle) == {"ingest", "report"}
    assert cycle[0] == cycle[-1]


def test_longer_same_day_flow_cycle_is_found_and_innocent_flows_are_left_out() -> None:
    waits = {
        "a": [("b", 0)],
        "b": [("c", 0)],
        "c": [("a", 0)],
        "d": [("a", 0)],
        "e": [],
    }
    cycle = find_flow_cycle(waits)
    assert cycle is not None
    assert set(cycle) == {"a", "b", "c"}
    # each flow in the list waits for the next one
    for flow, upstream in pairwise(cycle):
        assert (upstream, 0) in waits[flow]


def test_a_flow_waiting_for_itself_the_same_day_is_a_cycle() -> None:
    assert find_flow_cycle({"a": [("a", 0)]}) == ["a", "a"]


@pytest.mark.parametrize(
    "waits",
    [
        {"ingest": [("report", -1)], "report": [("ingest", 0)]},
        {"ingest": [("report", -1)], "report": [("ingest", -1)]},
        {"a": [("a", -1)]},  # today's run waits for yesterday's run of the same flow
        {"a": [("b", 0)], "b": [("c", 0)], "c": [("a", -7)]},
        {"a": [("b", 0)], "b": []},
        {},
    ],
)
def test_waits_on_earlier_days_do_not_make_a_cycle(
    waits: dict[str, list[tuple[str, int]]],
) -> None:
    assert find_flow_cycle(waits) is None


def test_waits_on_unknown_flows_are_ignored_by_the_cycle_check() -> None:
    assert find_flow_cycle({"a": [("ghost", 0)]}) is None


@pytest.mark.parametrize(
    ("day", "offset", "expected"),
    [
        (date(2024, 3, 1), 0, date(2024, 3, 1)),
        (date(2024, 3, 1), -1, date(2024, 2, 29)),
        (date(2024, 1, 1), -1, date(2023, 12, 31)),
        (date(2024, 3, 8), -7, date(2024, 3, 1)),
    ],
)
def test_upstream_day(day: date, offset: int, expected: date) -> None:
    assert upstream_day(day, offset) == expected


# --- day_progress: a wait for another flow's whole day ------------------------------------------
def _at(hour: int, minute: int = 0) -> str:
    """A logical date as the store keeps it."""
    return datetime(2026, 12, 2, hour, minute, tzinfo=UTC).isoformat()


EVERY_10_MIN = [_at(h, m) for h in range(24) for m in range(0, 60, 10)]  # 144 fire times


def test_one_success_of_144_is_not_a_complete_day() -> None:
    progress = day_progress(EVERY_10_MIN, [(_at(0), "success")])
    assert not progress.done
    assert (progress.expected, progress.succeeded, len(progress.missing)) == (144, 1, 143)
    assert progress.missing[0] == _at(0, 10)


def test_the_day_is_done_when_every_fire_time_has_a_successful_run() -> None:
    runs = [(at, RunState.SUCCESS) for at in EVERY_10_MIN]
    assert day_progress(EVERY_10_MIN, runs).done
    runs[50] = (EVERY_10_MIN[50], "running")
    progress = day_progress(EVERY_10_MIN, runs)
    assert not progress.done and progress.unfinished == ((EVERY_10_MIN[50], "running"),)


def test_failed_runs_are_listed_and_hold_the_wait_back() -> None:
    fires = [_at(10, 40), _at(23, 50)]
    progress = day_progress(fires, [(_at(10, 40), "failed"), (_at(23, 50), "success")])
    assert not progress.done and progress.failed == (_at(10, 40),) and not progress.missing


def test_manual_runs_count_but_cannot_replace_a_missing_fire_time() -> None:
    fires = [_at(6), _at(18)]
    manual = (_at(12, 3), "success")
    progress = day_progress(fires, [(_at(6), "success"), manual])
    assert not progress.done and progress.missing == (_at(18),)
    assert (progress.total, progress.extra) == (3, 1)
    assert day_progress(fires, [(_at(6), "success"), (_at(18), "success"), manual]).done
    failed_manual = (_at(12, 3), "failed")
    both = [(_at(6), "success"), (_at(18), "success"), failed_manual]
    assert not day_progress(fires, both).done


def test_a_day_without_fire_times_has_nothing_to_wait_for_unless_it_has_runs() -> None:
    assert day_progress([], []).done and day_progress([], []).nothing_to_wait_for
    running = day_progress([], [(_at(9), "running")])
    assert not running.done and not running.nothing_to_wait_for
    assert day_progress([], [(_at(9), "success")]).done


def test_a_flow_without_schedule_needs_a_successful_run_that_day() -> None:
    assert not day_progress([], [], scheduled=False).done
    assert not day_progress([], [], scheduled=False).nothing_to_wait_for
    assert day_progress([], [(_at(9), "success")], scheduled=False).done
    assert not day_progress([], [(_at(9), "success"), (_at(10), "queued")], scheduled=False).done


def test_day_progress_rejects_an_unknown_state() -> None:
    with pytest.raises(ValueError, match="sucess"):
        day_progress([_at(1)], [(_at(1), "sucess")])


# --- branches -----------------------------------------------------------------------------------
def test_branch_skips_the_direct_downstream_not_chosen() -> None:
    downstream = {"pick": ["small", "large"], "small": ["join"], "large": ["join"], "join": []}
    assert branch_skips(downstream, {"pick": ["small"]}) == {
        "large": "skipped: branch 'pick' chose small"
    }
    assert branch_skips(downstream, {"pick": []}) == {
        "small": "skipped: branch 'pick' chose none",
        "large": "skipped: branch 'pick' chose none",
    }


def test_a_short_circuit_skips_everything_downstream() -> None:
    downstream = {"gate": ["a"], "a": ["b", "c"], "b": ["c"], "c": []}
    reason = "skipped: short-circuit 'gate' returned False"
    assert branch_skips(downstream, {}, ["gate"]) == {"a": reason, "b": reason, "c": reason}


def test_after_a_branch_the_join_follows_its_trigger_rule() -> None:
    # pick >> [small, large] >> join: the join is skipped under all_success (as in Airflow),
    # runs under none_failed_min_one_success
    downstream = {"pick": ["small", "large"], "small": ["join"], "large": ["join"], "join": []}
    skips = branch_skips(downstream, {"pick": ["small"]})
    for rule, at_once, after in [
        ("all_success", SKIP, None),  # skipped as soon as one upstream is
        ("none_failed_min_one_success", WAIT, RUN),
    ]:
        tasks = {
            "pick": ([], "all_success"),
            "small": (["pick"], "all_success"),
            "large": (["pick"], "all_success"),
            "join": (["small", "large"], rule),
        }
        decided = resolve_run(tasks, {"pick": S}, skips=skips)
        assert decided == {"small": RUN, "large": SKIP, "join": at_once}
        if after is not None:
            states = {"pick": S, "small": S, "large": K}
            assert resolve_run(tasks, states, skips=skips) == {"join": after}


def test_branch_joins_finds_all_success_tasks_after_two_paths() -> None:
    tasks = {
        "pick": ([], "all_success"),
        "a": (["pick"], "all_success"),
        "b": (["pick"], "all_success"),
        "after_b": (["b"], "all_success"),
        "join": (["a", "after_b"], "all_success"),
        "ok_join": (["a", "after_b"], "none_failed_min_one_success"),
        "end": (["ok_join"], "all_success"),  # after the join: one input, no note
    }
    assert branch_joins(tasks, ["pick"]) == [("pick", "join")]
    assert branch_joins(tasks, []) == []

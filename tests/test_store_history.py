"""What the daemon and `status`/`top` read must not grow with history: on a store whose
statistics (ANALYZE) say that nearly every task instance has finished, the queries for active
task instances, active runs and the latest failures go through their partial indexes (no scan
of the table, no sort of it), and return exactly the rows a plain scan would."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from cronflow.states import RunState, TaskState
from cronflow.store import Store

ACTIVE = [
    TaskState.SCHEDULED,
    TaskState.QUEUED,
    TaskState.RUNNING,
    TaskState.UP_FOR_RETRY,
    TaskState.UP_FOR_RESCHEDULE,
]
RUNS = 400
TASKS = 10


def seed(store: Store) -> None:
    """400 daily runs of 10 tasks, all finished (a failure now and then), then the newest run
    running with one task in each active state; ANALYZE, as `PRAGMA optimize` would."""
    conn = store.conn
    conn.execute("BEGIN")
    for run_id in range(1, RUNS + 1):
        day = f"{2000 + run_id // 336}-{1 + run_id // 28 % 12:02d}-{1 + run_id % 28:02d}T01:00:00+00:00"
        last = run_id == RUNS
        conn.execute(
            """INSERT INTO runs (run_id, flow_id, logical_date, run_type, state,
               data_interval_start, data_interval_end, created_at) VALUES (?,?,?,?,?,?,?,?)""",
            [run_id, "f", day, "scheduled", "running" if last else "success", day, day, day],
        )
        for t in range(TASKS):
            if last:
                state = ACTIVE[t] if t < len(ACTIVE) else TaskState.NONE
            else:
                state = TaskState.FAILED if (run_id + t) % 37 == 0 else TaskState.SUCCESS
            end = f"{day[:11]}{t:02d}:00:00+00:00"
            conn.execute(
                """INSERT INTO task_instances (run_id, task_id, flow_id, logical_date, state,
                   max_tries, pool, priority, end_at, log_path) VALUES (?,?,?,?,?,?,?,?,?,?)""",
                [run_id, f"t{t}", "f", day, state.value, 1, "default", 1, end, f"/l/{run_id}/{t}"],
            )
    conn.execute("COMMIT")
    conn.execute("ANALYZE")


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "cronflow.db")
    seed(store)
    return store


def plans(store: Store, call) -> tuple[object, list[str]]:
    """Call a store method; its result, and the query plan of each statement it ran."""
    statements: list[str] = []
    store.conn.set_trace_callback(statements.append)
    try:
        result = call()
    finally:
        store.conn.set_trace_callback(None)
    checker = sqlite3.connect(store.path)
    try:
        found = []
        for sql in statements:
            if not sql.lstrip().upper().startswith("SELECT"):
                continue
            # the trace shows each statement with its values bound in
            rows = checker.execute(f"EXPLAIN QUERY PLAN {sql}").fetchall()
            found.append(" | ".join(row[3] for row in rows))
    finally:
        checker.close()
    return result, found


def no_scan(plan: str, table: str) -> bool:
    """Neither a scan of the table (a scan of a partial index, in order, is fine) nor a sort."""
    return re.search(f"SCAN {table}(?! USING)", plan) is None and "TEMP B-TREE" not in plan


def test_active_task_instances_are_read_through_their_index(store):
    tis, found = plans(store, lambda: store.tis_in_states(ACTIVE))
    assert sorted(ti["state"] for ti in tis) == sorted(s.value for s in ACTIVE)
    assert found and all("tis_active" in p and no_scan(p, "task_instances") for p in found)


def test_a_subset_of_active_states_still_uses_the_index(store):
    tis, found = plans(store, lambda: store.tis_in_states([TaskState.QUEUED, TaskState.RUNNING]))
    assert sorted(ti["task_id"] for ti in tis) == ["t1", "t2"]
    assert found and all("tis_active" in p for p in found)


def test_finished_states_are_answered_too(store):
    """A state outside the partial index is still answered, by the table."""
    tis = store.tis_in_states([TaskState.FAILED])
    expected = store.conn.execute(
        "SELECT count(*) FROM task_instances NOT INDEXED WHERE state = 'failed'"
    ).fetchone()[0]
    assert len(tis) == expected > 0


def test_active_runs_are_read_through_their_index(store):
    runs, found = plans(store, lambda: store.runs_in_states([RunState.QUEUED, RunState.RUNNING]))
    assert [r["run_id"] for r in runs] == [RUNS]
    # (sorted after: only the active runs)
    assert found and all("runs_active" in p and "SCAN runs" not in p for p in found)
    counts, found = plans(store, store.active_run_counts)
    assert counts == {"f": 1}
    assert found and all("runs_active" in p for p in found)


def test_latest_failures_come_from_their_index_in_order(store):
    failures, found = plans(store, lambda: store.recent_task_failures(5))
    everything = store.conn.execute(
        """SELECT run_id, task_id FROM task_instances NOT INDEXED WHERE state = 'failed'
           ORDER BY end_at DESC LIMIT 5"""
    ).fetchall()
    assert [(f["run_id"], f["task_id"]) for f in failures] == [tuple(r) for r in everything]
    assert found and all("tis_failed_by_end" in p and no_scan(p, "task_instances") for p in found)


def test_active_log_paths_come_from_the_index(store):
    paths, found = plans(store, store.active_log_paths)
    assert paths == {f"/l/{RUNS}/1", f"/l/{RUNS}/2"}
    assert found and all("tis_active" in p for p in found)


def test_a_task_instance_leaving_the_active_states_leaves_the_index(store):
    assert store.update_ti(RUNS, "t2", expect_state=TaskState.RUNNING, state=TaskState.SUCCESS)
    assert sorted(ti["task_id"] for ti in store.tis_in_states(ACTIVE)) == ["t0", "t1", "t3", "t4"]

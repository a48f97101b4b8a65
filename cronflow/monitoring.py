"""Figures for monitoring (the web view's /metrics and /healthz), as plain data.

Every figure comes from a bounded query: runs and task instances counted while they wait or run,
and of what ended (their counts, durations, start latencies) only within the last WINDOW, so a
history of a million task instances is never walked. The web view turns these
figures into Prometheus' text format; nothing here knows about Prometheus.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cronflow.catalog import Catalog
from cronflow.config import Settings
from cronflow.states import TaskState
from cronflow.store import Store
from cronflow.timeparse import from_iso

WINDOW = timedelta(hours=24)  # durations, latencies and ended task instances: the last day
WAITING_STATES = (TaskState.SCHEDULED, TaskState.QUEUED)  # ready, waiting for a slot


@dataclass(frozen=True)
class DaemonHealth:
    """Whether the daemon runs, and how old its last heartbeat is."""

    running: bool
    pid: int | None
    started_at: str | None
    heartbeat_at: str | None
    heartbeat_age_s: float | None


@dataclass(frozen=True)
class Figures:
    daemon: DaemonHealth
    flows: int
    paused_flows: int
    broken_files: int
    unfinished_runs: dict[tuple[str, str], int]  # (flow, state) -> queued or running now
    ended_runs: dict[tuple[str, str], int]  # (flow, state) -> finished within WINDOW
    unfinished_tis: dict[tuple[str, str], int]  # (flow, state) -> waiting or running now
    ended_tis: dict[tuple[str, str], int]  # (flow, state) -> finished within WINDOW
    durations_s: dict[str, list[float]]  # flow -> durations of its tasks ended within WINDOW
    start_latencies_s: dict[str, list[float]]  # flow -> scheduled runs started within WINDOW
    pools: dict[str, dict[str, int]] = field(default_factory=dict)  # pool -> slots/running/waiting


def daemon_health(store: Store, daemon_pid: int | None, now: datetime) -> DaemonHealth:
    """The daemon as the store and its lock say: a heartbeat is only meaningful while it runs."""
    record = store.daemon_record() if daemon_pid is not None else None
    beat = from_iso(record["heartbeat_at"]) if record else None
    return DaemonHealth(
        running=daemon_pid is not None,
        pid=daemon_pid,
        started_at=record["started_at"] if record else None,
        heartbeat_at=record["heartbeat_at"] if record else None,
        heartbeat_age_s=round((now - beat).total_seconds(), 3) if beat else None,
    )


def pool_usage(settings: Settings, unfinished: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """pool -> its slots (from cronflow.toml; -1 when not configured), tasks running in it and
    tasks ready but waiting for a slot. `unfinished` rows carry pool, state and a count n."""
    pools: dict[str, dict[str, int]] = {
        name: {"slots": slots, "running": 0, "waiting": 0} for name, slots in settings.pools.items()
    }
    for row in unfinished:
        usage = pools.setdefault(row["pool"], {"slots": -1, "running": 0, "waiting": 0})
        if row["state"] == TaskState.RUNNING:
            usage["running"] += row["n"]
        elif row["state"] in WAITING_STATES:
            usage["waiting"] += row["n"]
    return dict(sorted(pools.items()))


def figures(
    settings: Settings, store: Store, cat: Catalog, daemon_pid: int | None, now: datetime
) -> Figures:
    since = now - WINDOW
    unfinished_rows = store.unfinished_ti_counts()
    unfinished: dict[tuple[str, str], int] = defaultdict(int)
    for row in unfinished_rows:
        unfinished[row["flow_id"], row["state"]] += row["n"]
    ended: dict[tuple[str, str], int] = defaultdict(int)
    durations: dict[str, list[float]] = defaultdict(list)
    for row in store.tis_ended_since(since):
        ended[row["flow_id"], row["state"]] += 1
        if row["duration_s"] is not None:
            durations[row["flow_id"]].append(float(row["duration_s"]))
    latencies: dict[str, list[float]] = defaultdict(list)
    for row in store.scheduled_runs_started_since(since):
        fired, started = from_iso(row["logical_date"]), from_iso(row["started_at"])
        if fired is not None and started is not None:
            latencies[row["flow_id"]].append(max(0.0, (started - fired).total_seconds()))
    paused = sum(bool(r["paused"]) for r in store.flow_states() if r["flow_id"] in cat.flows)
    return Figures(
        daemon=daemon_health(store, daemon_pid, now),
        flows=len(cat.flows),
        paused_flows=paused,
        broken_files=len(cat.errors),
        unfinished_runs={(r["flow_id"], r["state"]): r["n"] for r in store.unfinished_run_counts()},
        ended_runs={(r["flow_id"], r["state"]): r["n"] for r in store.runs_ended_since(since)},
        unfinished_tis=dict(unfinished),
        ended_tis=dict(ended),
        durations_s=dict(durations),
        start_latencies_s=dict(latencies),
        pools=pool_usage(settings, unfinished_rows),
    )

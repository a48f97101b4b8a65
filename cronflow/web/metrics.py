"""/metrics in Prometheus' text format (prometheus-client) and /healthz.

The figures are computed at each scrape by cronflow.monitoring (bounded queries) and handed to
prometheus-client as metric families of a collector made for that scrape, so the process keeps
no state between scrapes and the numbers are always the store's.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from cronflow import monitoring
from cronflow.web.backend import Context
from cronflow.web.site import web

DURATION_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 24 * 3600.0)
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)
HEALTHY_HEARTBEAT_S = 60.0  # the daemon beats every few seconds; a minute means it is stuck


class _Figures:
    """A collector over one scrape's figures."""

    def __init__(self, figures: monitoring.Figures) -> None:
        self.figures = figures

    def collect(self) -> Iterator[Metric]:
        f = self.figures
        window = f"within the last {int(monitoring.WINDOW.total_seconds() // 3600)} h"
        yield _gauge(
            "cronflow_daemon_up", "1 if the daemon runs on this home", [((), int(f.daemon.running))]
        )
        age = f.daemon.heartbeat_age_s
        yield _gauge(
            "cronflow_daemon_heartbeat_age_seconds",
            "seconds since the daemon's last heartbeat (absent when it is not running)",
            [((), age)] if age is not None else [],
        )
        yield _gauge("cronflow_flows", "flows loaded", [((), f.flows)])
        yield _gauge("cronflow_flows_paused", "flows paused", [((), f.paused_flows)])
        yield _gauge(
            "cronflow_broken_flow_files", "flow files that fail to load", [((), f.broken_files)]
        )
        yield _gauge(
            "cronflow_runs",
            "runs queued or running now, by flow and state",
            list(f.unfinished_runs.items()),
            ["flow", "state"],
        )
        yield _gauge(
            "cronflow_runs_ended",
            f"runs of the last days' logical dates that ended {window}, by flow and state",
            list(f.ended_runs.items()),
            ["flow", "state"],
        )
        yield _gauge(
            "cronflow_task_instances",
            "task instances waiting or running now, by flow and state",
            list(f.unfinished_tis.items()),
            ["flow", "state"],
        )
        yield _gauge(
            "cronflow_task_instances_ended",
            f"task instances that ended {window}, by flow and state",
            list(f.ended_tis.items()),
            ["flow", "state"],
        )
        yield _histogram(
            "cronflow_task_duration_seconds",
            f"durations of the tries that ended {window}, by flow",
            f.durations_s,
            DURATION_BUCKETS,
        )
        yield _histogram(
            "cronflow_run_start_latency_seconds",
            f"fire time to start of the scheduled runs that started {window}, by flow",
            f.start_latencies_s,
            LATENCY_BUCKETS,
        )
        for key, help_text in (
            ("waiting", "tasks ready but waiting for a slot, by pool"),
            ("running", "tasks running, by pool"),
            ("slots", "slots of each pool in cronflow.toml (-1: not configured)"),
        ):
            yield _gauge(
                f"cronflow_pool_{'tasks_' + key if key != 'slots' else 'slots'}",
                help_text,
                [((pool,), usage[key]) for pool, usage in f.pools.items()],
                ["pool"],
            )


def _gauge(
    name: str, help_text: str, values: list[tuple[Any, Any]], labels: list[str] | None = None
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, help_text, labels=labels or [])
    for key, value in values:
        family.add_metric(list(key), value)
    return family


def _histogram(
    name: str, help_text: str, samples: dict[str, list[float]], buckets: tuple[float, ...]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, help_text, labels=["flow"])
    for flow_id, values in sorted(samples.items()):
        ordered = sorted(values)
        cumulative = [(_bound(b), bisect.bisect_right(ordered, b)) for b in buckets]
        cumulative.append(("+Inf", len(ordered)))
        family.add_metric([flow_id], cumulative, sum(ordered))
    return family


def _bound(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)


async def metrics(request: Request) -> Response:
    def build(ctx: Context) -> bytes:
        figures = monitoring.figures(ctx.settings, ctx.store, ctx.cat, ctx.daemon_pid, ctx.now)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Figures(figures))
        return generate_latest(registry)

    body = await web(request).backend.run(build)
    return Response(body, media_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})


async def healthz(request: Request) -> Response:
    """200 while the store answers; with ?daemon=1, also only while the daemon beats."""

    def build(ctx: Context) -> monitoring.DaemonHealth:
        return monitoring.daemon_health(ctx.store, ctx.daemon_pid, ctx.now)

    health = await web(request).backend.run(build)
    beating = health.running and (health.heartbeat_age_s or 0.0) <= HEALTHY_HEARTBEAT_S
    ok = beating or request.query_params.get("daemon") != "1"
    body = {
        "ok": ok,
        "store": "ok",
        "daemon": "running" if beating else ("stale heartbeat" if health.running else "down"),
        "heartbeat_age_s": health.heartbeat_age_s,
    }
    return JSONResponse(body, status_code=200 if ok else 503, headers={"Cache-Control": "no-store"})

"""The Celery executor's scenario of bench/run.py: 1,000 short tasks over two local workers
(tasks/s) and a chain of 50 remote tasks (handoff latency), beside the same flows on the local
executor, measured in the same run. Needs redis-server and the celery extra; nothing is
asserted, as in the rest of bench/.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import statistics
import subprocess
from pathlib import Path

from run import (
    CORES,
    PY,
    Daemon,
    make_home,
    percentile,
    run_done,
    stamps,
    trigger,
    ts,
    wait,
    write_flow,
)

BROKER_ENV = "CRONFLOW_BENCH_BROKER_URL"
WIDE = """
from cronflow import Flow, Shell
with Flow("wide"):
    for i in range(1000):
        Shell(f"t{i}", "true"QUEUE)
"""
CHAIN = """
from cronflow import Flow, Shell
with Flow("chain"):
    previous = None
    for i in range(50):
        task = Shell(f"t{i:02d}", "true"QUEUE)
        if previous:
            previous >> task
        previous = task
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _measure(home: Path, flows: list[str]) -> dict[str, float]:
    daemon = Daemon(home)
    try:
        figures: dict[str, float] = {}
        for flow in flows:
            run_id, _ = trigger(home, flow)
            wait(lambda run_id=run_id: run_done(home, run_id), 900, flow)
            rows = stamps(home, run_id)
            if flow == "wide":
                span = max(ts(r["end_at"]) for r in rows) - min(ts(r["start_at"]) for r in rows)
                figures["tasks_per_s"] = len(rows) / span
            else:
                rows = sorted(rows, key=lambda r: r["task_id"])
                gaps = [
                    (ts(b["start_at"]) - ts(a["end_at"])) * 1000
                    for a, b in itertools.pairwise(rows)
                ]
                figures["handoff_median_ms"] = statistics.median(gaps)
                figures["handoff_p99_ms"] = percentile(gaps, 99)
                # start_at of a remote try is its publication, end_at when its outcome was
                # recorded: a whole step, worker included, is the chain's span over its length
                span = ts(rows[-1]["end_at"]) - ts(rows[0]["start_at"])
                figures["step_ms"] = span / len(rows) * 1000
        return figures
    finally:
        daemon.stop()


def scenario(root: Path) -> list[dict]:
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        return [
            {
                "name": "celery farm (skipped: no redis-server)",
                "figure": None,
                "unit": "",
                "floor": None,
                "ratio": None,
                "target": "-",
                "ok": None,
            }
        ]
    port = _free_port()
    data = root / "redis"
    data.mkdir()
    redis = subprocess.Popen(
        [
            redis_server,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(data),
            "--appendonly",
            "yes",
            "--save",
            "",
        ],
        stdout=subprocess.DEVNULL,
    )
    os.environ[BROKER_ENV] = f"redis://127.0.0.1:{port}/0"
    config = f'[celery]\nbroker_url_env = "{BROKER_ENV}"\n'
    workers = []
    try:
        local = make_home(root, "farm-local", f"parallelism = {CORES}")
        farm = make_home(
            root, "farm-celery", f'executor = "celery"\nparallelism = {CORES}\n' + config
        )
        for home, queue in ((local, ""), (farm, ', queue="A"')):
            write_flow(home, "wide", WIDE.replace("QUEUE", queue))
            write_flow(home, "chain", CHAIN.replace("QUEUE", queue))
        for name in ("w1", "w2"):
            home = make_home(root, f"farm-{name}", config)
            for flow in (farm / "flows").iterdir():
                (home / "flows" / flow.name).write_bytes(flow.read_bytes())
            out = open(home / "worker.out", "wb")  # noqa: SIM115
            argv = [PY, "-m", "cronflow", "--home", str(home), "worker", "--queues", "A"]
            argv += ["--name", name, "--concurrency", str(CORES)]
            workers.append(subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT))
            wait(lambda home=home: b"ready" in (home / "worker.out").read_bytes(), 60, name)
        remote = _measure(farm, ["wide", "chain"])
        here = _measure(local, ["wide", "chain"])
    finally:
        for worker in workers:
            worker.terminate()
            worker.wait(60)
        redis.terminate()
        redis.wait(30)
    return [
        {
            "name": "celery: 1,000 true tasks over 2 workers",
            "figure": remote["tasks_per_s"],
            "unit": "tasks/s",
            "floor": here["tasks_per_s"],
            "ratio": remote["tasks_per_s"] / here["tasks_per_s"],
            "target": "(local executor as floor)",
            "ok": None,
        },
        {
            "name": "celery: chain of 50, median handoff",
            "figure": remote["handoff_median_ms"],
            "unit": "ms",
            "floor": here["handoff_median_ms"],
            "ratio": remote["handoff_median_ms"] / max(here["handoff_median_ms"], 1e-9),
            "target": "(local executor as floor)",
            "ok": None,
        },
        {
            "name": "celery: chain of 50, one step (handoff + true)",
            "figure": remote["step_ms"],
            "unit": "ms",
            "floor": here["step_ms"],
            "ratio": remote["step_ms"] / max(here["step_ms"], 1e-9),
            "target": "(local executor as floor)",
            "ok": None,
        },
        {
            "name": "celery: chain of 50, p99 handoff",
            "figure": remote["handoff_p99_ms"],
            "unit": "ms",
            "floor": here["handoff_p99_ms"],
            "ratio": remote["handoff_p99_ms"] / max(here["handoff_p99_ms"], 1e-9),
            "target": "(local executor as floor)",
            "ok": None,
        },
    ]

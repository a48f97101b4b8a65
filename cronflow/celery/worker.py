"""`cronflow worker`: a Celery worker that runs cronflow attempts from the queues it serves.

Each start of a worker is an incarnation (a random id). Before it takes any message it kills
what an earlier start of the same name left running in this home (its processes carry the
worker's marker prefix: a worker killed with -9 leaves its tasks' process groups behind), then
it beats: every few seconds it writes its name, incarnation, host, queues, slots, busy count and
version to the broker. The scheduler publishes only to queues a live worker serves and counts an
attempt as lost when the incarnation that claimed it stops beating (or a new one replaced it).

Attempts run in Celery's thread pool (`--concurrency` threads), each one a process group of its
own started by the local executor (cronflow.celery.runner); Celery only carries the messages.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

import cronflow
from cronflow.celery.broker import (
    BEAT_TTL_S,
    BROKER_ERRORS,
    TASK_NAME,
    Keys,
    broker_url,
    connect,
    make_app,
)
from cronflow.celery.runner import WorkerIdentity, run_message
from cronflow.config import Settings
from cronflow.errors import ConfigError
from cronflow.executor import keep_inherited_descriptors, kill_processes, marked_processes

log = logging.getLogger("cronflow.celery.worker")


def beat_interval(settings: Settings) -> float:
    """A quarter of the timeout: three beats may be missed before a worker counts as lost."""
    return max(0.2, min(5.0, settings.celery.heartbeat_timeout_s / 4))


def run_worker(
    settings: Settings, queues: Sequence[str], concurrency: int, name: str | None = None
) -> None:
    """Serve `queues` until stopped (SIGTERM/SIGINT: Celery's warm shutdown)."""
    if not queues:
        raise ConfigError("cronflow worker needs --queues (e.g. --queues gpu,station)")
    keep_inherited_descriptors()
    os.chdir(settings.home)  # where tasks without cwd= run, as under the scheduler's daemon
    url = broker_url(settings.celery)
    host = socket.gethostname()
    identity = WorkerIdentity(
        name=name or host,
        incarnation=uuid.uuid4().hex,
        host=host,
        settings=settings,
        client=connect(url),
        keys=Keys(settings.celery.namespace),
    )
    killed = kill_leftovers(identity)
    identity.make_template()
    app = make_app(url, settings.celery.namespace)

    @app.task(name=TASK_NAME, acks_late=True)  # type: ignore[untyped-decorator]
    def attempt(payload: dict[str, Any]) -> None:
        run_message(identity, payload)

    stop = threading.Event()
    beats = threading.Thread(
        target=_beat, args=(identity, list(queues), concurrency, stop), daemon=True
    )
    beats.start()
    log.info(
        "event=worker_started name=%s incarnation=%s queues=%s concurrency=%s leftovers_killed=%s",
        identity.name,
        identity.incarnation,
        ",".join(queues),
        concurrency,
        killed,
    )
    try:
        app.Worker(
            hostname=f"{identity.name}@{host}",
            queues=list(queues),
            concurrency=concurrency,
            pool="threads",
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
            loglevel="INFO",
        ).start()
    finally:
        stop.set()
        beats.join(timeout=5)
        _forget(identity)


def kill_leftovers(worker: WorkerIdentity) -> int:
    """Kill every process an earlier start of this worker left (its marker prefix), and remove
    its scratch homes; return how many processes were killed."""
    pids = list(marked_processes(worker.marker_prefix, prefix=True))
    kill_processes(pids)
    if worker.scratch_dir.exists():
        for entry in worker.scratch_dir.iterdir():
            shutil.rmtree(entry, ignore_errors=True)
    if pids:
        log.warning("event=worker_leftovers_killed name=%s processes=%s", worker.name, len(pids))
    return len(pids)


def _beat(
    worker: WorkerIdentity, queues: list[str], concurrency: int, stop: threading.Event
) -> None:
    interval = beat_interval(worker.settings)
    started_at = time.time()
    while not stop.is_set():
        now = time.time()
        record = {
            "incarnation": worker.incarnation,
            "host": worker.host,
            "queues": queues,
            "slots": concurrency,
            "busy": worker.busy,
            "version": cronflow.__version__,
            "started_at": started_at,
            "beat_at": now,
        }
        try:
            pipe = worker.client.pipeline()
            pipe.hset(worker.keys.workers, worker.name, json.dumps(record))
            pipe.set(worker.keys.beat(worker.incarnation), repr(now), ex=BEAT_TTL_S)
            pipe.execute()
        except BROKER_ERRORS as exc:
            log.warning("event=heartbeat_failed name=%s error=%r", worker.name, str(exc))
        stop.wait(interval)


def _forget(worker: WorkerIdentity) -> None:
    """A clean stop: the scheduler stops sending to this worker at once."""
    with contextlib.suppress(*BROKER_ERRORS):
        worker.client.hdel(worker.keys.workers, worker.name)

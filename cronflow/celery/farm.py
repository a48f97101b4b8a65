"""What `status`, `top` and `doctor` say about a Celery farm: the broker (reachable, append-only
persistence on), each worker (queues, busy/slots, version, last seen, live or not) and the
queues tasks wait on that no live worker serves (how many tasks, since when).

Read only from Redis, with short timeouts: a broker outage is something to report, never a
reason for a command to hang.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

from cronflow.celery.broker import BROKER_ERRORS, Keys, broker_url, connect, describe, text
from cronflow.config import Settings
from cronflow.errors import ConfigError


def farm_status(
    settings: Settings, waits: dict[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """{"broker": {...}, "workers": [...], "unserved_queues": [...]} for a home whose executor
    is "celery"; `waits` is cronflow.overview.queue_waits (queue -> tasks, since)."""
    conf = settings.celery
    try:
        url = broker_url(conf)
    except ConfigError as exc:
        missing = {"url": None, "reachable": False, "error": str(exc)}
        return {"broker": missing, "workers": [], "unserved_queues": []}
    broker: dict[str, Any] = {"url": describe(url), "reachable": False, "error": None}
    workers: list[dict[str, Any]] = []
    client = connect(url)
    try:
        broker["append_only"] = client.config_get("appendonly").get("appendonly") == "yes"
        raw = client.hgetall(Keys(conf.namespace).workers)
        broker["reachable"] = True
    except BROKER_ERRORS as exc:
        broker["error"] = str(exc) or type(exc).__name__
        return {"broker": broker, "workers": workers, "unserved_queues": []}
    finally:
        client.close()
    now = time.time()
    for name, value in sorted(raw.items()):
        record = json.loads(value)
        age_s = now - record["beat_at"]
        workers.append(
            {
                "name": text(name),
                "host": record["host"],
                "queues": record["queues"],
                "busy": record["busy"],
                "slots": record["slots"],
                "version": record["version"],
                "last_seen_s": round(age_s, 1),
                "live": age_s <= conf.heartbeat_timeout_s,
            }
        )
    served = {q for w in workers if w["live"] for q in w["queues"]}
    unserved = [
        {
            "queue": queue,
            "tasks": wait["tasks"],
            "waiting_since": wait["since"],
            "waited_s": _waited_s(wait["since"], now),
        }
        for queue, wait in sorted((waits or {}).items())
        if queue not in served
    ]
    return {"broker": broker, "workers": workers, "unserved_queues": unserved}


def _waited_s(since: str | None, now: float) -> float | None:
    if since is None:
        return None
    return round(max(0.0, now - datetime.fromisoformat(since).timestamp()), 1)

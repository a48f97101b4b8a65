"""What `status` and `doctor` say about a Celery farm: the broker (reachable, append-only
persistence on) and each worker (queues, busy/slots, version, last seen, live or not).

Read only from Redis, with short timeouts: a broker outage is something to report, never a
reason for a command to hang.
"""

from __future__ import annotations

import json
import time
from typing import Any

from cronflow.celery.broker import BROKER_ERRORS, Keys, broker_url, connect, describe, text
from cronflow.config import Settings
from cronflow.errors import ConfigError


def farm_status(settings: Settings) -> dict[str, Any]:
    """{"broker": {...}, "workers": [...]} for a home whose executor is "celery"."""
    conf = settings.celery
    try:
        url = broker_url(conf)
    except ConfigError as exc:
        return {"broker": {"url": None, "reachable": False, "error": str(exc)}, "workers": []}
    broker: dict[str, Any] = {"url": describe(url), "reachable": False, "error": None}
    workers: list[dict[str, Any]] = []
    client = connect(url)
    try:
        broker["append_only"] = client.config_get("appendonly").get("appendonly") == "yes"
        raw = client.hgetall(Keys(conf.namespace).workers)
        broker["reachable"] = True
    except BROKER_ERRORS as exc:
        broker["error"] = str(exc) or type(exc).__name__
        return {"broker": broker, "workers": workers}
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
    return {"broker": broker, "workers": workers}


def status_lines(farm: dict[str, Any]) -> list[str]:
    """The farm in a few lines of text, for `cronflow status`."""
    broker = farm["broker"]
    if not broker["reachable"]:
        return [f"broker: {broker['url'] or '?'} UNREACHABLE: {broker['error']}"]
    persistence = "append-only on" if broker.get("append_only") else "append-only OFF"
    lines = [f"broker: {broker['url']} reachable, {persistence}"]
    if not farm["workers"]:
        lines.append("workers: none")
    for w in farm["workers"]:
        state = "live" if w["live"] else "SILENT"
        lines.append(
            f"worker {w['name']} on {w['host']}: {state}, queues {','.join(w['queues'])}, "
            f"{w['busy']}/{w['slots']} busy, cronflow {w['version']}, "
            f"last seen {w['last_seen_s']:g}s ago"
        )
    return lines

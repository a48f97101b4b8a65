"""The Celery app and the Redis client of a home, and the name of every Redis key.

One place knows how cronflow talks to the broker, for the scheduler and the workers alike:

- a Celery message per attempt (task TASK_NAME on the attempt's queue), acknowledged late, so
  a worker killed mid-task leaves it to be delivered again; a worker drops a message whose
  attempt is claimed already, which makes that harmless;
- plain Redis keys beside it, under the home's namespace: the workers' heartbeats, each
  attempt's claim, log chunks, outcome and kill request (see Keys).

Celery's own results backend and remote control are not used: the outcome of an attempt is a
Redis key that only the scheduler reads and deletes, and a kill is a key the worker polls
(revoke(terminate=True) would not reach the task's children).
"""

from __future__ import annotations

import logging
from typing import Any

import kombu.exceptions
import redis
from celery import Celery

from cronflow.config import CelerySettings
from cronflow.errors import ConfigError

log = logging.getLogger("cronflow.celery")

TASK_NAME = "cronflow.attempt"
CLAIM_TTL_S = 7 * 86_400  # a claim outlives any redelivery of its message
KILL_TTL_S = 86_400
BEAT_TTL_S = 86_400  # how long the last heartbeat of a dead worker stays known
# What a broker outage raises, from Redis itself or from Celery's producer.
BROKER_ERRORS: tuple[type[BaseException], ...] = (
    redis.RedisError,
    kombu.exceptions.OperationalError,
    ConnectionError,
    TimeoutError,
)


class Keys:
    """The Redis keys of one namespace (several homes may share one Redis)."""

    def __init__(self, namespace: str) -> None:
        self.ns = namespace

    @property
    def workers(self) -> str:
        """Hash: worker name -> JSON (incarnation, host, queues, slots, busy, version, beat_at)."""
        return f"{self.ns}:workers"

    def beat(self, incarnation: str) -> str:
        """The last heartbeat (epoch seconds) of one start of a worker."""
        return f"{self.ns}:beat:{incarnation}"

    def claim(self, attempt_id: str) -> str:
        """ "name|incarnation|host" of the worker that runs it, or "cancelled" (set once: NX)."""
        return f"{self.ns}:attempt:{attempt_id}:claim"

    def log(self, attempt_id: str) -> str:
        """List of log chunks the worker sends and the scheduler appends to the try's log."""
        return f"{self.ns}:attempt:{attempt_id}:log"

    def result(self, attempt_id: str) -> str:
        """JSON outcome, set once the log is complete."""
        return f"{self.ns}:attempt:{attempt_id}:result"

    def kill(self, attempt_id: str) -> str:
        """Why the scheduler wants it stopped; the worker kills its process group."""
        return f"{self.ns}:attempt:{attempt_id}:kill"


def broker_url(settings: CelerySettings) -> str:
    """The broker's URL, or ConfigError saying where it should have come from."""
    url = settings.resolved_broker_url()
    if not url:
        where = (
            f"the environment variable {settings.broker_url_env} is not set"
            if settings.broker_url_env
            else "[celery] has neither broker_url_env nor broker_url"
        )
        raise ConfigError(f"no Celery broker URL: {where}")
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("the Celery broker must be Redis (a redis://, rediss:// or unix:// URL)")
    return url


def connect(url: str) -> redis.Redis:
    """A Redis client that fails fast: a broker outage must not freeze the scheduler's tick."""
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)


def make_app(url: str, namespace: str) -> Celery:
    app = Celery("cronflow", broker=url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,  # a message comes back if its worker dies; the claim drops it
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,  # a busy worker leaves the next message to a free one
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=3,
        broker_transport_options={"visibility_timeout": 3600, "global_keyprefix": f"{namespace}:"},
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        task_default_queue="default",
        worker_pool="threads",
        enable_utc=True,
    )
    return app


def publish(app: Celery, queue: str, payload: dict[str, Any]) -> None:
    """Put one attempt's message on its queue (BROKER_ERRORS if the broker is unreachable)."""
    app.send_task(
        TASK_NAME,
        args=[payload],
        queue=queue,
        ignore_result=True,
        retry=True,
        retry_policy={"max_retries": 1, "interval_start": 0.2, "interval_step": 0.5},
    )


def text(value: bytes | str) -> str:
    """A Redis reply as text (the clients here return bytes)."""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def describe(url: str) -> str:
    """The broker's address without its password, for messages."""
    scheme, sep, rest = url.partition("://")
    host = rest.rsplit("@", 1)[-1]
    return f"{scheme}{sep}{host}"

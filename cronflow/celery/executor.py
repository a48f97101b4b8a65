"""CeleryExecutor: the scheduler's executor when `executor = "celery"` (cronflow.toml).

It has the LocalExecutor's interface and holds one: an attempt without a remote queue (no
`queue=`, `queue="local"`, TriggerFlow, FlowSensor) runs here as always. An attempt with a queue
gets a unique id, a record beside its log (so a restarted daemon adopts it) and one Celery
message on its queue; a worker claims it, runs it and sends its log and outcome back through
Redis (cronflow.celery.runner). Every tick, `reap` appends the log chunks that came to the try's
log file and settles the attempts whose outcome came: the task's reason and its XComs are
written to the store here, in the scheduler's process, with compare-and-set writes, before the
scheduler records the end. Workers never open the store.

What the scheduler decides alone, from what is in Redis:
- `hold`: a task waits (scheduled, with that reason) while no live worker serves its queue, the
  broker is unreachable or the queue's cap ([celery.queues]) is reached;
- an attempt nobody took within queued_timeout_s is cancelled (claimed by the scheduler, so a
  late worker drops it) and given back: it is dispatched again without counting a try;
- an attempt whose worker stopped beating for heartbeat_timeout_s, or was restarted since it
  claimed it, is lost: a counted failure, retried like any other;
- `kill` (mark, replay, timeout, shutdown) sets a kill request the worker acts on within a
  fraction of a second, or cancels the attempt if no worker has it yet.

A broker outage stops publishing and polling (the tasks wait, saying why) but nothing else; no
worker counts as lost until the broker has been reachable for a whole heartbeat timeout again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cronflow
from cronflow.celery.broker import (
    BROKER_ERRORS,
    CLAIM_TTL_S,
    KILL_TTL_S,
    Keys,
    broker_url,
    connect,
    describe,
    make_app,
    publish,
    text,
)
from cronflow.celery.runner import file_digest
from cronflow.config import Settings
from cronflow.executor import KILL_GRACE_S, Attempt, Finished, LocalExecutor
from cronflow.mapping import base_id
from cronflow.states import TaskState
from cronflow.store import Store
from cronflow.timeparse import iso

log = logging.getLogger("cronflow.celery")

POLL_S = 0.1  # how often remote attempts are polled while any runs (one Redis round trip)
WORKERS_TTL_S = 1.0  # how long the list of live workers is trusted
REMOTE_ROOM = 1_000_000  # remote attempts take no local slot: queues and caps limit them
CANCELLED = b"cancelled"


@dataclass
class _Remote:
    attempt: Attempt
    attempt_id: str
    queue: str
    published_at: float  # epoch seconds
    claimed_by: str | None = None  # "name|incarnation|host"
    kill_reason: str | None = None
    kill_sent: bool = False
    kill_at: float | None = None  # monotonic: when the kill was asked


def record_path(log_path: Path) -> Path:
    """Where the scheduler notes an attempt it sent to a worker (removed once settled)."""
    return log_path.with_name(f"{log_path.stem}.celery.json")


class CeleryExecutor:
    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.conf = settings.celery
        self.store = store
        self.local = LocalExecutor(settings.parallelism, settings.warm, settings.task_umask)
        url = broker_url(self.conf)
        self.broker = describe(url)
        self.client = connect(url)
        self.app = make_app(url, self.conf.namespace)
        self.keys = Keys(self.conf.namespace)
        self._remote: dict[tuple[int, str], _Remote] = {}
        self._workers: dict[str, dict[str, Any]] = {}
        self._workers_at = float("-inf")
        self.broker_error: str | None = None
        self._reachable_since = time.monotonic()
        self._digests: dict[str, tuple[tuple[int, int], str]] = {}
        self._spec_cache: tuple[str, dict[str, Any]] | None = None

    # --- the executor interface ---------------------------------------------------------------
    @property
    def free_slots(self) -> int:
        return self.local.free_slots + REMOTE_ROOM

    def running(self) -> list[Attempt]:
        return self.local.running() + [r.attempt for r in self._remote.values()]

    def pool_usage(self) -> dict[str, int]:
        usage = self.local.pool_usage()
        for r in self._remote.values():
            usage[r.attempt.pool] = usage.get(r.attempt.pool, 0) + 1
        return usage

    def hold(self, queue: str | None) -> str | None:
        if queue is None:
            return "" if self.local.free_slots <= 0 else None
        self._refresh_workers()
        if self.broker_error is not None:
            return f"waiting: the broker {self.broker} is unreachable ({self.broker_error})"
        if not any(queue in w["queues"] for w in self.live_workers()):
            return f"waiting: no live worker serves queue '{queue}'"
        cap = self.conf.queues.get(queue)
        if cap is not None and sum(r.queue == queue for r in self._remote.values()) >= cap:
            return ""
        return None

    def start(self, attempt: Attempt) -> int:
        """Run it here, or publish it to its queue (then 0: no process of ours runs it)."""
        if attempt.queue is None:
            return self.local.start(attempt)
        remote = _Remote(attempt, uuid.uuid4().hex, attempt.queue, time.time())
        payload = self._payload(attempt, remote.attempt_id)
        self._supersede(record_path(attempt.log_path))
        _write_record(record_path(attempt.log_path), remote)
        try:
            publish(self.app, remote.queue, payload)
        except BROKER_ERRORS as exc:
            with contextlib.suppress(OSError):
                record_path(attempt.log_path).unlink()
            self._broker_down(exc)
            raise OSError(f"the broker {self.broker} is unreachable: {exc}") from None
        self._remote[attempt.key] = remote
        log.info(
            "event=attempt_published attempt=%s queue=%s run=%s task=%s try=%s",
            remote.attempt_id,
            remote.queue,
            attempt.run_id,
            attempt.task_id,
            attempt.try_number,
        )
        return 0

    def _supersede(self, path: Path) -> None:
        """A record of this very try already exists: a daemon published it and died before it
        recorded the start, so the try starts again. The old attempt must not run too: it is
        cancelled if no worker took it, else its worker is told to kill it."""
        try:
            old = json.loads(path.read_text())["attempt_id"]
        except (OSError, ValueError, KeyError):
            return
        if not self.client.set(self.keys.claim(old), CANCELLED, nx=True, ex=CLAIM_TTL_S):
            reason = "stopped: its start was not recorded before the daemon stopped"
            self.client.set(self.keys.kill(old), reason, ex=KILL_TTL_S)
        log.warning("event=attempt_superseded attempt=%s", old)

    def adopt(self, attempt: Attempt, pid: int | None, elapsed_s: float) -> None:
        """An attempt an earlier daemon started: a remote one is followed through Redis again
        (its record says which), a local one by the local executor."""
        path = record_path(attempt.log_path)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            self.local.adopt(attempt, pid, elapsed_s)
            return
        attempt.queue = data["queue"]
        self._remote[attempt.key] = _Remote(
            attempt, data["attempt_id"], data["queue"], data["published_at"]
        )
        log.info("event=attempt_adopted attempt=%s queue=%s", data["attempt_id"], data["queue"])

    def kill(self, key: tuple[int, str], reason: str) -> None:
        r = self._remote.get(key)
        if r is None:
            self.local.kill(key, reason)
        elif r.kill_reason is None:
            r.kill_reason = reason
            r.kill_at = time.monotonic()

    def enforce(self) -> None:
        self.local.enforce()

    def next_deadline(self) -> float | None:
        local = self.local.next_deadline()
        if not self._remote:
            return local
        poll = time.monotonic() + POLL_S
        return poll if local is None else min(local, poll)

    def reap(self) -> list[Finished]:
        finished = self.local.reap()
        if self._remote:
            try:
                finished += self._poll()
            except BROKER_ERRORS as exc:
                self._broker_down(exc)
            finished += self._unconfirmed_kills()
        return finished

    def _unconfirmed_kills(self) -> list[Finished]:
        """Kills no worker confirmed in time (the broker is down, the worker silent): the try
        ends here as asked, so a stopping daemon never waits forever; the kill request stays
        in Redis for the worker, and a restarted worker kills what it left anyway."""
        patience_s = 2 * KILL_GRACE_S + self.conf.heartbeat_timeout_s
        ended = []
        for key, r in list(self._remote.items()):
            if r.kill_at is not None and time.monotonic() - r.kill_at > patience_s:
                del self._remote[key]
                with contextlib.suppress(*BROKER_ERRORS):
                    self.client.set(
                        self.keys.kill(r.attempt_id), r.kill_reason or "", ex=KILL_TTL_S
                    )
                with contextlib.suppress(OSError):
                    record_path(r.attempt.log_path).unlink()
                log.error("event=kill_unconfirmed attempt=%s", r.attempt_id)
                reason = f"{r.kill_reason}; its worker did not confirm the kill"
                ended.append(Finished(r.attempt, None, 0.0, reason))
        return ended

    # --- workers ------------------------------------------------------------------------------
    def live_workers(self) -> list[dict[str, Any]]:
        """The workers whose last beat is within the heartbeat timeout (as last read)."""
        now = time.time()
        return [
            w for w in self._workers.values() if now - w["beat_at"] <= self.conf.heartbeat_timeout_s
        ]

    def _refresh_workers(self, force: bool = False) -> None:
        if not force and time.monotonic() - self._workers_at < WORKERS_TTL_S:
            return
        self._workers_at = time.monotonic()
        try:
            raw = self.client.hgetall(self.keys.workers)
        except BROKER_ERRORS as exc:
            self._broker_down(exc)
            return
        self._broker_up()
        self._workers = {text(k): {"name": text(k), **json.loads(v)} for k, v in raw.items()}

    def _broker_down(self, exc: BaseException) -> None:
        if self.broker_error is None:
            log.error("event=broker_unreachable broker=%s error=%r", self.broker, str(exc))
        self.broker_error = str(exc) or type(exc).__name__

    def _broker_up(self) -> None:
        if self.broker_error is not None:
            log.warning("event=broker_reachable broker=%s", self.broker)
            self.broker_error = None
            self._reachable_since = time.monotonic()

    # --- following remote attempts ------------------------------------------------------------
    def _poll(self) -> list[Finished]:
        """One round trip for every remote attempt: its claim, outcome and new log chunks."""
        self._refresh_workers(force=True)
        if self.broker_error is not None:
            return []
        remotes = list(self._remote.values())
        pipe = self.client.pipeline(transaction=True)
        for r in remotes:
            pipe.get(self.keys.claim(r.attempt_id))
            pipe.get(self.keys.result(r.attempt_id))
            pipe.lrange(self.keys.log(r.attempt_id), 0, -1)
            pipe.delete(self.keys.log(r.attempt_id))
        replies = pipe.execute()
        finished = []
        for i, r in enumerate(remotes):
            claim, result, chunks = replies[4 * i], replies[4 * i + 1], replies[4 * i + 2]
            _append(r.attempt.log_path, chunks)
            ended = self._follow(r, claim, result)
            if ended is not None:
                del self._remote[r.attempt.key]
                self._settled(r)
                finished.append(ended)
        return finished

    def _follow(self, r: _Remote, claim: bytes | None, result: bytes | None) -> Finished | None:
        if result is not None:
            return self._outcome(r, json.loads(result))
        if claim is None:
            return self._unclaimed(r)
        if claim == CANCELLED:  # cancelled by an earlier daemon that died before it settled
            return Finished(r.attempt, None, 0.0, r.kill_reason, given_back=r.kill_reason is None)
        if r.claimed_by is None:
            r.claimed_by = text(claim)
            self._record_host(r)
        if r.kill_reason is not None and not r.kill_sent:
            self.client.set(self.keys.kill(r.attempt_id), r.kill_reason, ex=KILL_TTL_S)
            r.kill_sent = True
        return self._lost(r)

    def _unclaimed(self, r: _Remote) -> Finished | None:
        """Not taken by any worker yet: cancel it if it must stop or waited too long."""
        waited_s = time.time() - r.published_at
        if r.kill_reason is None and waited_s < self.conf.queued_timeout_s:
            return None
        if not self.client.set(self.keys.claim(r.attempt_id), CANCELLED, nx=True, ex=CLAIM_TTL_S):
            return None  # a worker took it just now: followed from the next poll
        if r.kill_reason is not None:
            return Finished(r.attempt, None, 0.0, r.kill_reason)
        reason = (
            f"not taken from queue '{r.queue}' within {self.conf.queued_timeout_s:g}s; "
            "dispatched again"
        )
        return Finished(r.attempt, None, waited_s, reason, given_back=True)

    def _lost(self, r: _Remote) -> Finished | None:
        """Lost if the worker that claimed it stopped beating, or a new start replaced it."""
        assert r.claimed_by is not None
        name, incarnation, _host = ([*r.claimed_by.split("|"), "", ""])[:3]
        current = self._workers.get(name)
        replaced = current is None or current["incarnation"] != incarnation
        if not replaced and (
            time.time() - current["beat_at"] <= self.conf.heartbeat_timeout_s  # type: ignore[index]
            or time.monotonic() - self._reachable_since < self.conf.heartbeat_timeout_s
        ):
            return None
        raw = self.client.get(self.keys.beat(incarnation))
        last = float(raw) if raw else None
        # gone from the list (a clean stop, or never listed): lost once its beats are old
        recent = last is not None and time.time() - last <= self.conf.heartbeat_timeout_s
        if replaced and current is None and recent:
            return None
        at = iso(datetime.fromtimestamp(last, UTC)) if last else "an unknown time"
        reason = f"lost: worker {name} stopped reporting at {at}"
        self.client.set(self.keys.kill(r.attempt_id), reason, ex=KILL_TTL_S)
        log.error("event=attempt_lost attempt=%s worker=%s", r.attempt_id, name)
        return Finished(r.attempt, None, time.time() - r.published_at, reason)

    def _outcome(self, r: _Remote, result: dict[str, Any]) -> Finished:
        """The worker's outcome; its reason and XComs go to the store first (if the try is
        still the running one), where the scheduler reads them as a local worker's."""
        a = r.attempt
        ti = self.store.ti(a.run_id, a.task_id)
        current = (
            ti is not None
            and ti["state"] == TaskState.RUNNING
            and ti["try_number"] == (a.try_number)
        )
        if current and result.get("task_reason"):
            self.store.update_ti(
                a.run_id,
                a.task_id,
                expect_state=TaskState.RUNNING,
                expect_try=a.try_number,
                reason=result["task_reason"],
            )
        if current:
            for key, value in result.get("xcoms", []):
                self.store.push_xcom(a.run_id, a.task_id, key, value)
        finished = Finished(
            a, result["exit_code"], float(result["duration_s"]), r.kill_reason or result["reason"]
        )
        finished.stopped, finished.kept = result.get("stopped", 0), result.get("kept", 0)
        finished.notes = tuple(result.get("notes", ()))
        return finished

    def _record_host(self, r: _Remote) -> None:
        """The try's host column names the worker that runs it."""
        assert r.claimed_by is not None
        name, _incarnation, host = ([*r.claimed_by.split("|"), "", ""])[:3]
        a = r.attempt
        self.store.update_ti(
            a.run_id,
            a.task_id,
            expect_state=TaskState.RUNNING,
            expect_try=a.try_number,
            host=f"{name} ({host})" if host and host != name else name,
        )

    def _settled(self, r: _Remote) -> None:
        """Its keys go (the claim stays, so a message delivered again is dropped)."""
        with contextlib.suppress(*BROKER_ERRORS):
            self.client.delete(self.keys.result(r.attempt_id), self.keys.log(r.attempt_id))
        with contextlib.suppress(OSError):
            record_path(r.attempt.log_path).unlink()

    # --- the message ----------------------------------------------------------------------------
    def _payload(self, attempt: Attempt, attempt_id: str) -> dict[str, Any]:
        """What a worker needs to run the attempt in a scratch home: the flow as the scheduler
        knows it, the run, the run's XComs, and what proves the worker has the same code."""
        run = self.store.run(attempt.run_id)
        flow = self.store.flow(run["flow_id"])
        spec = self._spec(flow["spec"])
        path = Path(flow["path"])
        base = base_id(attempt.task_id)  # a mapped instance: its task's spec
        task = next(t for t in spec["tasks"] if t["task_id"] == base)
        # only this task: a worker needs no other (XComs are sent apart), and a flow of a
        # thousand tasks would otherwise travel whole with each of them
        spec = {**spec, "tasks": [{**task, "upstream": []}]}
        try:
            relative = str(path.relative_to(self.settings.flows_dir))
        except ValueError:
            relative = path.name
        xcoms = [
            [row["task_id"], row["key"], json.loads(row["value"])]
            for row in self.store.xcom_rows([attempt.run_id])
        ]
        return {
            "attempt_id": attempt_id,
            "version": cronflow.__version__,
            "flow_id": run["flow_id"],
            "task_id": attempt.task_id,
            "try_number": attempt.try_number,
            "timeout_s": attempt.timeout_s,
            "flow_file": relative,
            "flow_sha256": self._digest(path),
            "spec": spec,
            "run": {
                k: run[k]
                for k in (
                    "logical_date",
                    "run_type",
                    "data_interval_start",
                    "data_interval_end",
                    "conf",
                )
            },
            "xcoms": xcoms,
            "xcom_max_bytes": self.settings.xcom_max_bytes,
            "queue": task.get("queue"),
        }

    def _spec(self, text: str) -> dict[str, Any]:
        """A flow's spec, parsed again only when it changed."""
        if self._spec_cache is None or self._spec_cache[0] != text:
            self._spec_cache = (text, json.loads(text))
        return self._spec_cache[1]

    def _digest(self, path: Path) -> str:
        """The flow file's sha256, computed again only when the file changed."""
        info = os.stat(path)
        signature = (info.st_mtime_ns, info.st_size)
        known = self._digests.get(str(path))
        if known is None or known[0] != signature:
            known = (signature, file_digest(path))
            self._digests[str(path)] = known
        return known[1]


def _write_record(path: Path, r: _Remote) -> None:
    record = {"attempt_id": r.attempt_id, "queue": r.queue, "published_at": r.published_at}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, path)


def _append(log_path: Path, chunks: list[bytes]) -> None:
    if not chunks:
        return
    try:
        with open(log_path, "ab") as handle:
            handle.write(b"".join(chunks))
    except OSError as exc:
        log.error("event=log_write_failed path=%s error=%r", log_path, str(exc))

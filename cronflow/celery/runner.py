"""One attempt on a worker: claimed once, run like a local attempt, its log and outcome sent home.

The worker never sees the scheduler's store. It runs the attempt in a scratch home of its own
(a directory with a store holding the flow's spec as the scheduler sent it, the run, the task
instance and the run's XComs), so the task's context, rendering, environment, masking and
process handling are exactly the local ones: the same LocalExecutor starts it under its
supervisor in its own session, enforces its timeout and stops its leftovers. Secrets come from
the worker's own environment (CRONFLOW_VAR_*, CRONFLOW_CONN_*), and output is masked here,
before it leaves the worker.

While it runs, new log bytes go to Redis (the scheduler appends them to the try's log file, so
`cronflow logs -f` follows a remote try), and a kill request there stops the process group.
At the end the rest of the log goes first, then the outcome: its exit code, the task's own
reason and the XComs it pushed, which the scheduler records with its compare-and-set writes.

Exactly once: the attempt id is claimed with SET NX before anything runs, so a message that
comes back (a dead worker's, a broker restored from its append-only file) never runs an attempt
twice. Refused, also before anything runs: a cronflow version or a flow file that differs from
the scheduler's (same code everywhere).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import redis

import cronflow
from cronflow.catalog import FlowSpec
from cronflow.celery.broker import BROKER_ERRORS, CLAIM_TTL_S, Keys, text
from cronflow.config import Settings
from cronflow.context import task_context, task_environment
from cronflow.errors import CronflowError
from cronflow.executor import Attempt, Finished, LocalExecutor
from cronflow.logs import write_note
from cronflow.mapping import split_id
from cronflow.ops import launch_for
from cronflow.states import RunType, TaskState
from cronflow.store import Store
from cronflow.timeparse import from_iso

log = logging.getLogger("cronflow.celery.worker")

POLL_S = 0.2  # how often a running attempt's log is sent and its kill request looked for
SEND_RETRY_S = 1.0  # between tries to send the end of a log or an outcome to a broker that is down


@dataclass
class WorkerIdentity:
    """Who runs attempts here: the worker's name, this start of it, its home and broker."""

    name: str
    incarnation: str
    host: str
    settings: Settings
    client: redis.Redis
    keys: Keys
    busy: int = 0
    running: dict[str, str] = field(default_factory=dict)  # attempt id -> marker

    @property
    def claim_value(self) -> str:
        return f"{self.name}|{self.incarnation}|{self.host}"

    @property
    def marker_prefix(self) -> str:
        """The CRONFLOW_ATTEMPT prefix of every attempt this worker name runs in this home:
        what a restarted worker looks for to kill what its dead self left."""
        return f"{self.settings.home}|celery|{self.name}|"

    @property
    def scratch_dir(self) -> Path:
        return self.settings.home / "celery" / self.name

    @property
    def template_db(self) -> Path:
        """An empty, migrated store, copied into each scratch home: migrating a new database
        for every attempt would cost a quarter of a second."""
        return self.scratch_dir / "template.db"

    def make_template(self) -> None:
        self.scratch_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        partial = self.template_db.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        Store(partial).close()
        os.replace(partial, self.template_db)


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_message(worker: WorkerIdentity, payload: dict[str, Any]) -> None:
    """The Celery task's body: claim the attempt, run it, send its outcome home."""
    attempt_id = payload["attempt_id"]
    claimed = worker.client.set(
        worker.keys.claim(attempt_id), worker.claim_value, nx=True, ex=CLAIM_TTL_S
    )
    if not claimed:
        owner = worker.client.get(worker.keys.claim(attempt_id))
        log.warning(
            "event=attempt_dropped attempt=%s claimed_by=%r (a message delivered again)",
            attempt_id,
            text(owner) if owner else None,
        )
        return
    worker.busy += 1
    try:
        result = _AttemptRun(worker, payload).run()
    finally:
        worker.busy -= 1
    _send_until_sent(
        worker, lambda: worker.client.set(worker.keys.result(attempt_id), json.dumps(result))
    )
    log.info(
        "event=attempt_ended attempt=%s task=%s.%s exit_code=%s",
        attempt_id,
        payload["flow_id"],
        payload["task_id"],
        result["exit_code"],
    )


def _send_until_sent(worker: WorkerIdentity, send: Any) -> None:
    """Send something the scheduler must get, however long the broker is away."""
    while True:
        try:
            send()
            return
        except BROKER_ERRORS as exc:
            log.warning("event=broker_unreachable worker=%s error=%r", worker.name, str(exc))
            time.sleep(SEND_RETRY_S)


class _AttemptRun:
    def __init__(self, worker: WorkerIdentity, payload: dict[str, Any]) -> None:
        self.worker = worker
        self.payload = payload
        self.attempt_id: str = payload["attempt_id"]
        self.scratch = worker.scratch_dir / self.attempt_id
        self.log_path = self.scratch / "logs" / f"try-{payload['try_number']}.log"
        self.sent = 0  # bytes of the scratch log sent so far

    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        try:
            return self._run()
        except (CronflowError, OSError) as exc:
            self._note(f"cannot run on worker {self.worker.name}: {exc}")
            self._flush()
            return self._result(None, time.monotonic() - started, reason=f"cannot start: {exc}")
        finally:
            shutil.rmtree(self.scratch, ignore_errors=True)

    def _run(self) -> dict[str, Any]:
        p = self.payload
        refused = self._refusal()
        if refused:
            self._note(refused)
            self._flush()
            return self._result(1, 0.0, reason=refused)
        self.scratch.mkdir(parents=True, mode=0o700)
        shutil.copyfile(self.worker.template_db, self.scratch / "cronflow.db")
        store = Store(self.scratch / "cronflow.db")
        try:
            flow, run, attempt = self._prepare(store)
            executor = LocalExecutor(1, umask=self.worker.settings.task_umask)
            self._note(f"running on worker {self.worker.name} (host {self.worker.host})")
            executor.start(attempt)
            self.worker.running[self.attempt_id] = attempt.marker
            try:
                finished = self._follow(executor, attempt)
            finally:
                self.worker.running.pop(self.attempt_id, None)
            self._flush()
            ti = store.ti(run["run_id"], p["task_id"]) or {}
            xcoms = [
                [row["key"], json.loads(row["value"])]
                for row in store.xcom_rows([run["run_id"]], p["task_id"])
            ]
            return self._result(
                finished.exit_code,
                finished.duration_s,
                reason=finished.reason,
                task_reason=ti.get("reason") if flow.task(p["task_id"]).kind != "shell" else None,
                xcoms=xcoms,
                notes=list(finished.notes),
                stopped=finished.stopped,
                kept=finished.kept,
            )
        finally:
            store.close()

    def _refusal(self) -> str | None:
        """Why this worker must not run the attempt (not the scheduler's code), or None."""
        p, name = self.payload, self.worker.name
        if p["version"] != cronflow.__version__:
            return (
                f"worker {name} runs cronflow {cronflow.__version__}, the scheduler "
                f"{p['version']}: install the same version on both"
            )
        path = self.worker.settings.flows_dir / p["flow_file"]
        try:
            digest = file_digest(path)
        except OSError as exc:
            return f"worker {name} cannot read its copy of the flow file {path}: {exc.strerror}"
        if digest != p["flow_sha256"]:
            return (
                f"the flow file {p['flow_file']} on worker {name} differs from the scheduler's "
                f"(sha256 {digest[:12]} here, {p['flow_sha256'][:12]} there): deploy the same file"
            )
        return None

    def _prepare(self, store: Store) -> tuple[FlowSpec, dict[str, Any], Attempt]:
        """The scratch home's flow, run, task instance and XComs, and the attempt to start."""
        p = self.payload
        path = str(self.worker.settings.flows_dir / p["flow_file"])
        store.save_flow_file(path, (0, 0, 0), None, [p["spec"]])
        flow = FlowSpec.from_spec(p["spec"], path)
        task = flow.task(p["task_id"])
        source = p["run"]
        logical_at = from_iso(source["logical_date"])
        interval = (from_iso(source["data_interval_start"]), from_iso(source["data_interval_end"]))
        run_id = store.create_run(
            flow.flow_id,
            logical_at,
            RunType(source["run_type"]),
            interval,
            flow.raw["tasks"],
            json.loads(source["conf"] or "{}"),
        )
        map_index = split_id(p["task_id"])[1]
        if map_index is not None:  # a mapped instance: its row, as the scheduler has it
            store.expand_ti(run_id, task.task_id, map_index + 1)
        store.update_ti(
            run_id,
            p["task_id"],
            expect_state=TaskState.NONE,
            state=TaskState.RUNNING,
            try_number=p["try_number"],
        )
        for task_id, key, value in p["xcoms"]:
            store.push_xcom(run_id, task_id, key, value)
        (self.scratch / "cronflow.toml").write_text(f"xcom_max_bytes = {p['xcom_max_bytes']}\n")
        run = store.run(run_id)
        context = task_context(flow, task, run, p["try_number"], store, map_index)
        launch = launch_for(task.kind, task.op, context)
        env = {**task_environment(context, str(self.scratch)), **launch.env}
        attempt = Attempt(
            run_id,
            p["task_id"],
            p["try_number"],
            task.pool,
            launch.argv,
            env,
            launch.cwd,
            self.log_path,
            p["timeout_s"],
            f"{self.worker.marker_prefix}{self.attempt_id}",
            stdin=launch.stdin,
            script=launch.script,
            keep_background=launch.keep_background,
        )
        return flow, run, attempt

    def _follow(self, executor: LocalExecutor, attempt: Attempt) -> Finished:
        """Until it ends: enforce its timeout, send its log, act on a kill request."""
        killed = False
        polls = 0
        while True:
            executor.enforce()
            ended = executor.reap()
            if ended:  # a killed one's group got SIGKILL in reap(): nothing of it is left
                return ended[0]
            with contextlib.suppress(*BROKER_ERRORS):
                self._send_new_log()
                if not killed:
                    reason = self.worker.client.get(self.worker.keys.kill(self.attempt_id))
                    if reason is not None:
                        executor.kill(attempt.key, text(reason))
                        killed = True
            # soon after the start at first (short tasks), then every POLL_S
            time.sleep(min(POLL_S, 0.005 * 2**polls))
            polls += 1

    def _send_new_log(self) -> None:
        try:
            with open(self.log_path, "rb") as handle:
                handle.seek(self.sent)
                chunk = handle.read(1 << 20)
        except FileNotFoundError:
            return
        if chunk:
            self.worker.client.rpush(self.worker.keys.log(self.attempt_id), chunk)
            self.sent += len(chunk)

    def _flush(self) -> None:
        """Send all of the log that is left (before the outcome: the log is then complete)."""
        while True:
            before = self.sent
            _send_until_sent(self.worker, self._send_new_log)
            if self.sent == before:
                return

    def _note(self, text: str) -> None:
        tz = ZoneInfo(self.payload["spec"].get("timezone") or "UTC")
        with contextlib.suppress(OSError):
            write_note(self.log_path, datetime.now(UTC), text, tz)

    def _result(
        self,
        exit_code: int | None,
        duration_s: float,
        *,
        reason: str | None = None,
        task_reason: str | None = None,
        xcoms: list[list[Any]] | None = None,
        notes: list[str] | None = None,
        stopped: int = 0,
        kept: int = 0,
    ) -> dict[str, Any]:
        return {
            "attempt_id": self.attempt_id,
            "worker": self.worker.name,
            "host": self.worker.host,
            "exit_code": exit_code,
            "duration_s": duration_s,
            "reason": reason,
            "task_reason": task_reason,
            "xcoms": xcoms or [],
            "notes": notes or [],
            "stopped": stopped,
            "kept": kept,
        }

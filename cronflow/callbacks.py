"""Callbacks and alerts: what runs when a task instance reaches failed, up_for_retry or success
(and when a deadline is missed: cronflow.deadlines, cronflow.deadline_alerts).

A flow file sets them on a task or, for all its tasks, on the flow:

    def page(context): ...   # context: the task's context + event, state, reason, log_path

    with Flow("ingest", on_failure=page, email_on_failure=["ops@example.com"]):
        Shell("load", "load-db", on_retry=note_retry, on_success=None)

The daemon never runs user code and never waits: when a task instance reaches one of those
states and its task has something to do for it, the daemon starts `python -m cronflow.callbacks
EVENT` in its own session (CallbackRunner) and looks at it again only to reap it at a later tick
(and to kill it after TIMEOUT_S). The child sends the failure mail first (through cronflow.toml's
[smtp], with the tail of the task's log attached, secrets masked), then imports the flow file
and calls the callback. Its output is appended to the attempt's log, through the same masking as
the task's; a failed callback is logged there and in the daemon's log, and changes nothing else.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from cronflow.catalog import FlowSpec, TaskSpec
from cronflow.deadline_alerts import EVENT as DEADLINE_EVENT
from cronflow.errors import CronflowError, NotFoundError
from cronflow.executor import base_environment
from cronflow.logs import TaskLogFormatter, open_attempt_log
from cronflow.states import TaskState
from cronflow.timeparse import from_iso

if TYPE_CHECKING:
    from cronflow.masking import Masker

log = logging.getLogger("cronflow.callbacks")

EVENT_FOR_STATE = {
    TaskState.FAILED: "on_failure",
    TaskState.UP_FOR_RETRY: "on_retry",
    TaskState.SUCCESS: "on_success",
}
STATE_FOR_EVENT = {event: state for state, event in EVENT_FOR_STATE.items()}
TIMEOUT_S = 120.0
LOG_TAIL_LINES = 200
LOG_TAIL_BYTES = 64 * 1024


def wanted(task: TaskSpec, event: str) -> bool:
    """Does this task have anything to do for this event?"""
    return event in task.callbacks or (event == "on_failure" and bool(task.email_on_failure))


@dataclass(frozen=True)
class DeadlineAlert:
    """A missed deadline to alert (cronflow.deadlines): the oldest fire time not alerted yet
    of a flow's run ('' task) or of one task, and how many more missed with it."""

    flow_id: str
    task_id: str
    fire_at: str
    more: int = 0
    unchecked_until: str | None = None  # after a long stop: fire times not checked one by one


@dataclass
class _Child:
    process: subprocess.Popen[bytes]
    what: str
    deadline: float


class CallbackRunner:
    """The daemon's side: start callback processes without waiting, reap them at each tick."""

    def __init__(self, home: Path, timeout_s: float = TIMEOUT_S) -> None:
        self.home = home
        self.timeout_s = timeout_s
        self._children: list[_Child] = []

    def start(self, ti: Mapping[str, Any], event: str, reason: str | None) -> None:
        """Start the callbacks of the try `ti` describes, which just ended with `reason`."""
        what = (
            f"flow={ti['flow_id']} task={ti['task_id']} run={ti['run_id']} "
            f"try={ti['try_number']} callback={event}"
        )
        env = {
            "CRONFLOW_RUN_ID": str(ti["run_id"]),
            "CRONFLOW_TASK_ID": ti["task_id"],
            "CRONFLOW_TRY_NUMBER": str(ti["try_number"]),
            # what the callback reports is the try that ended, even if a retry has begun since
            "CRONFLOW_REASON": reason or "",
            "CRONFLOW_LOG_PATH": ti["log_path"] or "",
        }
        try:
            out = (
                open_attempt_log(Path(ti["log_path"]))
                if ti["log_path"]
                else os.open(os.devnull, os.O_WRONLY)
            )
        except OSError as exc:
            log.error("event=callback_failed %s reason=%r", what, f"cannot start: {exc}")
            return
        self._spawn(event, env, out, what)

    def start_deadline(self, alert: DeadlineAlert) -> None:
        """Start the failure alerts of a missed deadline; their output goes to the daemon's."""
        what = (
            f"flow={alert.flow_id} task={alert.task_id or '-'} fire_at={alert.fire_at} "
            f"callback={DEADLINE_EVENT}"
        )
        env = {
            "CRONFLOW_FLOW_ID": alert.flow_id,
            "CRONFLOW_TASK_ID": alert.task_id,
            "CRONFLOW_FIRE_AT": alert.fire_at,
            "CRONFLOW_MISSED_MORE": str(alert.more),
            "CRONFLOW_UNCHECKED_UNTIL": alert.unchecked_until or "",
        }
        self._spawn(DEADLINE_EVENT, env, None, what)

    def _spawn(self, event: str, env: Mapping[str, str], out: int | None, what: str) -> None:
        """`python -m cronflow.callbacks EVENT` in its own session; `out` (closed here) takes
        its output, None: the daemon's."""
        try:
            try:
                process = subprocess.Popen(
                    [sys.executable, "-m", "cronflow.callbacks", event],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env={**base_environment(), "CRONFLOW_HOME": str(self.home), **env},
                    start_new_session=True,
                    close_fds=True,
                )
            finally:
                if out is not None:
                    os.close(out)
        except OSError as exc:
            log.error("event=callback_failed %s reason=%r", what, f"cannot start: {exc}")
            return
        self._children.append(_Child(process, what, time.monotonic() + self.timeout_s))
        log.info("event=callback_started %s pid=%s", what, process.pid)

    def reap(self) -> None:
        """Forget ended callbacks (logging failures); kill those past their time."""
        now = time.monotonic()
        alive = []
        for child in self._children:
            code = child.process.poll()
            if code is None:
                if now >= child.deadline:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(child.process.pid, signal.SIGKILL)
                    log.warning(
                        "event=callback_failed %s reason=%r",
                        child.what,
                        f"killed after {self.timeout_s:g}s",
                    )
                    child.deadline = float("inf")
                alive.append(child)
            elif code != 0:
                log.warning(
                    "event=callback_failed %s exit_code=%s (see the task log)", child.what, code
                )
        self._children = alive

    def running(self) -> int:
        return len(self._children)


# --- the child process -------------------------------------------------------------------------
def run_callbacks(home: Path, ended: Mapping[str, Any], event: str) -> int:
    """Send the failure mail and call the task's callback; 1 if either failed. `ended` is the
    try that ended (run_id, task_id, try_number, reason, log_path)."""
    from cronflow.config import load_settings
    from cronflow.store import Store

    settings = load_settings(home)
    store = Store(settings.db_path)
    run_id, task_id = ended["run_id"], ended["task_id"]
    row_now = store.ti(run_id, task_id)
    if row_now is None:
        raise NotFoundError(f"run {run_id} has no task instance '{task_id}'")
    ti = {**row_now, **ended, "state": STATE_FOR_EVENT[event].value}
    run = store.run(run_id)
    row = store.flow(run["flow_id"])
    flow = FlowSpec.from_spec(json.loads(row["spec"]), row["path"])
    task = flow.task(task_id)
    failures = 0
    if event == "on_failure" and task.email_on_failure:
        try:
            _mail_failure(settings, store, flow, ti, task.email_on_failure)
        except CronflowError as exc:
            log.error("failure mail not sent: %s", exc)
            failures += 1
    if event in task.callbacks:
        try:
            _call(store, flow, task, run, ti, event)
        except CronflowError as exc:
            log.error("%s callback %s failed: %s", event, task.callbacks[event], exc)
            failures += 1
        except Exception:
            log.error(
                "%s callback %s raised:\n%s", event, task.callbacks[event], traceback.format_exc()
            )
            failures += 1
    return 1 if failures else 0


def _call(
    store: Any,
    flow: FlowSpec,
    task: TaskSpec,
    run: dict[str, Any],
    ti: dict[str, Any],
    event: str,
) -> None:
    from cronflow.context import task_context
    from cronflow.loader import import_flows

    live = {f.flow_id: f for f in import_flows(Path(flow.path))}
    if flow.flow_id not in live or task.task_id not in live[flow.flow_id].tasks:
        raise NotFoundError(f"{flow.path} no longer defines {flow.flow_id}.{task.task_id}")
    fn = live[flow.flow_id].tasks[task.task_id].alert(event)
    if fn is None:
        raise NotFoundError(f"{flow.path}: task '{task.task_id}' no longer has {event}")
    context = task_context(flow, task, run, ti["try_number"], store)
    del context["secrets"]  # plumbing (cronflow.templates.INTERNAL_NAMES), not for callbacks
    context.update(
        event=event,
        state=ti["state"],
        reason=ti["reason"],
        log_path=ti["log_path"],
        max_tries=ti["max_tries"],
    )
    fn(context)
    log.info("%s callback %s done", event, task.callbacks[event])


def _mail_failure(
    settings: Any, store: Any, flow: FlowSpec, ti: dict[str, Any], recipients: list[str]
) -> None:
    from cronflow.masking import Masker, secret_values
    from cronflow.ops.mail import MailServer, build_message, send

    if settings.smtp is None:
        raise CronflowError(
            f"task '{ti['task_id']}' has email_on_failure but cronflow.toml has no [smtp] section"
        )
    masker = Masker(secret_values(store, settings))
    server = MailServer.from_settings(settings.smtp)
    logical_at = from_iso(ti["logical_date"])
    local = logical_at.astimezone(flow.tz).isoformat() if logical_at else ti["logical_date"]
    subject = (
        f"[cronflow] {flow.flow_id}.{ti['task_id']} failed for {local} "
        f"(try {ti['try_number']} of {ti['max_tries']})"
    )
    body = "\n".join(
        [
            f"Task {flow.flow_id}.{ti['task_id']} failed.",
            "",
            f"Logical date: {local}",
            f"Try:          {ti['try_number']} of {ti['max_tries']}",
            f"Reason:       {masker.mask(ti['reason'] or '-')}",
            f"Host:         {ti['host'] or '-'}",
            f"Log:          {ti['log_path'] or '-'}",
            "",
            f"The last {LOG_TAIL_LINES} lines of the log are attached.",
            f"See it all with: {logs_command(settings.home, flow.flow_id, ti, local)}",
        ]
    )
    tail = log_tail(Path(ti["log_path"]), masker) if ti["log_path"] else b""
    name = f"{flow.flow_id}.{ti['task_id']}.try-{ti['try_number']}.log.txt"
    message = build_message(server.sender, recipients, subject, body, [(name, tail)])
    send(server, message, recipients)
    log.info("failure mail sent to %s", ", ".join(recipients))


def logs_command(home: Path, flow_id: str, ti: dict[str, Any], local_date: str) -> str:
    """The `cronflow logs` command line that shows this very try, from any directory and as
    any user who may read the home (hence --home)."""
    return shlex.join(
        [
            "cronflow",
            "--home",
            str(home),
            "logs",
            f"{flow_id}.{ti['task_id']}",
            "--date",
            local_date,
            "--try",
            str(ti["try_number"]),
        ]
    )


def log_tail(
    path: Path, masker: Masker, lines: int = LOG_TAIL_LINES, max_bytes: int = LOG_TAIL_BYTES
) -> bytes:
    """The last lines of a log (at most max_bytes), secrets masked."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            data = handle.read()
    except OSError as exc:
        return f"(the log {path} cannot be read: {exc})\n".encode()
    tail = b"\n".join(data.splitlines()[-lines:]) + b"\n"
    return masker.mask(tail.decode(errors="replace")).encode()


def main(argv: list[str]) -> int:
    """`python -m cronflow.callbacks EVENT`, the attempt's identity in the environment."""
    from cronflow.config import load_settings
    from cronflow.masking import Masker, masked_output, secret_values
    from cronflow.store import Store

    env = os.environ
    home = Path(env["CRONFLOW_HOME"])
    event = argv[0]
    try:
        settings = load_settings(home)
        store = Store(settings.db_path)
        masker = Masker(secret_values(store, settings))
        # a deadline alert names its flow; a task's callback names its run
        flow_id = env.get("CRONFLOW_FLOW_ID") or store.run(int(env["CRONFLOW_RUN_ID"]))["flow_id"]
        flow = store.flow(flow_id)
        zone = ZoneInfo((flow or {}).get("timezone") or "UTC")  # for the log lines' stamps
        store.close()
    except CronflowError as exc:
        print(f"cronflow: {event} callbacks: {exc}", file=sys.stderr)
        return 1
    with masked_output(masker):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(TaskLogFormatter("[%(asctime)s] cronflow %(message)s", zone))
        logging.root.handlers[:] = [handler]
        logging.root.setLevel(logging.INFO)
        try:
            if event == DEADLINE_EVENT:
                from cronflow.deadline_alerts import run_deadline_alerts

                alert = {
                    "flow_id": env["CRONFLOW_FLOW_ID"],
                    "task_id": env["CRONFLOW_TASK_ID"],
                    "fire_at": env["CRONFLOW_FIRE_AT"],
                    "more": env.get("CRONFLOW_MISSED_MORE", "0"),
                    "unchecked_until": env.get("CRONFLOW_UNCHECKED_UNTIL", ""),
                }
                return run_deadline_alerts(home, alert)
            ended = {
                "run_id": int(env["CRONFLOW_RUN_ID"]),
                "task_id": env["CRONFLOW_TASK_ID"],
                "try_number": int(env["CRONFLOW_TRY_NUMBER"]),
                "reason": env.get("CRONFLOW_REASON") or None,
                "log_path": env.get("CRONFLOW_LOG_PATH") or None,
            }
            return run_callbacks(home, ended, event)
        except CronflowError as exc:
            log.error("%s: %s", event, exc)
            return 1
        except Exception:
            traceback.print_exc()
            return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

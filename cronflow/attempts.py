"""The attempts of one task instance, for `cronflow logs`: which try, which log file, and its
bytes as they are written while the try runs.

The daemon changes a task instance's state first and writes the try's end line into the log
just after, so a follower stops once the try is over and that line is there. A try marked or
replayed while it runs changes state at once, but its end line comes only once the daemon has
stopped its process (SIGTERM, SIGKILL after a grace; on a remote worker, later still): the
follower waits for that line as long as a daemon runs (also when it starts just after the
mark), and only a short grace when none does (no one will write it).
"""

from __future__ import annotations

import gzip
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from cronflow import control
from cronflow.catalog import FlowSpec
from cronflow.config import Settings
from cronflow.errors import DaemonError, InvalidInputError, NotFoundError
from cronflow.logs import (
    CHUNK_BYTES,
    TAIL_BYTES,
    attempt_log_path,
    existing_log,
    open_log,
)
from cronflow.mapping import base_id
from cronflow.outcomes import current_try
from cronflow.states import ACTIVE_TASK_STATES, TaskState
from cronflow.store import Store
from cronflow.timeparse import from_iso

POLL_S = 0.1
END_LINE_GRACE_S = 2.0  # no daemon: how long a late end line may still come
# a daemon runs: how long a stopped try's end line may take (a local kill takes up to 5 s, a
# remote one up to twice that plus the workers' heartbeat timeout, 30 s by default)
END_LINE_WAIT_S = 120.0


def parse_target(text: str, task_required: bool = False) -> tuple[str, str | None]:
    """'FLOW.TASK' -> (flow, task); 'FLOW' -> (flow, None) unless a task is required."""
    flow_id, dot, task_id = text.partition(".")
    if not flow_id or (dot and (not task_id or "." in task_id)) or (task_required and not dot):
        shape = "FLOW.TASK" if task_required else "FLOW or FLOW.TASK"
        raise InvalidInputError(f"bad target '{text}': expected {shape}, e.g. meteo.fetch")
    return flow_id, task_id or None


@dataclass(frozen=True)
class AttemptLog:
    """One try of a task instance and where its log is."""

    flow: FlowSpec
    run: dict[str, Any]
    ti: dict[str, Any]
    try_number: int
    path: Path | None  # None while the task instance has not started a try yet

    @property
    def name(self) -> str:
        return f"{self.flow.flow_id}.{self.ti['task_id']}"


def check_mapped(store: Store, flow: FlowSpec, run: dict[str, Any], task_id: str) -> None:
    """A mapped task named as a whole where one instance is meant (a log, a try): NotFoundError
    naming its instances."""
    task = flow.tasks.get(task_id)
    if task is None or task.map_over is None:
        return
    count = sum(base_id(t["task_id"]) == task_id for t in store.tis_of_runs([run["run_id"]]))
    if count:
        raise NotFoundError(
            f"{flow.flow_id}.{task_id} of {_local(flow, run)} is mapped into {count} task "
            f"instances: name one, {task_id}[0] to {task_id}[{count - 1}]"
        )


def find_attempt(
    settings: Settings,
    store: Store,
    flow: FlowSpec,
    task_id: str,
    date_text: str | None,
    try_number: int | None,
) -> AttemptLog:
    """The run of --date (default: the latest) and its task instance's try (default: the last)."""
    flow.task(task_id)
    run = control.find_one_run(store, flow, date_text)
    ti = store.ti(run["run_id"], task_id)
    if ti is None:
        check_mapped(store, flow, run, task_id)
        raise NotFoundError(f"the run of {_local(flow, run)} has no task '{task_id}'")
    last = current_try(ti)  # a sensor between two pokes is still in its try
    if try_number is not None and not 1 <= try_number <= last:
        tried = f"tries 1 to {last}" if last else "no try yet"
        raise InvalidInputError(f"--try {try_number}: {flow.flow_id}.{task_id} has {tried}")
    chosen = try_number or last
    path = None
    if chosen:
        path = attempt_log_path(
            settings.logs_dir, flow.flow_id, task_id, run["logical_date"], chosen
        )
    return AttemptLog(flow, run, ti, chosen, path)


def read_attempt(attempt: AttemptLog) -> Iterator[bytes]:
    """The whole log of a try (compressed or not), in chunks, so that printing a log of any
    size holds one chunk in memory. Errors (no such log) are raised here, before any chunk."""
    if attempt.path is None:
        state, run = attempt.ti["state"], _local(attempt.flow, attempt.run)
        if TaskState(state).is_finished:
            why = f": {attempt.ti['reason']}" if attempt.ti["reason"] else ""
            raise NotFoundError(
                f"{attempt.name} did not run in the run of {run} (state {state}{why})"
            )
        raise NotFoundError(
            f"{attempt.name} has not run yet in the run of {run} (state {state}); "
            "use -f to wait for it"
        )
    try:
        handle = open_log(attempt.path)
    except FileNotFoundError:
        raise NotFoundError(f"no log for try {attempt.try_number} of {attempt.name}") from None
    return _chunks(handle)


def _chunks(handle: BinaryIO) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(CHUNK_BYTES):
            yield chunk


def follow_attempt(
    settings: Settings,
    store: Store,
    attempt: AttemptLog,
    is_daemon_running: Callable[[], bool],
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[bytes]:
    """The log of a try as it grows, until the try ends. Following a task instance that waits
    for its next try (not started, retry pending, just replayed) first waits for that try; an
    earlier or finished try is simply read."""
    run_id, task_id = attempt.run["run_id"], attempt.ti["task_id"]
    current = attempt.try_number == current_try(attempt.ti)
    wait = lambda: END_LINE_WAIT_S if is_daemon_running() else END_LINE_GRACE_S  # noqa: E731
    if current and _between_pokes(attempt.ti):
        pass  # its try goes on: follow its log across the pokes, until the try ends
    elif current and _waiting(attempt.ti["state"]):
        if not is_daemon_running():
            raise DaemonError(
                f"{attempt.name} waits to run, but no daemon is running on {settings.home}"
            )
        ti = attempt.ti
        while _waiting(ti["state"]) and ti["try_number"] == attempt.ti["try_number"]:
            sleep(POLL_S)
            ti = store.ti(run_id, task_id) or ti
        if ti["try_number"] == attempt.ti["try_number"]:
            raise NotFoundError(f"{attempt.name} ended {ti['state']} without a new try")
        path = attempt_log_path(
            settings.logs_dir, attempt.flow.flow_id, task_id, ti["logical_date"], ti["try_number"]
        )
        attempt = AttemptLog(attempt.flow, attempt.run, ti, ti["try_number"], path)
    elif not current or attempt.ti["state"] not in ACTIVE_TASK_STATES:
        if current and _end_line_may_come(attempt, is_daemon_running):
            assert attempt.path is not None
            yield from follow_file(attempt.path, lambda: False, _end_line(attempt), sleep, wait)
            return
        yield from read_attempt(attempt)
        return
    assert attempt.path is not None

    def active() -> bool:
        ti = store.ti(run_id, task_id)
        return bool(
            ti
            and current_try(ti) == attempt.try_number
            and (ti["state"] in ACTIVE_TASK_STATES or _between_pokes(ti))
        )

    yield from follow_file(attempt.path, active, _end_line(attempt), sleep, wait)


def _end_line(attempt: AttemptLog) -> bytes:
    """What the try's end line starts with. A sensor's pokes each end with a line "try N poke
    ended": only "try N ended" is its end."""
    sensor = attempt.ti["first_poke_at"] is not None or _between_pokes(attempt.ti)
    return f"cronflow: try {attempt.try_number} {'ended' if sensor else ''}".encode()


def _end_line_may_come(attempt: AttemptLog, is_daemon_running: Callable[[], bool]) -> bool:
    """A try that has just ended (marked while it ran: its process is being stopped) whose log
    lacks its end line yet: the daemon is about to write it."""
    if attempt.path is None or not attempt.ti["end_at"]:
        return False
    ended = from_iso(attempt.ti["end_at"])
    if (control.utc_now() - ended).total_seconds() > END_LINE_WAIT_S:
        return False
    _head, tail = _head_and_tail(attempt.path)
    return _end_line(attempt).decode() not in tail and is_daemon_running()


def _between_pokes(ti: dict[str, Any]) -> bool:
    """A sensor in reschedule mode waiting for its next poke, within the same try."""
    return current_try(ti) == int(ti["try_number"]) + 1


def _local(flow: FlowSpec, run: dict[str, Any]) -> str:
    """A run's logical date as messages show it: in the flow's timezone, with the offset."""
    return datetime.fromisoformat(run["logical_date"]).astimezone(flow.tz).isoformat()


def _waiting(state: str) -> bool:
    return state in (
        TaskState.NONE,
        TaskState.SCHEDULED,
        TaskState.UP_FOR_RETRY,
        TaskState.UP_FOR_RESCHEDULE,
    )


def follow_file(
    path: Path,
    is_active: Callable[[], bool],
    end_line: bytes,
    sleep: Callable[[float], None] = time.sleep,
    end_wait_s: Callable[[], float] = lambda: END_LINE_GRACE_S,
) -> Iterator[bytes]:
    """Yield a file's bytes as they are written while `is_active()`; after it turns false, the
    rest up to `end_line`, waited for at most `end_wait_s()` seconds."""
    offset, tail, grace_end = 0, b"", None
    while True:
        active = is_active()
        for chunk in _chunks_from(path, offset):
            offset += len(chunk)
            tail = (tail + chunk)[-4096:]
            yield chunk
        if not active:
            if grace_end is None:
                grace_end = time.monotonic() + end_wait_s()
            if end_line in tail or time.monotonic() > grace_end:
                return
        sleep(POLL_S)


def _chunks_from(path: Path, offset: int) -> Iterator[bytes]:
    """What the file holds past `offset` now, in chunks (nothing while it does not exist)."""
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed by _chunks
    except FileNotFoundError:
        return iter(())
    handle.seek(offset)
    return _chunks(handle)


# --- every try of a task instance ---------------------------------------------------------------
_HEADER = re.compile(r"^\[([^\]]+)\] cronflow: .* try (\d+) of \d+, on (.*)$")
_END = re.compile(r"^\[([^\]]+)\] cronflow: try (\d+) (?:poke )?ended(?: after ([\d.]+)s)?: (.*)$")
_RETRY = re.compile(r"^(.*); retry at \S+ \(try \d+ of \d+\)$")


def tries(settings: Settings, flow: FlowSpec, ti: dict[str, Any]) -> list[dict[str, Any]]:
    """Every try of a task instance, first to last: state, reason, start, end, duration, host.
    The last try is the store's row; the earlier ones are read from their logs' start and end
    lines (the daemon writes both), only a log's first line and its last few kilobytes."""
    found = []
    for number in range(1, ti["try_number"]):
        path = attempt_log_path(
            settings.logs_dir, flow.flow_id, ti["task_id"], ti["logical_date"], number
        )
        found.append(_try_from_log(number, path))
    if ti["try_number"]:
        found.append(
            {
                "try_number": ti["try_number"],
                "state": ti["state"],
                "reason": ti["reason"],
                "start_at": ti["start_at"],
                "end_at": ti["end_at"],
                "duration_s": ti["duration_s"],
                "host": ti["host"],
            }
        )
    return found


def _try_from_log(number: int, path: Path) -> dict[str, Any]:
    row: dict[str, Any] = {
        "try_number": number,
        "state": None,  # unknown: the log is gone (retention) or has no end line
        "reason": None,
        "start_at": None,
        "end_at": None,
        "duration_s": None,
        "host": None,
    }
    head, tail = _head_and_tail(path)
    header = _HEADER.match(head)
    if header:
        row.update(start_at=_stamp(header[1]), host=header[3])
    for line in reversed(tail.splitlines()):
        end = _END.match(line)
        if end and int(end[2]) == number:
            note = end[4]
            retried = _RETRY.match(note)
            if note == "success":
                state, reason = TaskState.SUCCESS.value, None
            elif retried:
                state, reason = TaskState.UP_FOR_RETRY.value, retried[1]
            else:
                state, reason = TaskState.FAILED.value, note.removeprefix("failed: ")
            row.update(
                state=state,
                reason=reason,
                end_at=_stamp(end[1]),
                duration_s=float(end[3]) if end[3] else None,
            )
            break
    return row


def _stamp(text: str) -> str | None:
    moment = from_iso(text)
    return moment.isoformat() if moment else None


def _head_and_tail(path: Path) -> tuple[str, str]:
    found = existing_log(path)
    if found is None:
        return "", ""
    try:
        if found.suffix == ".gz":
            with gzip.open(found, "rb") as handle:
                data = handle.read()
            head, tail = data[:TAIL_BYTES], data[-TAIL_BYTES:]
        else:
            with open(found, "rb") as handle:
                head = handle.read(TAIL_BYTES)
                size = handle.seek(0, 2)
                handle.seek(max(0, size - TAIL_BYTES))
                tail = handle.read()
    except OSError:
        return "", ""
    first = head.split(b"\n", 1)[0]
    return first.decode(errors="replace"), tail.decode(errors="replace")


def read_attempt_from(attempt: AttemptLog, offset: int, limit: int) -> tuple[bytes, int]:
    """At most `limit` bytes of a try's log from `offset`, and the offset after them: how a
    page follows a running try without reading it again from the start. b'' while the try has
    no log yet."""
    if attempt.path is None:
        return b"", offset
    try:
        with open_log(attempt.path) as handle:
            handle.seek(offset)  # a compressed log is read up to there, never held whole
            data = handle.read(limit)
    except FileNotFoundError:
        data = b""
    return data, offset + len(data)


def log_size(attempt: AttemptLog) -> int:
    """The size of a try's log as it is now (uncompressed); 0 when it has none yet."""
    found = existing_log(attempt.path) if attempt.path else None
    if found is None:
        return 0
    if found.suffix == ".gz":
        with gzip.open(found, "rb") as handle:
            return sum(len(chunk) for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""))
    return found.stat().st_size

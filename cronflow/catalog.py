"""The catalog of flows: flow files on disk, kept in sync with the store.

Both the daemon and the CLI call `sync()`: files whose size and mtime match the store's record
are not imported again, so a sync with nothing changed costs one stat per file and one query.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from cronflow import deps
from cronflow.config import Settings
from cronflow.errors import NotFoundError
from cronflow.loader import LoadResult, files_claimed, flow_file_names, load_files
from cronflow.mapping import DEFAULT_ARG, base_id, counts_of, expand_graph, split_id
from cronflow.store import Store, flow_timing
from cronflow.timeparse import from_iso

if TYPE_CHECKING:
    from cronflow.timetable import Schedule

log = logging.getLogger(__name__)

TINY = timedelta(microseconds=1)

# Bumped whenever what is stored of a flow file changes shape: every file is then re-read.
# 2: the flows table holds each flow's timezone and schedule text (for `cronflow list`).
SPEC_FORMAT = 2
# task kinds (cronflow.ops.python) whose decision, stored as an XCom, skips tasks after them
BRANCH_KINDS = ("branch", "short_circuit")


LOCAL_QUEUE = "local"  # queue="local": on the scheduler's host, whatever the executor
STORE_KINDS = frozenset({"trigger_flow", "flow_sensor"})  # they read or write the store


@dataclass(frozen=True)
class TaskSpec:
    task_id: str
    kind: str
    upstream: list[str]
    params: dict[str, Any]
    retries: int
    retry_delay_s: float
    retry_exponential_backoff: bool
    max_retry_delay_s: float
    timeout_s: float | None
    pool: str
    priority: int
    trigger_rule: str
    op: dict[str, Any]
    callbacks: dict[str, str] = field(default_factory=dict)  # event -> function name
    email_on_failure: list[str] = field(default_factory=list)
    deadline_s: float | None = None  # done (success or skipped) this long after each fire time
    depends_on_past: bool = False  # waits for its own task instance of the previous run
    wait_for_downstream: bool = False  # ... and for that one's direct downstream there
    queue: str | None = None  # the Celery queue whose workers run it (None: this server)
    map_over: str | None = None  # mapped: one instance per item of this task's list
    map_arg: str = DEFAULT_ARG  # the keyword argument that carries the item

    @property
    def remote_queue(self) -> str | None:
        """The queue a Celery executor sends this task to, or None to run it on the scheduler's
        host: no queue, queue="local", and kinds that need the scheduler's store."""
        if self.queue in (None, LOCAL_QUEUE) or self.kind in STORE_KINDS:
            return None
        return self.queue

    def retry_delay_after(self, try_number: int) -> float:
        """Delay before the next try, after `try_number` failed tries (1-based)."""
        if not self.retry_exponential_backoff:
            return self.retry_delay_s
        return min(self.retry_delay_s * 2.0 ** (try_number - 1), self.max_retry_delay_s)


@dataclass(frozen=True)
class FlowWait:
    """One wait_for of a flow: the runs of `flow_id` on the day D + offset_days of the waiting
    run's day D, for at most `timeout_s`; then its first tasks fail (or skip: soft_fail)."""

    flow_id: str
    offset_days: int
    timeout_s: float
    soft_fail: bool

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> FlowWait:
        # specs stored before wait_timeout existed: the built-in default
        return cls(
            spec["flow_id"],
            spec["offset_days"],
            spec.get("timeout_s", deps.DEFAULT_WAIT_TIMEOUT_S),
            spec.get("soft_fail", False),
        )


@dataclass(frozen=True)
class FlowSpec:
    """A loaded flow definition, parsed once (timezone, dates; the schedule on first use)."""

    flow_id: str
    path: str
    raw: dict[str, Any]
    tz: ZoneInfo
    start_at: datetime | None
    end_at: datetime | None
    catchup: bool
    max_active_runs: int
    wait_for: list[tuple[str, int]]
    waits: list[FlowWait] = field(default_factory=list)
    tasks: dict[str, TaskSpec] = field(default_factory=dict)

    @classmethod
    def from_spec(cls, spec: dict[str, Any], path: str) -> FlowSpec:
        return cls(
            flow_id=spec["flow_id"],
            path=path,
            raw=spec,
            tz=ZoneInfo(spec["timezone"]),  # checked when the file was loaded
            start_at=from_iso(spec["start_at"]),
            end_at=from_iso(spec["end_at"]),
            catchup=spec["catchup"],
            max_active_runs=spec["max_active_runs"],
            wait_for=[(w["flow_id"], w["offset_days"]) for w in spec["wait_for"]],
            waits=[FlowWait.from_spec(w) for w in spec["wait_for"]],
            tasks={t["task_id"]: TaskSpec(**t) for t in spec["tasks"]},
        )

    @cached_property
    def schedule(self) -> Schedule | None:
        # Imported here: commands about runs and tasks need no cron parser (CLI start-up time).
        from cronflow.timetable import Schedule

        expression = self.raw["schedule"]
        return Schedule.parse(expression, self.raw["timezone"]) if expression else None

    @cached_property
    def schedule_text(self) -> str:
        """The schedule in words; flows without one run by hand, or at each daemon start."""
        if self.schedule:
            return self.schedule.describe()
        return "at each daemon start" if self.raw.get("run_at_daemon_start") else "manual only"

    @cached_property
    def timing(self) -> str:
        """What decides when the flow fires (schedule, zone, dates), as the store keeps it."""
        return flow_timing(self.raw)

    def next_fires(self, now: datetime, count: int) -> list[datetime]:
        """The next `count` fire times after now, within the start and end dates."""
        if self.schedule is None:
            return []
        after = max(now, self.start_at - TINY) if self.start_at else now
        if count == 1:  # much cheaper than a fires() walk
            upcoming = self.schedule.next_after(after)
            return [upcoming] if upcoming and not (self.end_at and upcoming > self.end_at) else []
        limit = self.end_at or datetime.max.replace(tzinfo=now.tzinfo)
        return list(islice(self.schedule.fires(after, limit), count))

    @cached_property
    def deadlines(self) -> dict[str, float]:
        """'' (the run) or a task id -> its deadline in seconds after each fire time."""
        found = {"": self.raw["deadline_s"]} if self.raw.get("deadline_s") else {}
        found.update({t.task_id: t.deadline_s for t in self.tasks.values() if t.deadline_s})
        return found  # the loader accepts a deadline only on a flow with a schedule

    def task(self, task_id: str) -> TaskSpec:
        """The task named `task_id`, or of a mapped instance `task[3]`; NotFoundError names
        the known tasks."""
        base, index = split_id(task_id)
        if base not in self.tasks:
            known = ", ".join(self.tasks) or "none"
            raise NotFoundError(f"flow '{self.flow_id}' has no task '{task_id}' (known: {known})")
        task = self.tasks[base]
        if index is not None and task.map_over is None:
            raise NotFoundError(
                f"task '{base}' of flow '{self.flow_id}' is not mapped: name it without [{index}]"
            )
        return task

    def task_of(self, task_id: str) -> TaskSpec | None:
        """The task of a task instance id (`process` or a mapped `process[3]`), if any."""
        return self.tasks.get(base_id(task_id))

    @cached_property
    def mapped_tasks(self) -> list[str]:
        """Tasks mapped over another's list (empty for most flows)."""
        return [t.task_id for t in self.tasks.values() if t.map_over]

    def run_graph(
        self, task_ids: Iterable[str]
    ) -> tuple[Mapping[str, tuple[list[str], str]], list[str]]:
        """The graph and order of one run whose task instances are `task_ids`: each mapped
        task expanded into its instances (the flow's own graph when none is)."""
        counts = counts_of(list(task_ids), self.mapped_tasks) if self.mapped_tasks else {}
        if not counts:
            return self.graph, self.order
        return expand_graph(self.graph, self.order, counts)

    @cached_property
    def branch_tasks(self) -> list[str]:
        """Tasks whose success decides which tasks after them run (Branch, ShortCircuit)."""
        return [t.task_id for t in self.tasks.values() if t.kind in BRANCH_KINDS]

    @cached_property
    def past_dependents(self) -> dict[str, list[str]]:
        """Task id -> the tasks whose start waits for it in the *next* run (depends_on_past:
        the task itself; wait_for_downstream: its upstream tasks too). Empty for most flows."""
        found: dict[str, list[str]] = {}
        for task in self.tasks.values():
            if task.depends_on_past:
                found.setdefault(task.task_id, []).append(task.task_id)
            if task.wait_for_downstream:
                for down in self.downstream[task.task_id]:
                    found.setdefault(down, []).append(task.task_id)
        return found

    @cached_property
    def graph(self) -> dict[str, tuple[list[str], str]]:
        return {t.task_id: (t.upstream, t.trigger_rule) for t in self.tasks.values()}

    @cached_property
    def order(self) -> list[str]:
        """Task ids, each after its upstreams (computed once per loaded spec)."""
        return deps.topological_order({t: ups for t, (ups, _) in self.graph.items()})

    @cached_property
    def position(self) -> dict[str, int]:
        return {task_id: i for i, task_id in enumerate(self.order)}

    @cached_property
    def downstream(self) -> dict[str, list[str]]:
        """Task id -> the tasks that depend on it directly."""
        result: dict[str, list[str]] = {t: [] for t in self.tasks}
        for task in self.tasks.values():
            for up in task.upstream:
                result[up].append(task.task_id)
        return result


@dataclass
class Catalog:
    """Flows that loaded, and the errors of those that did not (file path -> message)."""

    flows: Mapping[str, FlowSpec]
    errors: dict[str, str]
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)  # the store's flows rows

    def timezone(self, flow_id: str) -> ZoneInfo:
        """The flow's timezone without parsing its spec; UTC for a flow no longer loaded."""
        row = self.rows.get(flow_id)
        return ZoneInfo(row["timezone"] if row else "UTC")

    def get(self, flow_id: str) -> FlowSpec:
        if flow_id not in self.flows:
            broken = [msg for msg in self.errors.values() if f"flow '{flow_id}'" in msg]
            if broken:
                raise NotFoundError(f"flow '{flow_id}' failed to load: {broken[0]}")
            known = ", ".join(sorted(self.flows)) or "none"
            raise NotFoundError(f"unknown flow '{flow_id}' (known: {known})")
        return self.flows[flow_id]


_parsed: dict[tuple[str, str], FlowSpec] = {}
_last_build: dict[str, tuple[Any, Catalog]] = {}

Signature = tuple[int, int, int]  # mtime_ns, size, SPEC_FORMAT: a file whose record differs is read
DUPLICATE = "is already defined in"  # a file broken only because another file has its flow id


def sync(store: Store, settings: Settings) -> Catalog:
    """Import new and changed flow files, forget removed ones, and return the catalog.

    Files the daemon is importing right now are left to it (their last loaded state is used),
    so a command never waits on the same hung import as the daemon."""
    on_disk, changed, removed = _scan(store, settings)
    claimed = files_claimed(settings.home) if changed else set()
    if claimed & changed.keys() and _await_daemon_import(settings, set(changed)):
        on_disk, changed, removed = _scan(store, settings)  # as the daemon recorded them
        claimed = files_claimed(settings.home) if changed else set()
    todo = {p: sig for p, sig in changed.items() if p not in claimed}
    if todo:
        import_files(store, settings, todo)
    return _current(store, on_disk, check_across=bool(todo or removed))


AWAIT_DAEMON_IMPORT_S = 2.0  # a file just written is usually imported in a fraction of that


def _await_daemon_import(settings: Settings, files: set[str]) -> bool:
    """Wait a little for the daemon to finish importing `files` (True once it has): a flow
    file written just before `cronflow trigger` is then known, while a hung import costs a
    command at most AWAIT_DAEMON_IMPORT_S, never import_timeout_s."""
    end = time.monotonic() + min(AWAIT_DAEMON_IMPORT_S, settings.import_timeout_s)
    while files_claimed(settings.home) & files:
        if time.monotonic() > end:
            return False
        time.sleep(0.02)
    return True


def refresh(store: Store, settings: Settings) -> tuple[Catalog, dict[str, Signature]]:
    """The daemon's loop: forget removed files and return the catalog the store holds now,
    with the files still to import (cronflow.importer does that beside the loop). A catalog
    built again checks across files: the import thread only records files."""
    on_disk, changed, _removed = _scan(store, settings)
    return _current(store, on_disk, check_across=False, cross_on_rebuild=True), changed


def import_files(store: Store, settings: Settings, files: Mapping[str, Signature]) -> None:
    """Import files in a child process (at most import_timeout_s each) and record each one.

    A flow id belongs to the file that had it first: the one the store names, else among
    new files the older one (by modification time, then name). A file that defines an id
    another file has is broken, naming both files, like any other broken file."""
    results = load_files([Path(p) for p in files], settings.import_timeout_s)
    loaded = {str(path): result for path, result in results.items()}
    owners = {row["flow_id"]: row["path"] for row in store.flows()}
    for path, (specs, error) in claim_ids(loaded, owners, files).items():
        texts = {s["flow_id"]: FlowSpec.from_spec(s, path).schedule_text for s in specs}
        store.save_flow_file(path, files[path], error, specs, texts)
        # Broken files are the daemon's warnings (daemon.py), whoever loaded them.
        flows = ",".join(s["flow_id"] for s in specs) or "-"
        log.info("event=flow_file_loaded path=%s flows=%s", path, flows)


def _scan(
    store: Store, settings: Settings
) -> tuple[dict[str, Signature], dict[str, Signature], bool]:
    """Forget removed files; return every flow file on disk, those to import, and whether a
    file was removed."""
    on_disk: dict[str, Signature] = {}
    for path in flow_file_names(settings.flows_dir):
        try:
            stat = os.stat(path)
        except OSError:
            continue
        on_disk[path] = (stat.st_mtime_ns, stat.st_size, SPEC_FORMAT)
    known = store.flow_files()
    gone = set(known) - set(on_disk)
    for path in sorted(gone):
        log.info("event=flow_file_removed path=%s", path)
        store.remove_flow_file(path)
    changed = {p: sig for p, sig in on_disk.items() if _signature(known.get(p)) != sig}
    # A file that lost a flow id to another file may own it now: after a file was removed,
    # or another file was loaded since (the owner may no longer define the id).
    lost = {p: r for p, r in known.items() if p in on_disk and DUPLICATE in (r["error"] or "")}
    others = [r["loaded_at"] for p, r in known.items() if p in on_disk and p not in lost]
    for path, row in lost.items():
        if gone or row["loaded_at"] < max(others, default=""):
            changed[path] = on_disk[path]
    return on_disk, changed, bool(gone)


def _current(
    store: Store,
    on_disk: Mapping[str, Signature],
    *,
    check_across: bool,
    cross_on_rebuild: bool = False,
) -> Catalog:
    """The catalog from the store, built again only when a file or flow record changed."""
    fingerprint = (store.flow_versions(), tuple(sorted(on_disk.items())))
    last = _last_build.get(str(store.path))
    if not check_across and last is not None and last[0] == fingerprint:
        return last[1]  # the daemon's idle wake-ups: nothing to read again
    catalog = _build(store, check_across or cross_on_rebuild)
    _last_build[str(store.path)] = (fingerprint, catalog)
    return catalog


def _signature(row: dict[str, Any] | None) -> Signature | None:
    return None if row is None else (row["mtime_ns"], row["size"], row["spec_format"])


def claim_ids(
    results: Mapping[str, LoadResult], owners: Mapping[str, str], files: Mapping[str, Signature]
) -> dict[str, tuple[list[dict[str, Any]], str | None]]:
    """path -> (specs to record, error) for freshly loaded files, given `owners` (flow id ->
    the file that had it until now). A duplicate flow id makes the whole file broken."""
    # Files not loaded again keep their ids; of the others, a file that owned one of the ids
    # it defines comes first, then the older files.
    claimed = {f: p for f, p in owners.items() if p not in results and Path(p).exists()}

    def order(path: str) -> tuple[bool, int, str]:
        owned = any(owners.get(s["flow_id"]) == path for s in results[path].specs)
        return not owned, files[path][0], path

    kept: dict[str, tuple[list[dict[str, Any]], str | None]] = {}
    for path in sorted(results, key=order):
        specs, error = results[path].specs, results[path].error
        ids = [s["flow_id"] for s in specs]
        twice = next((f for f in ids if ids.count(f) > 1), None)
        taken = next((f for f in ids if claimed.get(f, path) != path), None)
        if error is None and twice:
            error = f"{path}: flow '{twice}' is defined twice in this file"
        elif error is None and taken:
            error = f"{path}: flow '{taken}' {DUPLICATE} {claimed[taken]}"
        if error is None:
            claimed.update(dict.fromkeys(ids, path))
        kept[path] = ([] if error else specs, error)
    return kept


def _build(store: Store, check_across: bool) -> Catalog:
    """The catalog from the store. Specs are parsed when a flow is first looked at, so a
    command about one flow does not parse 500. Errors across files (a wait for an unknown
    flow, a cycle of waits) are worked out by whoever loaded files, and stored with the flow."""
    errors = {p: r["error"] for p, r in store.flow_files().items() if r["error"]}
    rows = {row["flow_id"]: row for row in store.flows()}
    flows = LazyFlows(rows)
    if check_across:
        cross = _cross_flow_errors({f: flows[f] for f in rows})
        if any(rows[f]["error"] != cross.get(f) for f in rows):
            store.set_flow_errors({f: cross.get(f) for f in rows})
        for flow_id in rows:
            rows[flow_id]["error"] = cross.get(flow_id)
    for flow_id, row in list(rows.items()):
        if row["error"]:
            errors[row["path"]] = row["error"]
            del rows[flow_id]
    return Catalog(flows, errors, rows)


class LazyFlows(Mapping[str, FlowSpec]):
    """flow id -> FlowSpec, parsed on first access (and shared by all catalogs of a process)."""

    def __init__(self, rows: dict[str, dict[str, Any]]) -> None:
        self._rows = rows

    def __getitem__(self, flow_id: str) -> FlowSpec:
        row = self._rows[flow_id]
        key = (flow_id, row["spec"])
        if key not in _parsed:
            _parsed[key] = FlowSpec.from_spec(json.loads(row["spec"]), row["path"])
        return _parsed[key]

    def __contains__(self, flow_id: object) -> bool:
        return flow_id in self._rows

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)


def recorded_fire_holds(row: Mapping[str, Any], now: datetime) -> bool:
    """Whether the next fire time the daemon recorded with a flow's row (`next_fire_at`, None:
    no fire any more) still holds at `now`: from when it was recorded until it passes."""
    fire, since = from_iso(row["next_fire_at"]), from_iso(row["next_fire_from"])
    return since is not None and since <= now and (fire is None or now < fire)


def catchup_progress(
    flow: FlowSpec, row: Mapping[str, Any], now: datetime
) -> tuple[int, int] | None:
    """(runs created, fire times due in all) since the daemon began catching up a backlog of
    the flow (the row's `catchup_from_at`); None when it is not catching up. Counted, not
    walked: the same cost for a backlog of ten runs or of millions."""
    since = from_iso(row.get("catchup_from_at"))
    if since is None or flow.schedule is None or not flow.catchup:
        return None
    cursor = max(from_iso(row.get("last_scheduled_at")) or since, since)
    until = min(now, flow.end_at) if flow.end_at else now
    created, total = (
        flow.schedule.count_fires(since, cursor),
        flow.schedule.count_fires(since, until),
    )
    return (created, total) if created < total else None


def _cross_flow_errors(flows: dict[str, FlowSpec]) -> dict[str, str]:
    """Errors only visible across files: waits for unknown flows, cycles of same-day waits."""
    errors: dict[str, str] = {}
    waits = {f.flow_id: f.wait_for for f in flows.values()}
    for flow_id, problem in deps.flow_wait_problems(waits):
        errors.setdefault(flow_id, f"{flows[flow_id].path}: {problem}")  # the first one per flow
    return errors

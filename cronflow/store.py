"""The state store: one SQLite file shared by the daemon and the CLI.

The only importer of sqlite_utils. WAL lets the CLI read while the daemon writes; every state
change is one short IMMEDIATE transaction, so a crash at any instant leaves the previous or the
next consistent state, never half of one. Datetimes are stored as UTC ISO 8601 text.

Every public method goes through one guard (`_guarded`): a failure of the database or its file
(locked past the busy timeout, damaged pages, read-only, disk full, no permission) becomes a
typed StoreError that says what to do, for the CLI to show as one line; any other SQLite error
is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cronflow.deps import run_outcome
from cronflow.errors import (
    CronflowError,
    InvalidInputError,
    NotFoundError,
    StoreAccessError,
    StoreCorruptError,
    StoreError,
    StoreLockedError,
)
from cronflow.mapping import instance_id
from cronflow.states import RunState, RunType, TaskState
from cronflow.timeparse import iso

if TYPE_CHECKING:
    from sqlite_utils import Database
    from sqlite_utils.migrations import Migrations

    from cronflow.audit import Actor

BUSY_TIMEOUT_S = 30.0

MIGRATION_SET = "cronflow"
# (name, function) in order. Applied through sqlite-utils' Migrations, which is imported only
# when one is pending: a command that only reads never pays for importing sqlite-utils.
MIGRATIONS: list[tuple[str, Callable[[Database], None]]] = []


def migration(name: str) -> Callable[[Callable[[Database], None]], Callable[[Database], None]]:
    def register(fn: Callable[[Database], None]) -> Callable[[Database], None]:
        MIGRATIONS.append((name, fn))
        return fn

    return register


def _migrations() -> Migrations:
    from sqlite_utils.migrations import Migrations

    migrations = Migrations(MIGRATION_SET)
    for name, fn in MIGRATIONS:
        migrations(name=name)(fn)
    return migrations


@migration("0001_initial")
def _initial(db: Database) -> None:
    db.execute("""
        CREATE TABLE flow_files (
            path TEXT PRIMARY KEY, mtime_ns INTEGER NOT NULL, size INTEGER NOT NULL,
            spec_format INTEGER NOT NULL, loaded_at TEXT NOT NULL, error TEXT)""")
    db.execute("""
        CREATE TABLE flows (
            flow_id TEXT PRIMARY KEY, path TEXT NOT NULL, spec TEXT NOT NULL,
            error TEXT, paused INTEGER NOT NULL DEFAULT 0, last_scheduled_at TEXT,
            updated_at TEXT NOT NULL)""")
    db.execute("""
        CREATE TABLE runs (
            run_id INTEGER PRIMARY KEY, flow_id TEXT NOT NULL, logical_date TEXT NOT NULL,
            run_type TEXT NOT NULL, state TEXT NOT NULL, conf TEXT NOT NULL DEFAULT '{}',
            data_interval_start TEXT NOT NULL, data_interval_end TEXT NOT NULL,
            created_at TEXT NOT NULL, started_at TEXT, ended_at TEXT,
            UNIQUE (flow_id, logical_date))""")
    db.execute("CREATE INDEX runs_by_state ON runs (state, flow_id)")
    db.execute("""
        CREATE TABLE task_instances (
            run_id INTEGER NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
            task_id TEXT NOT NULL, flow_id TEXT NOT NULL, logical_date TEXT NOT NULL,
            state TEXT NOT NULL, try_number INTEGER NOT NULL DEFAULT 0,
            max_tries INTEGER NOT NULL, pool TEXT NOT NULL, priority INTEGER NOT NULL,
            queued_at TEXT, start_at TEXT, end_at TEXT, duration_s REAL, pid INTEGER,
            host TEXT, next_try_at TEXT, log_path TEXT, exit_code INTEGER, reason TEXT,
            PRIMARY KEY (run_id, task_id)) WITHOUT ROWID""")
    db.execute("CREATE INDEX tis_by_flow_date ON task_instances (flow_id, logical_date)")
    db.execute("CREATE INDEX tis_by_state ON task_instances (state)")
    db.execute("""
        CREATE TABLE xcom (
            run_id INTEGER NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
            task_id TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
            created_at TEXT NOT NULL, PRIMARY KEY (run_id, task_id, key)) WITHOUT ROWID""")
    db.execute("""
        CREATE TABLE variables (
            name TEXT PRIMARY KEY, value TEXT NOT NULL, is_secret INTEGER NOT NULL DEFAULT 0,
            updated_at TEXT NOT NULL)""")
    db.execute("""
        CREATE TABLE connections (
            conn_id TEXT PRIMARY KEY, conn_type TEXT NOT NULL, host TEXT, port INTEGER,
            login TEXT, password TEXT, extra TEXT NOT NULL DEFAULT '{}',
            updated_at TEXT NOT NULL)""")
    db.execute("""
        CREATE TABLE daemon (
            id INTEGER PRIMARY KEY CHECK (id = 1), pid INTEGER NOT NULL, host TEXT NOT NULL,
            started_at TEXT NOT NULL, heartbeat_at TEXT NOT NULL)""")


@migration("0002_cli_indexes")
def _cli_indexes(db: Database) -> None:
    # `cronflow runs FLOW --state S`, newest first, without walking the flow's whole history
    db.execute("CREATE INDEX runs_by_flow_state_date ON runs (flow_id, state, logical_date)")
    # `cronflow top`: the latest failures, newest first
    db.execute("CREATE INDEX tis_by_state_end ON task_instances (state, end_at)")


@migration("0003_ops")
def _ops(db: Database) -> None:
    # A sensor's timeout counts from its first poke, across reschedules of the same try.
    db.execute("ALTER TABLE task_instances ADD COLUMN first_poke_at TEXT")


@migration("0004_flow_listing")
def _flow_listing(db: Database) -> None:
    # What `cronflow list` shows of a flow, kept with its row so listing parses no spec: the
    # loader fills the timezone and schedule text; the daemon records the next fire time and
    # the moment from which it holds (it stays right until that fire time passes). `timing`
    # (schedule, zone, dates) tells whether a reloaded file changed when the flow fires.
    for column in ("timezone", "schedule_text", "timing", "next_fire_at", "next_fire_from"):
        db.execute(f"ALTER TABLE flows ADD COLUMN {column} TEXT")


@migration("0005_waits_run_origin_and_holds")
def _waits_run_origin_and_holds(db: Database) -> None:
    # runs: which run of which flow created a `triggered` run (JSON), and when the run last
    # became queued (created or replayed): a wait for another flow gives up counting from it.
    # flows: the newest fire time held back by max_active_runs (created once a run ends).
    db.execute("ALTER TABLE runs ADD COLUMN triggered_by TEXT")
    db.execute("ALTER TABLE runs ADD COLUMN queued_at TEXT")
    db.execute("ALTER TABLE flows ADD COLUMN held_until TEXT")


@migration("0006_planning_catchup_progress")
def _catchup_progress(db: Database) -> None:
    # Where a flow's catch-up began (its cursor then), while it lasts: `list` and `why` count
    # the runs created since and the fire times still due from it.
    db.execute("ALTER TABLE flows ADD COLUMN catchup_from_at TEXT")


@migration("0007_deadlines_and_audit")
def _deadlines_and_audit(db: Database) -> None:
    # Deadlines: per (flow, task or '' for the run), the fire time up to which every fire time
    # was checked (each is checked once, at its deadline), and the misses found, with when
    # their alert started (NULL: not yet; a restart sends it).
    db.execute("""
        CREATE TABLE deadline_checks (
            flow_id TEXT NOT NULL, task_id TEXT NOT NULL, checked_until TEXT NOT NULL,
            PRIMARY KEY (flow_id, task_id)) WITHOUT ROWID""")
    db.execute("""
        CREATE TABLE deadline_misses (
            flow_id TEXT NOT NULL, task_id TEXT NOT NULL, fire_at TEXT NOT NULL,
            deadline_at TEXT NOT NULL, missed_at TEXT NOT NULL, run_id INTEGER,
            message TEXT NOT NULL, alerted_at TEXT, PRIMARY KEY (flow_id, task_id, fire_at))""")
    db.execute("CREATE INDEX deadline_misses_by_flow ON deadline_misses (flow_id, fire_at)")
    db.execute("CREATE INDEX deadline_misses_by_time ON deadline_misses (missed_at)")
    db.execute(
        "CREATE INDEX deadline_misses_to_alert ON deadline_misses (flow_id, task_id, fire_at) "
        "WHERE alerted_at IS NULL"
    )
    # Who changed what (cronflow.audit): newest first, of all flows or of one.
    db.execute("""
        CREATE TABLE audit_log (
            entry_id INTEGER PRIMARY KEY, at TEXT NOT NULL, user TEXT NOT NULL,
            face TEXT NOT NULL, action TEXT NOT NULL, flow_id TEXT, summary TEXT NOT NULL,
            details TEXT NOT NULL DEFAULT '{}')""")
    db.execute("CREATE INDEX audit_by_time ON audit_log (at)")
    db.execute("CREATE INDEX audit_by_flow_time ON audit_log (flow_id, at)")


# The task instances that may still do something, and the runs still going: a tiny share of a
# long history. Partial indexes hold only them, so the daemon's tick, `status` and `top` read
# the same few rows at 100 or 10 M task instances; a full index on a column of seven values is
# skipped by SQLite's planner once ANALYZE has counted them (it estimates a seventh of the
# table per value). The queries name the index (INDEXED BY) and repeat its condition word for
# word, which is how SQLite knows the partial index holds every row they ask for.
ACTIVE_TIS = "state IN ('scheduled', 'queued', 'running', 'up_for_retry', 'up_for_reschedule')"
ACTIVE_RUNS = "state IN ('queued', 'running')"
_ACTIVE_TI_STATES = frozenset(
    {
        TaskState.SCHEDULED,
        TaskState.QUEUED,
        TaskState.RUNNING,
        TaskState.UP_FOR_RETRY,
        TaskState.UP_FOR_RESCHEDULE,
    }
)
_ACTIVE_RUN_STATES = frozenset({RunState.QUEUED, RunState.RUNNING})


@migration("0008_active_indexes")
def _active_indexes(db: Database) -> None:
    # Full indexes on state replaced by partial ones: smaller (a few rows, not one per task
    # instance) and used whatever ANALYZE says. `top`'s latest failures keep their order.
    db.execute("DROP INDEX IF EXISTS tis_by_state")
    db.execute("DROP INDEX IF EXISTS tis_by_state_end")
    db.execute("DROP INDEX IF EXISTS runs_by_state")
    db.execute(f"CREATE INDEX tis_active ON task_instances (state) WHERE {ACTIVE_TIS}")
    db.execute("CREATE INDEX tis_failed_by_end ON task_instances (end_at) WHERE state = 'failed'")
    db.execute(f"CREATE INDEX runs_active ON runs (state) WHERE {ACTIVE_RUNS}")


@migration("0009_mapping_map_index")
def _mapping_map_index(db: Database) -> None:
    # A mapped task's instances are rows `task[i]`; map_index says which item (NULL: a task
    # not mapped, or the placeholder of one not yet expanded). Informational: the key stays.
    db.execute("ALTER TABLE task_instances ADD COLUMN map_index INTEGER")


SCHEMA_VERSION = len(MIGRATIONS)


# the instances of a mapped task in a run (`task[0]`, `task[1]`, ...)
_INSTANCES_WHERE = "run_id = ? AND map_index IS NOT NULL AND substr(task_id, 1, ?) = ?"
_INSTANCES_OF = "SELECT task_id FROM task_instances WHERE " + _INSTANCES_WHERE + "{limit}"


def _instances_params(run_id: int, task_id: str) -> list[Any]:
    return [run_id, len(task_id) + 1, f"{task_id}["]


class RunExistsError(CronflowError):
    """A run already exists for that flow and logical date."""


_FIX_ACCESS = (
    "run cronflow as the owner of the home, or make the database and its directory writable"
)
# What a user can do about an OS error (errno) or a SQLite result code; the rest are bugs.
_OS_ACTIONS = {
    errno.EACCES: _FIX_ACCESS,
    errno.EPERM: _FIX_ACCESS,
    errno.EROFS: "the file system is read-only: remount it read-write, or move the home",
    errno.ENOSPC: "the disk is full: free some space (`cronflow db clean`, old logs)",
    errno.EDQUOT: "the disk quota is exhausted: free some space (`cronflow db clean`, old logs)",
    errno.EIO: "the disk reports I/O errors: check it (dmesg), then restore a backup",
}
_SQLITE_ACTIONS = {
    sqlite3.SQLITE_READONLY: _FIX_ACCESS,
    sqlite3.SQLITE_CANTOPEN: _FIX_ACCESS,
    sqlite3.SQLITE_PERM: _FIX_ACCESS,
    sqlite3.SQLITE_FULL: _OS_ACTIONS[errno.ENOSPC],
    sqlite3.SQLITE_IOERR: _OS_ACTIONS[errno.EIO],
}


def store_error(path: Path, exc: BaseException, busy_timeout_s: float) -> StoreError | None:
    """The typed error for a failure of the database or its file, or None for a bug."""
    if isinstance(exc, OSError):
        action = _OS_ACTIONS.get(exc.errno or 0)
        if action is None:
            return None
        where = Path(exc.filename) if exc.filename else path
        return StoreAccessError(where, exc.strerror or str(exc), action)
    if not isinstance(exc, sqlite3.DatabaseError) or isinstance(
        exc, sqlite3.IntegrityError | sqlite3.ProgrammingError
    ):
        return None
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF  # the primary result code
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return StoreLockedError(path, busy_timeout_s)
    if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return StoreCorruptError(path, str(exc))
    if code in _SQLITE_ACTIONS:
        return StoreAccessError(path, str(exc), _SQLITE_ACTIONS[code])
    return None


@contextmanager
def _translated(store: Store) -> Iterator[None]:
    """Raise a failure of the database or its file as its typed error (see store_error)."""
    try:
        yield
    except (sqlite3.Error, OSError) as exc:
        error = store_error(store.path, exc, store.busy_timeout_s)
        if error is None:
            raise
        raise error from exc


def _guarded(cls: type[Store]) -> type[Store]:
    """Wrap every public method (and __init__) of the store in the translation above: one
    place for every query, present and future, instead of a try around each."""

    def guard(method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def guarded(self: Store, *args: Any, **kwargs: Any) -> Any:
            with _translated(self):
                return method(self, *args, **kwargs)

        return guarded

    for name, member in list(vars(cls).items()):
        if callable(member) and (name == "__init__" or not name.startswith("_")):
            setattr(cls, name, guard(member))
    return cls


@_guarded
class Store:
    """Typed access to the state database. One instance per process; not thread-safe."""

    def __init__(self, path: Path, busy_timeout_s: float = BUSY_TIMEOUT_S) -> None:
        self.path = path
        self.busy_timeout_s = busy_timeout_s
        self._nested = 0  # savepoints open inside the write transaction
        self._changes_at_begin = 0  # total_changes when it began
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            # Owner-only from the first byte: the database holds connection secrets.
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        self.conn = conn = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None)
        self._secrets_epoch = 0
        self._secrets_cache: tuple[tuple[int, int], list[str]] | None = None
        try:
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        except BaseException:
            conn.close()
            raise

    @cached_property
    def db(self) -> Database:
        """sqlite-utils over the same connection, for writes and migrations (imported late)."""
        from sqlite_utils import Database

        return Database(self.conn)

    def _applied_migrations(self) -> set[str]:
        exists = self.conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlite_migrations'"
        ).fetchone()
        if not exists:
            return set()
        rows = self.conn.execute(
            "SELECT name FROM _sqlite_migrations WHERE migration_set = ?", [MIGRATION_SET]
        )
        return {row[0] for row in rows}

    def _migrate(self) -> None:
        applied = self._applied_migrations()
        unknown = applied - {name for name, _ in MIGRATIONS}
        if unknown:
            raise StoreError(
                f"{self.path} was written by a newer cronflow (migration {sorted(unknown)[-1]}); "
                "upgrade cronflow"
            )
        if len(applied) < SCHEMA_VERSION:
            with self._write():
                _migrations().apply(self.db)

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def _write(self) -> Iterator[Database]:
        """One write transaction. BEGIN IMMEDIATE takes the write lock up front, so a read that
        is later upgraded can never fail with 'database is locked'; nested calls use savepoints."""
        conn = self.conn
        if conn.in_transaction:
            self._nested += 1
            try:
                with self.db.atomic():
                    yield self.db
            finally:
                self._nested -= 1
            return
        conn.execute("BEGIN IMMEDIATE")
        self._changes_at_begin = conn.total_changes
        try:
            yield self.db
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def commit_so_far(self) -> bool:
        """Inside the outermost write transaction (`atomic`): commit what it wrote so far and go
        on in a new one. False, and nothing done, when it wrote nothing yet, or when a savepoint
        is open (what it covers must stay whole)."""
        conn = self.conn
        if not conn.in_transaction or self._nested or conn.total_changes == self._changes_at_begin:
            return False
        conn.execute("COMMIT")
        conn.execute("BEGIN IMMEDIATE")
        self._changes_at_begin = conn.total_changes
        return True

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """Several store calls as one transaction (a change and its audit entry). Its own
        translation of errors: the guard only sees the call, not the `with` block's start."""
        with _translated(self), self._write():
            yield

    def change_stamp(self) -> tuple[int, int]:
        """Moves whenever anything is committed: by another connection (the CLI, a worker:
        `PRAGMA data_version`) or by this one (`total_changes`). Lets the daemon keep a cache
        of what it wrote itself and notice any other write."""
        version = int(self.conn.execute("PRAGMA data_version").fetchone()[0])
        return version, self.conn.total_changes

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return [dict(row) for row in self.conn.execute(sql, params)]

    def _one(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        row = self.conn.execute(sql, params).fetchone()
        return dict(row) if row else None

    # --- flow files and flows -------------------------------------------------------------
    def flow_files(self) -> dict[str, dict[str, Any]]:
        return {r["path"]: r for r in self._rows("SELECT * FROM flow_files")}

    def save_flow_file(
        self,
        path: str,
        signature: tuple[int, int, int],
        error: str | None,
        specs: list[dict[str, Any]],
        schedule_texts: Mapping[str, str] | None = None,
    ) -> None:
        """Record one loaded file and replace the flows it defines, keeping their pause state
        and scheduling cursor (and their recorded next fire time while their timing holds)."""
        now = iso(_utcnow())
        texts = schedule_texts or {}
        with self._write():
            self.db.table("flow_files").upsert(
                {
                    "path": path,
                    "mtime_ns": signature[0],
                    "size": signature[1],
                    "spec_format": signature[2],
                    "loaded_at": now,
                    "error": error,
                },
                pk="path",
            )
            keep = [s["flow_id"] for s in specs]
            marks = ",".join("?" * len(keep))
            self.db.execute(
                f"DELETE FROM flows WHERE path = ? AND flow_id NOT IN ({marks})", [path, *keep]
            )
            for spec in specs:
                timing = json.dumps(
                    [spec[k] for k in ("schedule", "timezone", "start_at", "end_at")]
                )
                self.db.execute(
                    """INSERT INTO flows (flow_id, path, spec, updated_at, timezone, schedule_text,
                       timing) VALUES (?, ?, ?, ?, ?, ?, ?)
                       ON CONFLICT (flow_id) DO UPDATE SET path = excluded.path,
                       spec = excluded.spec, updated_at = excluded.updated_at,
                       timezone = excluded.timezone, schedule_text = excluded.schedule_text,
                       next_fire_at = CASE WHEN timing IS excluded.timing
                           THEN next_fire_at END,
                       next_fire_from = CASE WHEN timing IS excluded.timing
                           THEN next_fire_from END,
                       timing = excluded.timing""",
                    [
                        spec["flow_id"],
                        path,
                        json.dumps(spec),
                        now,
                        spec["timezone"],
                        texts.get(spec["flow_id"]),
                        timing,
                    ],
                )

    def remove_flow_file(self, path: str) -> None:
        with self._write():
            self.db.execute("DELETE FROM flow_files WHERE path = ?", [path])
            self.db.execute("DELETE FROM flows WHERE path = ?", [path])

    def set_flow_errors(self, errors: dict[str, str | None]) -> None:
        """Errors found across files (unknown waited-for flow, cycle between flows)."""
        with self._write():
            for flow_id, error in errors.items():
                self.db.execute("UPDATE flows SET error = ? WHERE flow_id = ?", [error, flow_id])

    def flows(self) -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM flows ORDER BY flow_id")

    def flows_waiting_for(self, flow_id: str) -> list[tuple[str, int]]:
        """(flow id, offset in days) of every loaded flow that waits for `flow_id`, read by
        SQLite's JSON functions: `show` need not parse every flow's spec for it."""
        rows = self.conn.execute(
            """SELECT f.flow_id, w.value ->> '$.offset_days' FROM flows f,
               json_each(f.spec, '$.wait_for') w
               WHERE f.error IS NULL AND w.value ->> '$.flow_id' = ? ORDER BY f.flow_id, w.key""",
            [flow_id],
        )
        return [(row[0], int(row[1])) for row in rows]

    def flow_versions(self) -> tuple[tuple[Any, ...], ...]:
        """What changes when any flow's spec or error changes (cheap: no spec text)."""
        rows = self.conn.execute("SELECT flow_id, updated_at, error FROM flows ORDER BY flow_id")
        files = self.conn.execute("SELECT path, loaded_at, error FROM flow_files ORDER BY path")
        return tuple(map(tuple, rows)) + tuple(map(tuple, files))

    def record_next_fires(self, fires: Mapping[str, tuple[str, datetime, datetime | None]]) -> None:
        """flow id -> (timing, from, fire): for any moment in [from, fire) the flow's next fire
        time is `fire` (None: it never fires again). Written by the daemon as it schedules,
        read by `cronflow list`; ignored for a flow whose timing has changed since."""
        with self._write():
            self.conn.executemany(
                """UPDATE flows SET next_fire_from = ?, next_fire_at = ?
                   WHERE flow_id = ? AND timing = ?""",
                [
                    (iso(start), iso(fire), flow_id, timing)
                    for flow_id, (timing, start, fire) in fires.items()
                ],
            )

    def flow_states(self) -> list[dict[str, Any]]:
        """What the scheduler reads of every flow at each tick (not the specs)."""
        return self._rows(
            """SELECT flow_id, paused, last_scheduled_at, error, next_fire_from, next_fire_at,
               held_until, catchup_from_at FROM flows"""
        )

    def flow(self, flow_id: str) -> dict[str, Any]:
        row = self._one("SELECT * FROM flows WHERE flow_id = ?", [flow_id])
        if row is None:
            known = ", ".join(r["flow_id"] for r in self._rows("SELECT flow_id FROM flows"))
            raise NotFoundError(f"unknown flow '{flow_id}' (known: {known or 'none'})")
        return row

    def set_held_until(self, flow_id: str, at: datetime) -> None:
        """The newest fire time of the flow that max_active_runs holds back (not created yet)."""
        with self._write():
            self.db.execute("UPDATE flows SET held_until = ? WHERE flow_id = ?", [iso(at), flow_id])

    def set_paused(self, flow_id: str, paused: bool, actor: Actor | None = None) -> None:
        """Pause or unpause a flow, recorded in the audit trail (`actor`: who; default the
        Unix user)."""
        self.flow(flow_id)
        action = "pause" if paused else "unpause"
        with self._write():
            self.db.execute("UPDATE flows SET paused = ? WHERE flow_id = ?", [int(paused), flow_id])
            self.record_audit(action, flow_id, f"{action}d {flow_id}", {}, actor)

    # --- runs -----------------------------------------------------------------------------
    def create_run(
        self,
        flow_id: str,
        logical_at: datetime,
        run_type: RunType,
        interval: tuple[datetime, datetime],
        tasks: Iterable[dict[str, Any]],
        conf: dict[str, Any] | None = None,
        advance_cursor: bool = False,
        *,
        triggered_by: Mapping[str, Any] | None = None,
        at: datetime | None = None,
    ) -> int:
        """Create a queued run and its task instances in one transaction. With advance_cursor,
        the flow's last scheduled slot moves to this run's date in the same transaction, so a
        crash can neither lose nor duplicate a scheduled run. `at`: the creation time (the
        daemon's clock; default now); `triggered_by`: the run that triggered this one."""
        logical = iso(logical_at)
        created = iso(at or _utcnow())
        with self._write():
            try:
                cursor = self.db.execute(
                    """INSERT INTO runs (flow_id, logical_date, run_type, state, conf,
                       data_interval_start, data_interval_end, created_at, queued_at,
                       triggered_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                    [
                        flow_id,
                        logical,
                        run_type.value,
                        RunState.QUEUED.value,
                        json.dumps(conf or {}),
                        iso(interval[0]),
                        iso(interval[1]),
                        created,
                        created,
                        json.dumps(triggered_by) if triggered_by else None,
                    ],
                )
            except sqlite3.IntegrityError:
                raise RunExistsError(
                    f"flow '{flow_id}' already has a run for {logical}; use `cronflow replay`"
                ) from None
            run_id = int(cursor.lastrowid or 0)
            self._insert_tis(run_id, flow_id, logical, tasks)
            if advance_cursor:
                self.db.execute(
                    "UPDATE flows SET last_scheduled_at = ? WHERE flow_id = ?", [logical, flow_id]
                )
        return run_id

    def _insert_tis(
        self, run_id: int, flow_id: str, logical: str, tasks: Iterable[dict[str, Any]]
    ) -> None:
        """The task instances a run lacks; a mapped task already expanded lacks nothing."""
        tasks = [t for t in tasks if not (t.get("map_over") and self._expanded(run_id, t))]
        self.conn.executemany(
            """INSERT OR IGNORE INTO task_instances (run_id, task_id, flow_id, logical_date, state,
               max_tries, pool, priority) VALUES (?, ?, ?, ?, 'none', ?, ?, ?)""",
            [
                (run_id, t["task_id"], flow_id, logical, t["retries"] + 1, t["pool"], t["priority"])
                for t in tasks
            ],
        )

    def _expanded(self, run_id: int, task: dict[str, Any]) -> bool:
        return (
            self._one(
                _INSTANCES_OF.format(limit=" LIMIT 1"), _instances_params(run_id, task["task_id"])
            )
            is not None
        )

    def add_missing_tis(self, run: dict[str, Any], tasks: Iterable[dict[str, Any]]) -> None:
        """Tasks added to a flow file after its run was created join the run."""
        with self._write():
            self._insert_tis(run["run_id"], run["flow_id"], run["logical_date"], tasks)

    def start_run(
        self,
        run: dict[str, Any],
        tasks: Iterable[dict[str, Any]],
        at: datetime,
        ended: Mapping[str, tuple[TaskState, str]] | None = None,
    ) -> None:
        """A queued run becomes running, in one transaction: tasks added to the flow file since
        it was created join it, and the task instances in `ended` (task id -> (state, reason);
        a wait that gave up) end before any of them can start."""
        with self._write():
            self._insert_tis(run["run_id"], run["flow_id"], run["logical_date"], tasks)
            for task_id, (state, reason) in (ended or {}).items():
                self.db.execute(
                    """UPDATE task_instances SET state = ?, end_at = ?, reason = ?
                       WHERE run_id = ? AND task_id = ? AND state = 'none'""",
                    [state.value, iso(at), reason, run["run_id"], task_id],
                )
            self.set_run_state(run["run_id"], RunState.RUNNING, at)

    def set_catchup_from(self, flow_id: str, at: datetime | None) -> None:
        """Record where the flow's catch-up began (None: it has caught up)."""
        with self._write():
            self.db.execute(
                "UPDATE flows SET catchup_from_at = ? WHERE flow_id = ?", [iso(at), flow_id]
            )

    def set_last_scheduled(self, flow_id: str, at: datetime) -> None:
        with self._write():
            self.db.execute(
                "UPDATE flows SET last_scheduled_at = ? WHERE flow_id = ?", [iso(at), flow_id]
            )

    def run(self, run_id: int) -> dict[str, Any]:
        row = self._one("SELECT * FROM runs WHERE run_id = ?", [run_id])
        if row is None:
            raise NotFoundError(f"no run with id {run_id}")
        return row

    def runs_with_ids(self, run_ids: Sequence[int]) -> list[dict[str, Any]]:
        if not run_ids:
            return []
        marks = ",".join("?" * len(run_ids))
        return self._rows(f"SELECT * FROM runs WHERE run_id IN ({marks})", list(run_ids))

    def runs_in_states(self, states: Iterable[RunState]) -> list[dict[str, Any]]:
        """Runs in these states, oldest first; queued and running ones through their own index
        (what the daemon reads at every tick)."""
        values = [s.value for s in states]
        marks = ",".join("?" * len(values))
        if set(values) <= _ACTIVE_RUN_STATES:
            source = f"runs INDEXED BY runs_active WHERE {ACTIVE_RUNS} AND"
        else:
            source = "runs WHERE"
        return self._rows(
            f"SELECT * FROM {source} state IN ({marks}) ORDER BY logical_date, run_id", values
        )

    def active_run_counts(self) -> dict[str, int]:
        """flow id -> how many of its runs are queued or running (one indexed query)."""
        rows = self.conn.execute(
            f"""SELECT flow_id, count(*) FROM runs INDEXED BY runs_active WHERE {ACTIVE_RUNS}
               GROUP BY flow_id"""
        )
        return {flow_id: count for flow_id, count in rows}

    def runs_between(self, flow_id: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Runs of a flow whose logical date is in [start, end)."""
        return self._rows(
            """SELECT * FROM runs WHERE flow_id = ? AND logical_date >= ? AND logical_date < ?
               ORDER BY logical_date""",
            [flow_id, iso(start), iso(end)],
        )

    def run_states_between(
        self, flow_id: str, start: datetime, end: datetime
    ) -> list[tuple[str, str]]:
        """(logical date, state) of a flow's runs in [start, end): what a wait for it reads at
        every tick, so no more than that."""
        rows = self.conn.execute(
            """SELECT logical_date, state FROM runs WHERE flow_id = ? AND logical_date >= ?
               AND logical_date < ?""",
            [flow_id, iso(start), iso(end)],
        )
        return [(row[0], row[1]) for row in rows]

    def recent_runs(self, flow_id: str, limit: int) -> list[dict[str, Any]]:
        return self._rows(
            "SELECT * FROM runs WHERE flow_id = ? ORDER BY logical_date DESC LIMIT ?",
            [flow_id, limit],
        )

    def previous_run(self, flow_id: str, logical_date: str) -> dict[str, Any] | None:
        """The flow's run just before this logical date (any run type), or None: what
        depends_on_past looks at (the unique (flow_id, logical_date) index answers it)."""
        return self._one(
            """SELECT * FROM runs WHERE flow_id = ? AND logical_date < ?
               ORDER BY logical_date DESC LIMIT 1""",
            [flow_id, logical_date],
        )

    def latest_runs(self) -> dict[str, dict[str, Any]]:
        """The newest run of every flow, one indexed lookup per flow."""
        rows = self._rows(
            """SELECT r.* FROM flows f JOIN runs r ON r.run_id = (
                   SELECT run_id FROM runs WHERE flow_id = f.flow_id
                   ORDER BY logical_date DESC LIMIT 1)"""
        )
        return {r["flow_id"]: r for r in rows}

    def set_run_state(self, run_id: int, state: RunState, at: datetime) -> None:
        if state is RunState.RUNNING:
            sql, params = (
                "state = ?, started_at = COALESCE(started_at, ?), ended_at = NULL",
                [iso(at)],
            )
        elif state.is_finished:
            sql, params = "state = ?, ended_at = ?", [iso(at)]
        else:  # queued again (a replay): a wait for another flow counts from now
            sql, params = "state = ?, ended_at = NULL, queued_at = ?", [iso(at)]
        with self._write():
            self.db.execute(
                f"UPDATE runs SET {sql} WHERE run_id = ?", [state.value, *params, run_id]
            )

    # --- task instances -------------------------------------------------------------------
    def tis_of_runs(self, run_ids: Sequence[int]) -> list[dict[str, Any]]:
        if not run_ids:
            return []
        marks = ",".join("?" * len(run_ids))
        return self._rows(f"SELECT * FROM task_instances WHERE run_id IN ({marks})", run_ids)

    def tis_in_states(self, states: Iterable[TaskState]) -> list[dict[str, Any]]:
        """Task instances in these states; active ones (running, waiting to) through their own
        index, so the cost does not grow with history."""
        values = [s.value for s in states]
        marks = ",".join("?" * len(values))
        if set(values) <= _ACTIVE_TI_STATES:
            source = f"task_instances INDEXED BY tis_active WHERE {ACTIVE_TIS} AND"
        else:
            source = "task_instances WHERE"
        return self._rows(f"SELECT * FROM {source} state IN ({marks})", values)

    def ti(self, run_id: int, task_id: str) -> dict[str, Any] | None:
        return self._one(
            "SELECT * FROM task_instances WHERE run_id = ? AND task_id = ?", [run_id, task_id]
        )

    def task_rows(self, run_id: int, task_id: str) -> list[dict[str, Any]]:
        """A task's task instance in a run, or every instance of a mapped task once expanded."""
        return self._rows(
            f"""SELECT * FROM task_instances WHERE (run_id = ? AND task_id = ?)
                OR ({_INSTANCES_WHERE}) ORDER BY map_index""",
            [run_id, task_id, *_instances_params(run_id, task_id)],
        )

    def expand_ti(self, run_id: int, task_id: str, count: int) -> list[dict[str, Any]]:
        """Replace a mapped task's placeholder (still `none`) by `count` instances `task[i]`,
        in one transaction; returns them ([] if the placeholder is not there or not `none`).
        They keep its try number, so a re-expansion after a replay writes new logs."""
        with self._write():
            row = self._one(
                "SELECT * FROM task_instances WHERE run_id = ? AND task_id = ? AND state = 'none'",
                [run_id, task_id],
            )
            if row is None:
                return []
            self.db.execute(
                "DELETE FROM task_instances WHERE run_id = ? AND task_id = ?", [run_id, task_id]
            )
            rows = [
                {**row, "task_id": instance_id(task_id, i), "map_index": i} for i in range(count)
            ]
            columns = list(row)
            self.conn.executemany(
                f"""INSERT INTO task_instances ({", ".join(columns)})
                    VALUES ({", ".join("?" * len(columns))})""",
                [[r[c] for c in columns] for r in rows],
            )
        return rows

    def _collapse(self, run_id: int, task_id: str, retries: int) -> int:
        """A mapped task replayed as a whole: its instances (and their XComs) give way to a
        placeholder `none` again, so the next expansion reads the list anew. Returns how many
        instances there were."""
        where = _INSTANCES_WHERE
        params = _instances_params(run_id, task_id)
        row = self._one(
            f"""SELECT count(*) AS n, max(try_number) AS tries, min(task_id) AS pick
                FROM task_instances WHERE {where}""",
            params,
        )
        if not row or not row["n"]:
            return 0
        first = self.ti(run_id, row["pick"])
        assert first is not None
        self.db.execute("DELETE FROM xcom WHERE run_id = ? AND substr(task_id, 1, ?) = ?", params)
        self.db.execute(f"DELETE FROM task_instances WHERE {where}", params)
        self._insert_tis(
            run_id,
            first["flow_id"],
            first["logical_date"],
            [
                {
                    "task_id": task_id,
                    "retries": retries,
                    "pool": first["pool"],
                    "priority": first["priority"],
                }
            ],
        )
        self.db.execute(
            "UPDATE task_instances SET try_number = ?, max_tries = ? WHERE run_id = ? AND task_id = ?",
            [row["tries"], row["tries"] + retries + 1, run_id, task_id],
        )
        return int(row["n"])

    def update_ti(
        self,
        run_id: int,
        task_id: str,
        *,
        expect_state: TaskState | Iterable[TaskState] | None = None,
        expect_try: int | None = None,
        **fields: Any,
    ) -> bool:
        """Change a TI in one transaction if it is still in the expected state and try (a
        compare-and-set, so a CLI mark and a task's end cannot overwrite each other)."""
        values = {k: (v.value if isinstance(v, TaskState) else v) for k, v in fields.items()}
        sets = ", ".join(f"{k} = ?" for k in values)
        where, params = "run_id = ? AND task_id = ?", [run_id, task_id]
        if expect_state is not None:
            expected = [expect_state] if isinstance(expect_state, TaskState) else list(expect_state)
            where += f" AND state IN ({','.join('?' * len(expected))})"
            params += [s.value for s in expected]
        if expect_try is not None:
            where += " AND try_number = ?"
            params.append(expect_try)
        sql, args = f"UPDATE task_instances SET {sets} WHERE {where}", [*values.values(), *params]
        if self.conn.in_transaction:  # the daemon's tick: one statement is atomic by itself
            return self.conn.execute(sql, args).rowcount == 1
        with self._write():
            cursor = self.db.execute(sql, args)
        return cursor.rowcount == 1

    # --- the CLI: listings and repairs ---------------------------------------------------
    def runs_of_flow(
        self,
        flow_id: str,
        *,
        states: Iterable[RunState] = (),
        since: datetime | None = None,
        limit: int | None = None,
        before: datetime | None = None,
    ) -> list[dict[str, Any]]:
        """A flow's runs, newest first, filtered by state and logical date (indexed); `before`
        (excluded) pages back through older runs."""
        where, params = ["flow_id = ?"], [flow_id]
        values: list[str] = [s.value for s in states]
        if values:
            where.append(f"state IN ({','.join('?' * len(values))})")
            params += values
        if since is not None:
            where.append("logical_date >= ?")
            params.append(since.astimezone(UTC).isoformat())
        if before is not None:
            where.append("logical_date < ?")
            params.append(before.astimezone(UTC).isoformat())
        return self._rows(
            f"SELECT * FROM runs WHERE {' AND '.join(where)} ORDER BY logical_date DESC LIMIT ?",
            [*params, -1 if limit is None else limit],
        )

    def recent_state_counts(self, per_flow: int) -> dict[str, dict[str, int]]:
        """flow id -> {run state: count} over each flow's `per_flow` newest runs, one query."""
        rows = self._rows(
            """SELECT f.flow_id, r.state, count(*) AS n FROM flows f JOIN runs r
               ON r.run_id IN (SELECT run_id FROM runs WHERE flow_id = f.flow_id
                               ORDER BY logical_date DESC LIMIT ?)
               GROUP BY f.flow_id, r.state""",
            [per_flow],
        )
        counts: dict[str, dict[str, int]] = {}
        for row in rows:
            counts.setdefault(row["flow_id"], {})[row["state"]] = row["n"]
        return counts

    def recent_run_states(self, per_flow: int) -> dict[str, list[dict[str, Any]]]:
        """flow id -> its `per_flow` newest runs (id, logical date, state), newest first, in
        one query (the web view's squares of recent runs)."""
        rows = self._rows(
            """SELECT r.flow_id, r.run_id, r.logical_date, r.state FROM flows f JOIN runs r
               ON r.run_id IN (SELECT run_id FROM runs WHERE flow_id = f.flow_id
                               ORDER BY logical_date DESC LIMIT ?)
               ORDER BY r.flow_id, r.logical_date DESC""",
            [per_flow],
        )
        found: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            found.setdefault(row.pop("flow_id"), []).append(row)
        return found

    # --- monitoring: bounded aggregates for /metrics ------------------------------------------
    def unfinished_run_counts(self) -> list[dict[str, Any]]:
        """(flow, state, n) of the runs queued or running now, through the active runs' index."""
        return self._rows(
            f"""SELECT flow_id, state, count(*) AS n FROM runs INDEXED BY runs_active
                WHERE {ACTIVE_RUNS} GROUP BY state, flow_id"""
        )

    def runs_ended_since(self, at: datetime) -> list[dict[str, Any]]:
        """(flow, state, n) of the runs that finished since `at`, among those whose logical date
        is at most a day older than `at` (a backfill of old dates is not counted): one seek per
        flow in the (flow, state, date) index, not the whole history."""
        return self._rows(
            """SELECT flow_id, state, count(*) AS n FROM runs
               WHERE flow_id IN (SELECT flow_id FROM flows) AND logical_date >= ?
               AND state IN ('success', 'failed') AND ended_at >= ? GROUP BY flow_id, state""",
            [iso(at - timedelta(days=1)), iso(at)],
        )

    def unfinished_ti_counts(self) -> list[dict[str, Any]]:
        """(flow, state, pool, n) of the task instances not finished yet: the active ones through
        their own index, those still `none` through the active runs: as many rows as there is
        work waiting or running, not as history."""
        return self._rows(
            f"""SELECT flow_id, state, pool, count(*) AS n FROM task_instances
                INDEXED BY tis_active WHERE {ACTIVE_TIS} GROUP BY flow_id, state, pool
                UNION ALL
                SELECT t.flow_id, t.state, t.pool, count(*) AS n
                FROM (SELECT run_id FROM runs INDEXED BY runs_active WHERE {ACTIVE_RUNS}) AS r
                JOIN task_instances AS t ON t.run_id = r.run_id
                WHERE t.state = 'none' GROUP BY t.flow_id, t.state, t.pool"""
        )

    def tis_ended_since(self, at: datetime) -> list[dict[str, Any]]:
        """(flow, state, duration) of the task instances that finished since `at`, among those
        whose logical date is at most a day older than `at` (as runs_ended_since): one seek per
        flow in the (flow, date) index, not the whole history."""
        return self._rows(
            """SELECT flow_id, state, duration_s FROM task_instances
               WHERE flow_id IN (SELECT flow_id FROM flows) AND logical_date >= ?
               AND state IN ('success', 'failed', 'upstream_failed', 'skipped') AND end_at >= ?""",
            [iso(at - timedelta(days=1)), iso(at)],
        )

    def scheduled_runs_started_since(self, at: datetime) -> list[dict[str, Any]]:
        """(flow, logical date, start) of the scheduled runs that started since `at`: a scheduled
        run's logical date is its fire time, so start minus logical date is the start latency.
        Bounded by the (flow, date) key: only runs of recent logical dates are read."""
        return self._rows(
            """SELECT flow_id, logical_date, started_at FROM runs
               WHERE flow_id IN (SELECT flow_id FROM flows) AND logical_date >= ?
               AND run_type = 'scheduled' AND started_at >= ?""",
            [iso(at - timedelta(days=1)), iso(at)],
        )

    def recent_task_failures(self, limit: int) -> list[dict[str, Any]]:
        """The task instances that failed last, newest first."""
        return self._rows(
            """SELECT * FROM task_instances INDEXED BY tis_failed_by_end WHERE state = 'failed'
               ORDER BY end_at DESC LIMIT ?""",
            [limit],
        )

    def clear_tis(
        self,
        selection: Mapping[int, Mapping[str, int]],
        at: datetime,
        only_states: Iterable[TaskState] = (),
    ) -> int:
        """`cronflow replay`: put task instances back to `none` so the daemon runs them again,
        without their XComs. `selection` maps run id -> {task id: the task's retries}. The try
        number stays (the next try gets a new log) and each gets its retries again; a finished
        run goes back to queued. One transaction for everything; returns how many task instances changed."""
        changed = 0
        with self._write():
            for run_id, retries in selection.items():
                cleared = self._clear(run_id, retries, only_states)
                if cleared:
                    self._settle_run(run_id, at)
                changed += cleared
        return changed

    def _clear(
        self, run_id: int, retries: Mapping[str, int], only_states: Iterable[TaskState]
    ) -> int:
        state_filter, extra = "", [s.value for s in only_states]
        if extra:
            state_filter = f" AND state IN ({','.join('?' * len(extra))})"
        changed = 0
        for task_id, task_retries in retries.items():
            cursor = self.db.execute(
                f"""UPDATE task_instances SET state = 'none',
                    max_tries = try_number + ? + 1, next_try_at = NULL, reason = NULL,
                    exit_code = NULL, pid = NULL, start_at = NULL, end_at = NULL,
                    duration_s = NULL WHERE run_id = ? AND task_id = ?{state_filter}""",
                [task_retries, run_id, task_id, *extra],
            )
            if cursor.rowcount:  # as Airflow's clear: the next try starts without old XComs
                self.db.execute(
                    "DELETE FROM xcom WHERE run_id = ? AND task_id = ?", [run_id, task_id]
                )
            elif not extra:  # no row of that name: a mapped task's instances, if it has any
                changed += self._collapse(run_id, task_id, task_retries)
            changed += cursor.rowcount
        return changed

    def mark_tis(
        self,
        run_id: int,
        task_ids: Iterable[str],
        state: TaskState,
        at: datetime,
        *,
        except_states: Iterable[TaskState] = (),
        run_state: RunState | None = None,
        clear: Mapping[str, int] | None = None,
    ) -> int:
        """`cronflow mark`: set task instances to a final state, then the run to `run_state`
        or to what its task instances now say. `clear` (task id -> retries): task instances
        to put back to `none` if they are upstream_failed, so the daemon decides them again.
        One transaction; returns how many were marked."""
        ids, skip = list(task_ids), [s.value for s in except_states]
        where = f"run_id = ? AND task_id IN ({','.join('?' * len(ids))})"
        if skip:
            where += f" AND state NOT IN ({','.join('?' * len(skip))})"
        with self._write():
            cursor = self.db.execute(
                f"""UPDATE task_instances SET state = ?, end_at = ?, next_try_at = NULL,
                    reason = ? WHERE {where}""",
                [state.value, iso(at), f"marked {state.value} by hand", run_id, *ids, *skip],
            )
            if clear:
                self._clear(run_id, clear, [TaskState.UPSTREAM_FAILED])
            if run_state is not None:
                self.set_run_state(run_id, run_state, at)
            else:
                self._settle_run(run_id, at)
        return cursor.rowcount

    def _settle_run(self, run_id: int, at: datetime) -> None:
        """After a hand-made change: a run whose task instances all finished takes their
        outcome; a finished run with work left goes back to queued; a live run stays as is."""
        run = self.run(run_id)
        states = [
            TaskState(r["state"])
            for r in self._rows("SELECT state FROM task_instances WHERE run_id = ?", [run_id])
        ]
        outcome = run_outcome(states)
        if outcome is not None and outcome != run["state"]:
            self.set_run_state(run_id, outcome, at)
        elif outcome is None and RunState(run["state"]).is_finished:
            self.set_run_state(run_id, RunState.QUEUED, at)

    def copy_variables_and_connections(self, target: Store) -> None:
        """Into a scratch store (`cronflow test`), so tasks see the same variables and
        connections as under the daemon."""
        with target._write():
            for table in ("variables", "connections"):
                rows = self._rows(f"SELECT * FROM {table}")
                if rows:
                    target.db.table(table).insert_all(rows, replace=True)

    # --- retention ------------------------------------------------------------------------
    def finished_runs_before(
        self, cutoff: datetime, limit: int, after_run_id: int = 0
    ) -> list[dict[str, Any]]:
        return self._rows(
            # By when the run ended, not its logical date: a backfill of 2019 is not history yet.
            """SELECT run_id, flow_id, logical_date FROM runs
               WHERE state IN ('success', 'failed') AND ended_at < ? AND run_id > ?
               ORDER BY run_id LIMIT ?""",
            [iso(cutoff), after_run_id, limit],
        )

    def delete_runs(self, run_ids: Sequence[int]) -> None:
        """Delete runs with their task instances and XComs (ON DELETE CASCADE)."""
        marks = ",".join("?" * len(run_ids))
        with self._write():
            self.db.execute(f"DELETE FROM runs WHERE run_id IN ({marks})", list(run_ids))

    def active_log_paths(self) -> set[str]:
        """Log files of attempts that may still be writing."""
        rows = self._rows(
            f"""SELECT log_path FROM task_instances INDEXED BY tis_active WHERE {ACTIVE_TIS}
                AND state IN ('queued', 'running') AND log_path IS NOT NULL"""
        )
        return {r["log_path"] for r in rows}

    def backup(self, target: Path) -> None:
        """An online, consistent copy of the database (SQLite's backup API), owner-only."""
        if target.is_dir():
            raise InvalidInputError(
                f"{target} is a directory: name the copy's file, e.g. {target / 'cronflow.db'}"
            )
        if target.resolve() == self.path.resolve():
            raise InvalidInputError(f"{target} is the live database itself; choose another file")
        if not target.parent.is_dir():
            raise InvalidInputError(
                f"cannot write {target}: directory {target.parent} does not exist"
            )
        partial = target.with_name(target.name + ".partial")
        os.close(os.open(partial, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600))
        destination = sqlite3.connect(partial)
        try:
            self.conn.backup(destination)
        except sqlite3.Error as exc:
            partial.unlink(missing_ok=True)
            code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
            if code in _SQLITE_ACTIONS:  # the copy's side: its disk, its directory
                raise StoreAccessError(target, str(exc), _SQLITE_ACTIONS[code]) from exc
            raise
        finally:
            destination.close()
        os.replace(partial, target)

    def integrity_problems(self) -> list[str]:
        """What SQLite's quick_check finds, one problem a line (none: the database is sound)."""
        rows = self.conn.execute("PRAGMA quick_check").fetchall()
        lines = [line for row in rows for line in str(row[0]).splitlines()]
        return [line for line in lines if line != "ok" and not line.startswith("*** ")]

    # --- variables, xcom ------------------------------------------------------------------
    def variables(self) -> dict[str, str]:
        return {r["name"]: r["value"] for r in self._rows("SELECT name, value FROM variables")}

    def set_variable(self, name: str, value: str, is_secret: bool = False) -> None:
        self._secrets_epoch += 1
        with self._write():
            self.db.table("variables").upsert(
                {
                    "name": name,
                    "value": value,
                    "is_secret": int(is_secret),
                    "updated_at": iso(_utcnow()),
                },
                pk="name",
            )

    def variable_rows(self) -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM variables ORDER BY name")

    def variable(self, name: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM variables WHERE name = ?", [name])

    def delete_variable(self, name: str) -> bool:
        self._secrets_epoch += 1
        with self._write():
            cursor = self.db.execute("DELETE FROM variables WHERE name = ?", [name])
        return cursor.rowcount == 1

    def connections(self) -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM connections ORDER BY conn_id")

    def connection(self, conn_id: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM connections WHERE conn_id = ?", [conn_id])

    def set_connection(
        self,
        conn_id: str,
        conn_type: str,
        host: str | None,
        port: int | None,
        login: str | None,
        password: str | None,
        extra: dict[str, Any],
    ) -> None:
        self._secrets_epoch += 1
        with self._write():
            self.db.table("connections").upsert(
                {
                    "conn_id": conn_id,
                    "conn_type": conn_type,
                    "host": host,
                    "port": port,
                    "login": login,
                    "password": password,
                    "extra": json.dumps(extra),
                    "updated_at": iso(_utcnow()),
                },
                pk="conn_id",
            )

    def delete_connection(self, conn_id: str) -> bool:
        self._secrets_epoch += 1
        with self._write():
            cursor = self.db.execute("DELETE FROM connections WHERE conn_id = ?", [conn_id])
        return cursor.rowcount == 1

    def secret_values(self) -> list[str]:
        """Values that must never be shown: secret variables and connection passwords.
        Cached until another process commits or this one changes a variable or connection:
        the daemon asks before every attempt."""
        key = (int(self.conn.execute("PRAGMA data_version").fetchone()[0]), self._secrets_epoch)
        if self._secrets_cache is None or self._secrets_cache[0] != key:
            rows = self._rows(
                """SELECT value FROM variables WHERE is_secret = 1
                   UNION SELECT password FROM connections WHERE password IS NOT NULL
                   AND password != ''"""
            )
            self._secrets_cache = (key, [r["value"] for r in rows])
        return list(self._secrets_cache[1])

    def first_poke_at(self, run_id: int, task_id: str, now: datetime) -> str:
        """A sensor's first poke of its current try: recorded now if it is the first."""
        with self._write():
            self.db.execute(
                """UPDATE task_instances SET first_poke_at = COALESCE(first_poke_at, ?)
                   WHERE run_id = ? AND task_id = ?""",
                [iso(now), run_id, task_id],
            )
            row = self._one(
                "SELECT first_poke_at FROM task_instances WHERE run_id = ? AND task_id = ?",
                [run_id, task_id],
            )
        return row["first_poke_at"] if row and row["first_poke_at"] else iso(now) or ""

    def xcom_task_ids(self, run_id: int) -> list[str]:
        rows = self._rows(
            "SELECT DISTINCT task_id FROM xcom WHERE run_id = ? AND key = 'return_value'", [run_id]
        )
        return [r["task_id"] for r in rows]

    def push_xcom(self, run_id: int, task_id: str, key: str, value: Any) -> None:
        with self._write():
            self.db.table("xcom").upsert(
                {
                    "run_id": run_id,
                    "task_id": task_id,
                    "key": key,
                    "value": json.dumps(value),
                    "created_at": iso(_utcnow()),
                },
                pk=("run_id", "task_id", "key"),
            )

    def pull_xcom(self, run_id: int, task_id: str, key: str = "return_value") -> Any:
        row = self._one(
            "SELECT value FROM xcom WHERE run_id = ? AND task_id = ? AND key = ?",
            [run_id, task_id, key],
        )
        return None if row is None else json.loads(row["value"])

    def pull_mapped_xcoms(self, run_id: int, task_id: str, key: str = "return_value") -> Any:
        """A mapped task's values under `key`, one per instance that has one, in item order
        (None if none has): what the task after it reads as the mapped task's value."""
        rows = self._rows(
            """SELECT x.value FROM task_instances AS t JOIN xcom AS x
                ON x.run_id = t.run_id AND x.task_id = t.task_id AND x.key = ?
                WHERE t.run_id = ? AND t.map_index IS NOT NULL AND substr(t.task_id, 1, ?) = ?
                ORDER BY t.map_index""",
            [key, *_instances_params(run_id, task_id)],
        )
        return [json.loads(r["value"]) for r in rows] or None

    def xcom_values(self, run_ids: Sequence[int], task_id: str, key: str) -> dict[int, Any]:
        """run id -> one task's value under `key`, for those of the runs that have it."""
        marks = ",".join("?" * len(run_ids))
        rows = self._rows(
            f"SELECT run_id, value FROM xcom WHERE run_id IN ({marks}) AND task_id = ? AND key = ?",
            [*run_ids, task_id, key],
        )
        return {r["run_id"]: json.loads(r["value"]) for r in rows}

    def xcom_rows(self, run_ids: Sequence[int], task_id: str | None = None) -> list[dict[str, Any]]:
        """Every XCom of the runs (of one task if given, every instance of a mapped one), its
        value as JSON text."""
        marks = ",".join("?" * len(run_ids))
        where, params = "", []
        if task_id is not None:
            where = " AND (task_id = ? OR substr(task_id, 1, ?) = ?)"
            params = [task_id, len(task_id) + 1, f"{task_id}["]
        return self._rows(
            f"SELECT run_id, task_id, key, value FROM xcom WHERE run_id IN ({marks}){where}",
            [*run_ids, *params],
        )

    # --- the daemon's own record ----------------------------------------------------------
    def record_daemon(self, pid: int, host: str, at: datetime) -> None:
        with self._write():
            self.db.table("daemon").upsert(
                {"id": 1, "pid": pid, "host": host, "started_at": iso(at), "heartbeat_at": iso(at)},
                pk="id",
            )

    def heartbeat(self, at: datetime) -> None:
        with self._write():
            self.db.execute("UPDATE daemon SET heartbeat_at = ? WHERE id = 1", [iso(at)])

    def daemon_record(self) -> dict[str, Any] | None:
        return self._one("SELECT * FROM daemon WHERE id = 1")

    # --- deadlines (cronflow.deadlines) -----------------------------------------------------
    def deadline_cursors(self) -> dict[tuple[str, str], str]:
        """(flow id, task id or '') -> the fire time up to which its deadlines were checked."""
        rows = self.conn.execute("SELECT flow_id, task_id, checked_until FROM deadline_checks")
        return {(row[0], row[1]): row[2] for row in rows}

    def record_deadline_checks(
        self,
        cursors: Mapping[tuple[str, str], datetime],
        misses: Iterable[Mapping[str, Any]] = (),
    ) -> None:
        """Move check cursors and record the misses found, in one transaction: a fire time
        is checked once, even across a crash."""
        with self._write():
            self.conn.executemany(
                """INSERT INTO deadline_misses (flow_id, task_id, fire_at, deadline_at,
                   missed_at, run_id, message) VALUES (:flow_id, :task_id, :fire_at,
                   :deadline_at, :missed_at, :run_id, :message) ON CONFLICT DO NOTHING""",
                list(misses),
            )
            self.conn.executemany(
                """INSERT INTO deadline_checks (flow_id, task_id, checked_until) VALUES (?, ?, ?)
                   ON CONFLICT DO UPDATE SET checked_until = excluded.checked_until""",
                [(flow_id, task_id, iso(at)) for (flow_id, task_id), at in cursors.items()],
            )

    def forget_deadline_checks(self, keys: Iterable[tuple[str, str]]) -> None:
        """Deadlines no longer set: if set again, they are checked from then on."""
        with self._write():
            self.conn.executemany(
                "DELETE FROM deadline_checks WHERE flow_id = ? AND task_id = ?", list(keys)
            )

    def unalerted_deadline_misses(self) -> list[dict[str, Any]]:
        """Misses whose alert has not started yet, oldest fire time first."""
        return self._rows(
            """SELECT * FROM deadline_misses WHERE alerted_at IS NULL
               ORDER BY flow_id, task_id, fire_at"""
        )

    def set_deadline_alerted(
        self, flow_id: str, task_id: str, fire_ats: Iterable[str], at: datetime
    ) -> None:
        with self._write():
            self.conn.executemany(
                """UPDATE deadline_misses SET alerted_at = ?
                   WHERE flow_id = ? AND task_id = ? AND fire_at = ?""",
                [(iso(at), flow_id, task_id, fire_at) for fire_at in fire_ats],
            )

    def deadline_miss(self, flow_id: str, task_id: str, fire_at: str) -> dict[str, Any] | None:
        return self._one(
            "SELECT * FROM deadline_misses WHERE flow_id = ? AND task_id = ? AND fire_at = ?",
            [flow_id, task_id, fire_at],
        )

    def deadline_misses_between(
        self, flow_id: str, start: datetime, end: datetime
    ) -> list[dict[str, Any]]:
        """The misses of a flow's fire times in [start, end), run first, then tasks."""
        return self._rows(
            """SELECT * FROM deadline_misses WHERE flow_id = ? AND fire_at >= ? AND fire_at < ?
               ORDER BY fire_at, task_id""",
            [flow_id, iso(start), iso(end)],
        )

    def open_deadline_misses(self) -> dict[str, dict[str, Any]]:
        """flow id -> its newest miss, for flows where it still holds: no run at or after its
        fire time has succeeded since (nor, for a task's miss, that task)."""
        rows = self._rows(
            """SELECT m.* FROM flows f JOIN deadline_misses m ON m.rowid = (
                   SELECT rowid FROM deadline_misses WHERE flow_id = f.flow_id
                   ORDER BY fire_at DESC LIMIT 1)
               WHERE NOT EXISTS (SELECT 1 FROM runs r WHERE r.flow_id = m.flow_id
                                 AND r.state = 'success' AND r.logical_date >= m.fire_at)
               AND NOT EXISTS (SELECT 1 FROM task_instances t WHERE m.task_id != ''
                               AND t.flow_id = m.flow_id AND t.logical_date = m.fire_at
                               AND t.task_id = m.task_id AND t.state IN ('success', 'skipped'))"""
        )
        return {row["flow_id"]: row for row in rows}

    def recent_deadline_misses(self, limit: int) -> list[dict[str, Any]]:
        """The newest misses, with the state of their run now (None: no run)."""
        return self._rows(
            """SELECT m.*, r.state AS run_state FROM deadline_misses m LEFT JOIN runs r
               ON r.flow_id = m.flow_id AND r.logical_date = m.fire_at
               ORDER BY m.missed_at DESC LIMIT ?""",
            [limit],
        )

    def delete_deadline_misses_before(self, cutoff: datetime) -> int:
        with self._write():
            cursor = self.db.execute(
                "DELETE FROM deadline_misses WHERE missed_at < ?", [iso(cutoff)]
            )
        return cursor.rowcount

    # --- the audit trail (cronflow.audit) ------------------------------------------------
    def record_audit(
        self,
        action: str,
        flow_id: str | None,
        summary: str,
        details: Mapping[str, Any],
        actor: Actor | None = None,
    ) -> None:
        """One entry of the audit trail; call it inside the change's transaction (atomic)."""
        from cronflow.audit import local_actor

        who = actor or local_actor()
        with self._write():
            self.db.execute(
                """INSERT INTO audit_log (at, user, face, action, flow_id, summary, details)
                   VALUES (?, ?, ?, ?, ?, ?, ?)""",
                [
                    iso(_utcnow()),
                    who.user,
                    who.face,
                    action,
                    flow_id,
                    summary,
                    json.dumps(dict(details)),
                ],
            )

    def audit_entries(
        self, flow_id: str | None, since: datetime | None, limit: int
    ) -> list[dict[str, Any]]:
        """Newest first, of one flow or of all (indexed by time, and by flow and time)."""
        where: list[str] = []
        params: list[Any] = []
        if flow_id is not None:
            where.append("flow_id = ?")
            params.append(flow_id)
        if since is not None:
            where.append("at >= ?")
            params.append(iso(since))
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        return self._rows(
            f"SELECT * FROM audit_log {clause} ORDER BY at DESC, entry_id DESC LIMIT ?",
            [*params, limit],
        )

    def delete_audit_before(self, cutoff: datetime) -> int:
        with self._write():
            cursor = self.db.execute("DELETE FROM audit_log WHERE at < ?", [iso(cutoff)])
        return cursor.rowcount


def flow_timing(spec: Mapping[str, Any]) -> str:
    """What decides when a flow fires: a stored next fire time holds only with the same one."""
    return json.dumps([spec[k] for k in ("schedule", "timezone", "start_at", "end_at")])


def _utcnow() -> datetime:
    """Wall-clock stamps for bookkeeping columns only; scheduling always uses the injected clock."""
    return datetime.now(UTC)


def preload_writer() -> None:
    """Import what a store's first write needs, sqlite-utils and its plugins (a tenth of a
    second): the fork server (cronflow.forkserver) pays it once for all its attempts."""
    from sqlite_utils import Database

    Database(memory=True).close()

"""The state store: one SQLite file shared by the daemon and the CLI.

The only importer of sqlite_utils. WAL lets the CLI read while the daemon writes; every state
change is one short IMMEDIATE transaction, so a crash at any instant leaves the previous or the
next consistent state, never half of one. Datetimes are stored as UTC ISO 8601 text.
"""

from __future__ import annotations

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
from cronflow.errors import CronflowError, NotFoundError, StoreError
from cronflow.states import RunState, RunType, TaskState
from cronflow.timeparse import iso

if TYPE_CHECKING:
    from sqlite_utils import Database
    from sqlite_utils.migrations import Migrations

BUSY_TIMEOUT_MS = 30_000

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


SCHEMA_VERSION = len(MIGRATIONS)


class RunExistsError(CronflowError):
    """A run already exists for that flow and logical date."""


class Store:
    """Typed access to the state database. One instance per process; not thread-safe."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            # Owner-only from the first byte: the database holds connection secrets.
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        try:
            conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open the state database {path}: {exc}") from None
        self.conn = conn
        self._secrets_epoch = 0
        self._secrets_cache: tuple[tuple[int, int], list[str]] | None = None
        self._migrate()

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
            with self.db.atomic():
                yield self.db
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

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
            self.db["flow_files"].upsert(
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
            """SELECT flow_id, paused, last_scheduled_at, error, next_fire_from, next_fire_at
               FROM flows"""
        )

    def flow(self, flow_id: str) -> dict[str, Any]:
        row = self._one("SELECT * FROM flows WHERE flow_id = ?", [flow_id])
        if row is None:
            known = ", ".join(r["flow_id"] for r in self._rows("SELECT flow_id FROM flows"))
            raise NotFoundError(f"unknown flow '{flow_id}' (known: {known or 'none'})")
        return row

    def set_paused(self, flow_id: str, paused: bool) -> None:
        self.flow(flow_id)
        with self._write():
            self.db.execute("UPDATE flows SET paused = ? WHERE flow_id = ?", [int(paused), flow_id])

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
    ) -> int:
        """Create a queued run and its task instances in one transaction. With advance_cursor,
        the flow's last scheduled slot moves to this run's date in the same transaction, so a
        crash can neither lose nor duplicate a scheduled run."""
        logical = iso(logical_at)
        with self._write():
            try:
                cursor = self.db.execute(
                    """INSERT INTO runs (flow_id, logical_date, run_type, state, conf,
                       data_interval_start, data_interval_end, created_at)
                       VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
                    [
                        flow_id,
                        logical,
                        run_type.value,
                        RunState.QUEUED.value,
                        json.dumps(conf or {}),
                        iso(interval[0]),
                        iso(interval[1]),
                        iso(_utcnow()),
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
        self.conn.executemany(
            """INSERT OR IGNORE INTO task_instances (run_id, task_id, flow_id, logical_date, state,
               max_tries, pool, priority) VALUES (?, ?, ?, ?, 'none', ?, ?, ?)""",
            [
                (run_id, t["task_id"], flow_id, logical, t["retries"] + 1, t["pool"], t["priority"])
                for t in tasks
            ],
        )

    def add_missing_tis(self, run: dict[str, Any], tasks: Iterable[dict[str, Any]]) -> None:
        """Tasks added to a flow file after its run was created join the run."""
        with self._write():
            self._insert_tis(run["run_id"], run["flow_id"], run["logical_date"], tasks)

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
        values = [s.value for s in states]
        marks = ",".join("?" * len(values))
        return self._rows(
            f"SELECT * FROM runs WHERE state IN ({marks}) ORDER BY logical_date, run_id", values
        )

    def runs_between(self, flow_id: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Runs of a flow whose logical date is in [start, end)."""
        return self._rows(
            """SELECT * FROM runs WHERE flow_id = ? AND logical_date >= ? AND logical_date < ?
               ORDER BY logical_date""",
            [flow_id, iso(start), iso(end)],
        )

    def recent_runs(self, flow_id: str, limit: int) -> list[dict[str, Any]]:
        return self._rows(
            "SELECT * FROM runs WHERE flow_id = ? ORDER BY logical_date DESC LIMIT ?",
            [flow_id, limit],
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
        else:
            sql, params = "state = ?, ended_at = NULL", []
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
        """Task instances in the given (live) states, through the state index: with statistics
        saying nearly every row is success, SQLite would otherwise scan a million rows (2 s)."""
        values = [s.value for s in states]
        marks = ",".join("?" * len(values))
        return self._rows(
            f"SELECT * FROM task_instances INDEXED BY tis_by_state WHERE state IN ({marks})",
            values,
        )

    def ti(self, run_id: int, task_id: str) -> dict[str, Any] | None:
        return self._one(
            "SELECT * FROM task_instances WHERE run_id = ? AND task_id = ?", [run_id, task_id]
        )

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
        with self._write():
            cursor = self.db.execute(
                f"UPDATE task_instances SET {sets} WHERE {where}", [*values.values(), *params]
            )
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
        """(flow, state, n) of the runs queued or running now, through the (state, flow) index."""
        return self._rows(
            """SELECT flow_id, state, count(*) AS n FROM runs INDEXED BY runs_by_state
               WHERE state IN ('queued', 'running') GROUP BY state, flow_id"""
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
        """(flow, state, pool, n) of the task instances not finished yet, through the state
        index: as many rows as there is work waiting or running, not as history."""
        return self._rows(
            # INDEXED BY: without statistics SQLite would walk the (flow, date) index instead
            """SELECT flow_id, state, pool, count(*) AS n FROM task_instances INDEXED BY tis_by_state
               WHERE state IN ('none', 'scheduled', 'queued', 'running', 'up_for_retry',
                               'up_for_reschedule')
               GROUP BY flow_id, state, pool"""
        )

    def tis_ended_since(self, at: datetime) -> list[dict[str, Any]]:
        """(flow, state, duration) of the task instances that finished since `at`, through the
        (state, end) index."""
        return self._rows(
            """SELECT flow_id, state, duration_s FROM task_instances
               WHERE state IN ('success', 'failed', 'upstream_failed', 'skipped') AND end_at >= ?""",
            [iso(at)],
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
            """SELECT * FROM task_instances WHERE state = 'failed'
               ORDER BY end_at DESC LIMIT ?""",
            [limit],
        )

    def clear_tis(
        self,
        selection: Mapping[int, Mapping[str, int]],
        at: datetime,
        only_states: Iterable[TaskState] = (),
    ) -> int:
        """`cronflow replay`: put task instances back to `none` so the daemon runs them again.
        `selection` maps run id -> {task id: the task's retries}. The try number stays (the next
        try gets a new log) and each gets its retries again; a finished run goes back to
        queued. One transaction for everything; returns how many task instances changed."""
        state_filter, extra = "", [s.value for s in only_states]
        if extra:
            state_filter = f" AND state IN ({','.join('?' * len(extra))})"
        changed = 0
        with self._write():
            for run_id, retries in selection.items():
                before = changed
                for task_id, task_retries in retries.items():
                    cursor = self.db.execute(
                        f"""UPDATE task_instances SET state = 'none',
                            max_tries = try_number + ? + 1, next_try_at = NULL, reason = NULL,
                            exit_code = NULL, pid = NULL, start_at = NULL, end_at = NULL,
                            duration_s = NULL WHERE run_id = ? AND task_id = ?{state_filter}""",
                        [task_retries, run_id, task_id, *extra],
                    )
                    changed += cursor.rowcount
                if changed > before:
                    self._settle_run(run_id, at)
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
    ) -> int:
        """`cronflow mark`: set task instances to a final state, then the run to `run_state`
        or to what its task instances now say. One transaction; returns how many changed."""
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
                    target.db[table].insert_all(rows, replace=True)

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
            "SELECT log_path FROM task_instances WHERE state IN ('queued', 'running') AND log_path IS NOT NULL"
        )
        return {r["log_path"] for r in rows}

    def backup(self, target: Path) -> None:
        """An online, consistent copy of the database (SQLite's backup API), owner-only."""
        partial = target.with_name(target.name + ".partial")
        os.close(os.open(partial, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600))
        destination = sqlite3.connect(partial)
        try:
            self.conn.backup(destination)
        finally:
            destination.close()
        os.replace(partial, target)

    def integrity_problems(self) -> list[str]:
        rows = self.conn.execute("PRAGMA quick_check").fetchall()
        return [row[0] for row in rows if row[0] != "ok"]

    # --- variables, xcom ------------------------------------------------------------------
    def variables(self) -> dict[str, str]:
        return {r["name"]: r["value"] for r in self._rows("SELECT name, value FROM variables")}

    def set_variable(self, name: str, value: str, is_secret: bool = False) -> None:
        self._secrets_epoch += 1
        with self._write():
            self.db["variables"].upsert(
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
            self.db["connections"].upsert(
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
            self.db["xcom"].upsert(
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

    # --- the daemon's own record ----------------------------------------------------------
    def record_daemon(self, pid: int, host: str, at: datetime) -> None:
        with self._write():
            self.db["daemon"].upsert(
                {"id": 1, "pid": pid, "host": host, "started_at": iso(at), "heartbeat_at": iso(at)},
                pk="id",
            )

    def heartbeat(self, at: datetime) -> None:
        with self._write():
            self.db.execute("UPDATE daemon SET heartbeat_at = ? WHERE id = 1", [iso(at)])

    def daemon_record(self) -> dict[str, Any] | None:
        return self._one("SELECT * FROM daemon WHERE id = 1")


def flow_timing(spec: Mapping[str, Any]) -> str:
    """What decides when a flow fires: a stored next fire time holds only with the same one."""
    return json.dumps([spec[k] for k in ("schedule", "timezone", "start_at", "end_at")])


def _utcnow() -> datetime:
    """Wall-clock stamps for bookkeeping columns only; scheduling always uses the injected clock."""
    return datetime.now(UTC)

"""`cronflow doctor`: look over a home and say what is wrong, and what to do about it.

Each check returns Findings (ok, warn or fail); a failure makes the command exit 1. A check that
runs into a cronflow error (a damaged database, a missing flows directory) becomes that check's
failure, with the error's advice, and the other checks still run. Checks only read, except that
opening the store applies pending migrations as any command would. A path that is no home at
all is not diagnosed: the command says so, as every other command does.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cronflow import catalog
from cronflow.config import CONFIG_NAME, Settings, load_settings, require_home
from cronflow.daemon import HEARTBEAT_S
from cronflow.daemonlock import running_daemon_pid
from cronflow.errors import CronflowError, StoreCorruptError
from cronflow.housekeeping import log_files
from cronflow.states import TaskState
from cronflow.store import Store
from cronflow.timeparse import from_iso

LOW_DISK_FAIL_BYTES = 100 * 1024 * 1024
LOW_DISK_WARN_BYTES = 1024 * 1024 * 1024


@dataclass(frozen=True)
class Finding:
    check: str
    status: str  # "ok" | "warn" | "fail"
    detail: str


def diagnose(home: Path) -> list[Finding]:
    """Every check of a home; HomeNotFoundError / HomeAccessError if it is none, or not ours."""
    require_home(home)
    try:
        settings = load_settings(home)
    except CronflowError as exc:
        return [Finding("config", "fail", str(exc))]
    findings = [
        *_home_permissions(settings),
        *_writable(settings),
        Finding("config", "ok", f"{home / CONFIG_NAME} is valid"),
    ]
    try:
        store = Store(settings.db_path)
    except CronflowError as exc:
        return [*findings, Finding("database", "fail", str(exc))]
    try:
        checks: list[tuple[str, Callable[[Settings, Store], list[Finding]]]] = [
            ("database", _database),
            ("daemon", _daemon),
            ("disk", _disk),
            ("stale state", _stale_state),
            ("flows", _flows),
            ("logs", _logs),
            ("broker", _broker),
        ]
        for name, check in checks:
            try:
                findings += check(settings, store)
            except CronflowError as exc:  # e.g. damaged pages met by this check's reads
                findings.append(Finding(name, "fail", str(exc)))
    finally:
        store.close()
    return findings


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _home_permissions(settings: Settings) -> list[Finding]:
    """The home, its config (it may hold the SMTP password), database (connection secrets)
    and flows directory (code the daemon runs) are for their owner only, as `init` makes them."""
    private = (
        settings.home,
        settings.home / CONFIG_NAME,
        settings.db_path,
        settings.flows_dir,
    )
    open_to_others = [p for p in private if p.exists() and _mode(p) & 0o077]
    if open_to_others:
        shown = ", ".join(f"{p} ({oct(_mode(p))})" for p in open_to_others)
        return [
            Finding("permissions", "warn", f"open to others: {shown}; run chmod go-rwx on them")
        ]
    return [
        Finding(
            "permissions",
            "ok",
            f"{settings.home}, its config, database and flows are private to their owner",
        )
    ]


def _writable(settings: Settings) -> list[Finding]:
    """The daemon and every change write the database, its journal beside it, and logs."""
    read_only = [
        p
        for p in (settings.home, settings.db_path, settings.logs_dir)
        if p.exists() and not os.access(p, os.W_OK)
    ]
    if not read_only:
        return []
    shown = ", ".join(str(p) for p in read_only)
    return [
        Finding(
            "permissions",
            "fail",
            f"not writable by you: {shown}; run cronflow as the home's owner, or fix them",
        )
    ]


def _database(settings: Settings, store: Store) -> list[Finding]:
    problems = store.integrity_problems()
    if problems:
        found = f"quick_check found {len(problems)} problem(s), first: {problems[0]}"
        return [Finding("database", "fail", str(StoreCorruptError(settings.db_path, found)))]
    size = settings.db_path.stat().st_size
    return [Finding("database", "ok", f"{settings.db_path}: integrity ok, {size / 1e6:.1f} MB")]


def _daemon(settings: Settings, store: Store) -> list[Finding]:
    pid = running_daemon_pid(settings.home)
    if pid is None:
        return [
            Finding(
                "daemon",
                "fail",
                "not running: start `cronflow daemon` or `cronflow install-service`",
            )
        ]
    record = store.daemon_record()
    beat = from_iso(record["heartbeat_at"]) if record else None
    age = (datetime.now(UTC) - beat).total_seconds() if beat else None
    if age is None or age > 3 * HEARTBEAT_S + 5:
        shown = "never" if age is None else f"{age:.0f}s ago"
        return [
            Finding(
                "daemon",
                "fail",
                f"pid {pid} holds the lock but its last heartbeat was {shown}: is it stuck?",
            )
        ]
    return [Finding("daemon", "ok", f"running, pid {pid}, heartbeat {age:.0f}s ago")]


def _disk(settings: Settings, _store: Store) -> list[Finding]:
    usage = shutil.disk_usage(settings.home)
    text = f"{usage.free / 1e9:.1f} GB free of {usage.total / 1e9:.1f} GB on the home's disk"
    if usage.free < LOW_DISK_FAIL_BYTES:
        return [Finding("disk", "fail", text)]
    if usage.free < LOW_DISK_WARN_BYTES or usage.free < usage.total * 0.05:
        return [Finding("disk", "warn", text)]
    return [Finding("disk", "ok", text)]


def _stale_state(settings: Settings, store: Store) -> list[Finding]:
    findings = []
    if running_daemon_pid(settings.home) is None:
        active = store.tis_in_states([TaskState.QUEUED, TaskState.RUNNING])
        if active:
            findings.append(
                Finding(
                    "stale tasks",
                    "warn",
                    f"{len(active)} task instance(s) marked running with no daemon; the next daemon "
                    "start takes them over (adopts those still running, settles those that "
                    "ended from their exit record, retries or fails those lost)",
                )
            )
        lock = settings.lock_path
        pid_text = lock.read_text().strip() if lock.exists() else ""
        if pid_text.isdigit() and not Path(f"/proc/{pid_text}").exists():
            findings.append(
                Finding(
                    "stale lock",
                    "warn",
                    f"{lock} names pid {pid_text}, which is gone; harmless, the next daemon replaces it",
                )
            )
    return findings or [Finding("stale state", "ok", "no orphaned tasks or stale lock")]


def _flows(settings: Settings, store: Store) -> list[Finding]:
    cat = catalog.sync(store, settings)
    findings = [Finding("flows", "fail", message) for message in sorted(cat.errors.values())]
    if not findings:
        findings.append(Finding("flows", "ok", f"{len(cat.flows)} flow(s) load without error"))
    return findings


def _logs(settings: Settings, _store: Store) -> list[Finding]:
    files = log_files(settings.logs_dir)
    total = sum(p.stat().st_size for p in files if p.exists())
    cap = settings.retention.max_logs_mb * 1024 * 1024
    text = f"{len(files)} task log file(s), {total / 1e6:.1f} MB (cap {settings.retention.max_logs_mb:g} MB)"
    return [Finding("logs", "warn" if cap and total > cap else "ok", text)]


def _broker(settings: Settings, store: Store) -> list[Finding]:
    """executor = "celery": the broker answers and persists what it queues; workers beat; every
    queue tasks wait on has a live worker."""
    if settings.executor != "celery":
        return []
    try:
        import cronflow.celery.farm  # noqa: F401  (only to tell a missing extra)
    except ImportError:
        return [
            Finding("broker", "fail", 'the celery extra is missing: pip install "cronflow[celery]"')
        ]
    from cronflow.overview import farm_overview, unserved_queue_text

    farm = farm_overview(settings, store)
    assert farm is not None  # the executor is celery
    broker = farm["broker"]
    if not broker["reachable"]:
        return [Finding("broker", "fail", f"{broker['url'] or 'no URL'}: {broker['error']}")]
    findings = [Finding("broker", "ok", f"{broker['url']} answers")]
    if not broker.get("append_only"):
        findings.append(
            Finding(
                "broker",
                "warn",
                "Redis runs without appendonly yes: a restart loses queued tasks "
                "(set appendonly yes in redis.conf)",
            )
        )
    live = [w for w in farm["workers"] if w["live"]]
    silent = [w["name"] for w in farm["workers"] if not w["live"]]
    if live:
        served = ", ".join(f"{w['name']} ({','.join(w['queues'])})" for w in live)
        findings.append(Finding("workers", "ok", f"live: {served}"))
    else:
        findings.append(Finding("workers", "warn", "no live worker: tasks with a queue wait"))
    if silent:
        findings.append(Finding("workers", "warn", f"silent (no heartbeat): {', '.join(silent)}"))
    findings += [Finding("queues", "warn", unserved_queue_text(q)) for q in farm["unserved_queues"]]
    return findings


def exit_code(findings: list[Finding]) -> int:
    return 1 if any(f.status == "fail" for f in findings) else 0


__all__ = ["Finding", "diagnose", "exit_code"]

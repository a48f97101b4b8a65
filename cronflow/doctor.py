"""`cronflow doctor`: look over a home and say what is wrong, and what to do about it.

Each check returns Findings (ok, warn or fail); a failure makes the command exit 1. Checks only
read, except that opening the store applies pending migrations as any command would.
"""

from __future__ import annotations

import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cronflow import catalog
from cronflow.config import CONFIG_NAME, Settings, load_settings
from cronflow.daemon import HEARTBEAT_S, running_daemon_pid
from cronflow.errors import CronflowError
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
    if not home.is_dir():
        return [Finding("home", "fail", f"{home} does not exist: run `cronflow init`")]
    try:
        settings = load_settings(home)
    except CronflowError as exc:
        return [Finding("config", "fail", str(exc))]
    findings = [
        _home_permissions(settings),
        Finding("config", "ok", f"{home / CONFIG_NAME} is valid"),
    ]
    try:
        store = Store(settings.db_path)
    except CronflowError as exc:
        return [*findings, Finding("database", "fail", str(exc))]
    try:
        checks: list[Callable[[Settings, Store], list[Finding]]] = [
            _database,
            _daemon,
            _disk,
            _stale_state,
            _flows,
            _logs,
        ]
        for check in checks:
            findings += check(settings, store)
    finally:
        store.close()
    return findings


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _home_permissions(settings: Settings) -> Finding:
    open_to_others = [
        p for p in (settings.home, settings.db_path) if p.exists() and _mode(p) & 0o077
    ]
    if open_to_others:
        shown = ", ".join(f"{p} ({oct(_mode(p))})" for p in open_to_others)
        return Finding(
            "permissions", "warn", f"readable by others: {shown}; run chmod go-rwx on them"
        )
    return Finding(
        "permissions", "ok", f"{settings.home} and its database are private to their owner"
    )


def _database(settings: Settings, store: Store) -> list[Finding]:
    problems = store.integrity_problems()
    if problems:
        return [
            Finding(
                "database",
                "fail",
                f"integrity check failed: {problems[0]} (restore a `cronflow db backup`)",
            )
        ]
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


def exit_code(findings: list[Finding]) -> int:
    return 1 if any(f.status == "fail" for f in findings) else 0


__all__ = ["Finding", "diagnose", "exit_code"]

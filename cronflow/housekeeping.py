"""Retention: compress old task logs, delete older ones, cap their total size, and remove run
history past its age, with its logs and missed deadlines; the audit trail past its own age. The daemon runs it hourly (in a thread with its own store
connection); `cronflow db clean` runs the history part on demand.

Logs of attempts still running are never touched. Compression writes `try-N.log.gz` next to the
log and removes the original only once the compressed copy is complete, so a crash at any point
leaves one readable copy.

An attempt's exit record and command file (cronflow.supervisor) are removed when it is settled;
a daemon crash between the two can leave them behind, so any that are a day old and belong to no
running attempt are removed too (a command file may hold secrets).
"""

from __future__ import annotations

import gzip
import logging
import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from cronflow.config import Settings
from cronflow.logs import attempt_log_dir
from cronflow.store import Store

log = logging.getLogger("cronflow.housekeeping")

DAY_S = 86400.0
ATTEMPT_FILE_SUFFIXES = (".status", ".cmd")  # see cronflow.supervisor


@dataclass
class Report:
    compressed: int = 0
    deleted_logs: int = 0
    freed_bytes: int = 0
    deleted_runs: int = 0
    deleted_task_instances: int = 0
    stale_attempt_files: int = 0
    deleted_deadline_misses: int = 0
    deleted_audit_entries: int = 0
    run_ids: list[int] = field(default_factory=list)


def log_files(logs_dir: Path) -> list[Path]:
    if not logs_dir.is_dir():
        return []
    return [p for p in logs_dir.rglob("try-*.log*") if p.is_file()]


def compress_old_logs(
    logs_dir: Path, older_than_s: float, now_ts: float, active: set[str], report: Report
) -> None:
    for path in log_files(logs_dir):
        if path.suffix != ".log" or str(path) in active:
            continue
        try:
            if now_ts - path.stat().st_mtime < older_than_s:
                continue
            target = path.with_name(path.name + ".gz")
            partial = path.with_name(path.name + ".gz.partial")
            with open(path, "rb") as source, gzip.open(partial, "wb") as sink:
                shutil.copyfileobj(source, sink)
            os.chmod(partial, 0o600)
            os.replace(partial, target)
            path.unlink()
            report.compressed += 1
        except OSError as exc:
            log.warning("event=log_compress_failed path=%s error=%r", path, str(exc))


def delete_old_logs(
    logs_dir: Path, older_than_s: float, now_ts: float, active: set[str], report: Report
) -> None:
    for path in log_files(logs_dir):
        if str(path) in active:
            continue
        try:
            stat = path.stat()
            if now_ts - stat.st_mtime >= older_than_s:
                path.unlink()
                report.deleted_logs += 1
                report.freed_bytes += stat.st_size
        except OSError as exc:
            log.warning("event=log_delete_failed path=%s error=%r", path, str(exc))


def cap_total_size(logs_dir: Path, max_bytes: float, active: set[str], report: Report) -> None:
    """Delete the oldest logs until the total fits under the cap."""
    sized = []
    for path in log_files(logs_dir):
        try:
            stat = path.stat()
        except OSError:
            continue
        sized.append((stat.st_mtime, stat.st_size, path))
    total = sum(size for _, size, _ in sized)
    for _, size, path in sorted(sized):
        if total <= max_bytes:
            return
        if str(path) in active:
            continue
        try:
            path.unlink()
        except OSError:
            continue
        total -= size
        report.deleted_logs += 1
        report.freed_bytes += size


def remove_stale_attempt_files(
    logs_dir: Path, now_ts: float, active: set[str], report: Report
) -> None:
    """Exit records and command files a crash left behind (a day old, no running attempt)."""
    if not logs_dir.is_dir():
        return
    for path in logs_dir.rglob("try-*"):
        if path.suffix not in ATTEMPT_FILE_SUFFIXES or str(path.with_suffix(".log")) in active:
            continue
        try:
            if now_ts - path.stat().st_mtime >= DAY_S:
                path.unlink()
                report.stale_attempt_files += 1
        except OSError as exc:
            log.warning("event=attempt_file_delete_failed path=%s error=%r", path, str(exc))


def clean_history(
    store: Store, settings: Settings, cutoff: datetime, dry_run: bool, report: Report
) -> None:
    """Remove runs that finished before `cutoff`, with their task instances, XComs
    and log directories, in short batches so the daemon is never held up."""
    while True:
        runs = store.finished_runs_before(
            cutoff, limit=500, after_run_id=report.run_ids[-1] if dry_run and report.run_ids else 0
        )
        if not runs:
            return
        ids = [r["run_id"] for r in runs]
        tis = store.tis_of_runs(ids)
        report.run_ids += ids
        report.deleted_runs += len(ids)
        report.deleted_task_instances += len(tis)
        if dry_run:
            continue
        store.delete_runs(ids)
        for ti in tis:
            directory = attempt_log_dir(
                settings.logs_dir, ti["flow_id"], ti["task_id"], ti["logical_date"]
            )
            if directory.is_dir():
                report.freed_bytes += sum(
                    p.stat().st_size for p in directory.iterdir() if p.is_file()
                )
                shutil.rmtree(directory, ignore_errors=True)


def run_housekeeping(settings: Settings, store: Store, now: datetime) -> Report:
    """Everything [retention] asks for, once."""
    retention = settings.retention
    report = Report()
    active = store.active_log_paths()
    now_ts = now.timestamp()
    if retention.delete_runs_after_days > 0:
        cutoff = now - timedelta(days=retention.delete_runs_after_days)
        clean_history(store, settings, cutoff, dry_run=False, report=report)
        report.deleted_deadline_misses = store.delete_deadline_misses_before(cutoff)
    if retention.delete_audit_after_days > 0:
        cutoff = now - timedelta(days=retention.delete_audit_after_days)
        report.deleted_audit_entries = store.delete_audit_before(cutoff)
    if retention.delete_logs_after_days > 0:
        delete_old_logs(
            settings.logs_dir, retention.delete_logs_after_days * DAY_S, now_ts, active, report
        )
    if retention.compress_logs_after_days > 0:
        compress_old_logs(
            settings.logs_dir, retention.compress_logs_after_days * DAY_S, now_ts, active, report
        )
    if retention.max_logs_mb > 0:
        cap_total_size(settings.logs_dir, retention.max_logs_mb * 1024 * 1024, active, report)
    remove_stale_attempt_files(settings.logs_dir, now_ts, active, report)
    log.info(
        "event=housekeeping compressed=%s deleted_logs=%s freed_bytes=%s deleted_runs=%s "
        "deleted_deadline_misses=%s deleted_audit_entries=%s",
        report.compressed,
        report.deleted_logs,
        report.freed_bytes,
        report.deleted_runs,
        report.deleted_deadline_misses,
        report.deleted_audit_entries,
    )
    return report

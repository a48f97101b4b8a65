"""Maintenance commands: `db clean`, `db backup`, `doctor`."""

import json
from pathlib import Path
from typing import Annotated

import typer

from cronflow.cli.app import _options, app, console, handles_errors, settings_from_options, utc_now

db_app = typer.Typer(
    help="Maintain the state database: clean old history, back it up.", no_args_is_help=True
)
app.add_typer(db_app, name="db")


@db_app.command("clean")
@handles_errors
def db_clean(
    older_than: Annotated[
        str, typer.Option("--older-than", help="Age of the runs to delete, e.g. 90d, 12w, 36h.")
    ],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count what would go.")] = False,
) -> None:
    """Delete runs that finished longer ago than an age, with their task instances, XComs and logs."""
    from datetime import timedelta

    from cronflow.daemonlock import poke
    from cronflow.housekeeping import Report, clean_history
    from cronflow.limits import checked_age
    from cronflow.store import Store
    from cronflow.timeparse import parse_duration

    age_s = checked_age("--older-than", parse_duration(older_than, "--older-than"))
    settings = settings_from_options()
    store = Store(settings.db_path)
    report = Report()
    cutoff = utc_now() - timedelta(seconds=age_s)
    clean_history(store, settings, cutoff, dry_run, report)
    verb = "would delete" if dry_run else "deleted"
    typer.echo(
        f"{verb} {report.deleted_runs} run(s) and {report.deleted_task_instances} task instance(s) "
        f"older than {cutoff.isoformat(timespec='seconds')}"
        + ("" if dry_run else f", freeing {report.freed_bytes / 1e6:.1f} MB of logs")
    )
    if not dry_run:
        poke(settings.home)


@db_app.command("backup")
@handles_errors
def db_backup(
    target: Annotated[Path, typer.Argument(metavar="FILE", help="Where to write the copy.")],
) -> None:
    """Copy the database while the daemon runs (SQLite online backup); the copy is owner-only."""
    from cronflow.store import Store

    settings = settings_from_options()
    Store(settings.db_path).backup(target)
    typer.echo(f"backed up {settings.db_path} to {target} ({target.stat().st_size / 1e6:.1f} MB)")


@app.command()
@handles_errors
def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
) -> None:
    """Check the home: permissions, database integrity, daemon and heartbeat, disk space, stale
    locks and tasks, flows that fail to load, log volume. Exit 1 if anything failed."""
    from cronflow.config import home_path
    from cronflow.doctor import diagnose, exit_code

    findings = diagnose(home_path(_options["home"]))
    if as_json:
        typer.echo(json.dumps([f.__dict__ for f in findings], indent=2))
    else:
        marks = {"ok": "[green]ok[/]  ", "warn": "[yellow]warn[/]", "fail": "[red]FAIL[/]"}
        out = console()
        for finding in findings:
            out.print(
                f"{marks[finding.status]}  {finding.check:<12} {finding.detail}", soft_wrap=True
            )
    raise typer.Exit(exit_code(findings))

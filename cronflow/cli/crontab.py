"""`cronflow import-crontab`: one flow file per crontab line, with cron's exact timing."""

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cronflow.cli.app import app, console, handles_errors, print_json, settings_from_options

if TYPE_CHECKING:
    from cronflow.flowfile import ImportReport

STATUS_STYLES = {
    "converted": "green",
    "exists": "yellow",
    "rejected": "red",
    "never_fires": "magenta",
}


@app.command("import-crontab")
@handles_errors
def import_crontab(
    file: Annotated[
        str,
        typer.Argument(
            metavar="[FILE|-]",
            help="A crontab: the output of `crontab -l`, a file of /etc/cron.d, or - for stdin.",
        ),
    ] = "-",
    system: Annotated[
        bool,
        typer.Option(
            "--system",
            help="The lines have a user field (/etc/crontab and /etc/cron.d/*: always on).",
        ),
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(help="Directory for the flow files (default: the home's flows directory)."),
    ] = None,
    timezone: Annotated[
        str | None,
        typer.Option(help="Zone of lines without CRON_TZ (default: the system's, like cron)."),
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace flow files that exist.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be written; write nothing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
) -> None:
    """Turn each crontab line into a flow file; list what was converted and what was not, and why.

    Exits 1 if a line could not be converted (cron rejects it, it never fires, or its flow file
    exists without --force)."""
    from cronflow.flowfile import import_crontab as convert

    text, source = _read(file)
    is_system = system or source == "/etc/crontab" or Path(source).parent == Path("/etc/cron.d")
    out_dir = out if out is not None else _flows_dir()
    report = convert(
        text,
        out_dir,
        source=source,
        system=is_system,
        timezone=timezone,
        force=force,
        dry_run=dry_run,
    )
    if as_json:
        print_json([row.as_dict() for row in report.rows])
    else:
        _render(report, out_dir, dry_run)
    if not report.complete:
        raise typer.Exit(1)


def _read(file: str) -> tuple[str, str]:
    from cronflow.errors import InvalidInputError

    if file == "-":
        if sys.stdin.isatty():
            raise InvalidInputError(
                "no crontab given: name a FILE, or pipe one (crontab -l | cronflow import-crontab)"
            )
        try:
            text = sys.stdin.read()
            text.encode()  # bytes that are not UTF-8 may arrive as surrogate escapes
        except (UnicodeDecodeError, UnicodeEncodeError):
            raise InvalidInputError(
                "cannot read the crontab on standard input: not UTF-8 text"
            ) from None
        return text, "standard input"
    path = Path(file).expanduser()
    try:
        return path.read_text(encoding="utf-8"), str(path.absolute())
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise InvalidInputError(f"cannot read the crontab {path}: {reason or exc}") from None


def _flows_dir() -> Path:
    return settings_from_options().flows_dir


def _render(report: "ImportReport", out_dir: Path, dry_run: bool) -> None:
    from rich.markup import escape
    from rich.table import Table

    rows = report.rows
    table = Table(box=None, header_style="bold")
    for column in ("line", "flow", "status", "crontab line", "reason"):
        table.add_column(column, overflow="fold")
    for row in rows:
        style = STATUS_STYLES.get(row.status.value, "default")
        table.add_row(
            str(row.line_no),
            row.flow or "-",
            f"[{style}]{row.status.value}[/]",
            escape(row.line.strip()),
            escape(row.reason),
        )
    out = console()
    out.print(table)
    for note in report.notes:
        out.print(f"note: {escape(note)}")
    converted = sum(row.status.value == "converted" for row in rows)
    where = "nothing written (dry run)" if dry_run else f"written to {out_dir}"
    out.print(f"{converted} of {len(rows)} crontab lines converted, {escape(where)}")

"""Turning crontab entries into readable flow files (`cronflow import-crontab`).

One flow file per job line, named from its command, with the original line as a comment. The
flow keeps cron's timing (the schedule as cron reads it, in CRON_TZ or the system's zone, no
catch-up, runs may overlap) and its environment (SHELL, PATH, the crontab's variables, `%` input).
An existing file is never replaced without `force`.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import pwd
import re
import textwrap
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from cronflow.crontab import CRON_PATH, CRON_SHELL, REBOOT, CronJob, LineStatus, read_crontab
from cronflow.errors import CronflowError, InvalidInputError
from cronflow.flow import Flow, collecting_flows
from cronflow.jobnames import flow_name, unique_name
from cronflow.templates import literal
from cronflow.timetable import parse_timezone

_LINE = 100  # the generated file follows the project's line length
MAX_ACTIVE_RUNS = 16  # cron starts a job even while its previous run goes on: allow overlaps


class ImportStatus(StrEnum):
    CONVERTED = "converted"
    EXISTS = "exists"  # a flow file of that name is there already (use force)
    REJECTED = "rejected"  # cron itself rejects the line
    NEVER_FIRES = "never_fires"  # cron accepts it, but no date ever matches


@dataclass(frozen=True)
class ImportRow:
    """What became of one job line."""

    line_no: int
    line: str
    flow: str | None
    status: ImportStatus
    reason: str = ""
    path: str | None = None
    schedule: str | None = None
    timezone: str | None = None
    written: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status.value}


@dataclass
class ImportReport:
    rows: list[ImportRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every job line became a flow."""
        return all(row.status is ImportStatus.CONVERTED for row in self.rows)


def import_crontab(
    text: str,
    out_dir: Path,
    *,
    source: str = "-",
    system: bool = False,
    timezone: str | None = None,
    force: bool = False,
    dry_run: bool = False,
) -> ImportReport:
    """Write one flow file per job line of `text` into `out_dir`; report every line."""
    report = ImportReport()
    default_zone = timezone
    if default_zone is None:
        default_zone, note = local_timezone()
        if note:
            report.notes.append(note)
    parse_timezone(default_zone)
    jobs = read_crontab(text, system=system, user_exists=_user_exists)
    taken: set[str] = set()
    for job in jobs:
        row = _import_one(job, out_dir, source, default_zone, taken, report.notes, force, dry_run)
        report.rows.append(row)
    if any(row.status is ImportStatus.REJECTED for row in report.rows):
        report.notes.append(
            "Debian's cron ignores a whole crontab with a line it rejects: if this crontab is "
            "installed as it is, none of its jobs runs"
        )
    return report


def _import_one(
    job: CronJob,
    out_dir: Path,
    source: str,
    default_zone: str,
    taken: set[str],
    shared: list[str],
    force: bool,
    dry_run: bool,
) -> ImportRow:
    base: dict[str, Any] = {"line_no": job.line_no, "line": job.line}
    if job.status is LineStatus.REJECTED:
        return ImportRow(flow=None, status=ImportStatus.REJECTED, reason=job.reason, **base)
    flow_id = unique_name(flow_name(job.command) or f"cron_line_{job.line_no}", taken)
    zone = job.env.get("CRON_TZ") or default_zone
    base.update(flow=flow_id, schedule=job.schedule, timezone=zone)
    if job.status is LineStatus.NEVER_FIRES:
        return ImportRow(status=ImportStatus.NEVER_FIRES, reason=job.reason, **base)
    notes = Notes()
    try:
        source_text = flow_source(job, flow_id, zone, source=source, notes=notes)
    except CronflowError as exc:
        reason = f"cronflow cannot use it: {exc}"
        return ImportRow(status=ImportStatus.REJECTED, reason=reason, **base)
    shared.extend(n for n in notes.shared if n not in shared)
    path = out_dir / f"{flow_id}.py"
    base["path"] = str(path)
    if path.exists() and not force:
        reason = f"{path} exists; use --force to replace it"
        return ImportRow(status=ImportStatus.EXISTS, reason=reason, **base)
    if not dry_run:
        _write(path, source_text)
    return ImportRow(
        status=ImportStatus.CONVERTED, reason="; ".join(notes.line), written=not dry_run, **base
    )


def _write(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_text(text, encoding="utf-8")
        temporary.replace(path)  # the daemon never reads a half-written flow file
    except OSError as exc:
        raise InvalidInputError(f"cannot write {path}: {exc.strerror or exc}") from None


# --- the flow file ------------------------------------------------------------------------------


@dataclass
class Notes:
    """What a reader should know: about this line, and about the crontab's variables."""

    line: list[str] = field(default_factory=list)
    shared: list[str] = field(default_factory=list)  # CRON_TZ, MAILTO: same for many lines

    @property
    def all(self) -> list[str]:
        return [*self.line, *self.shared]


_Argument = tuple[str | None, str, str]  # (keyword or None, Python value, comment)


def flow_source(job: CronJob, flow_id: str, zone: str, *, source: str, notes: Notes) -> str:
    """The text of a flow file for one job line, checked by building the flow from it."""
    parse_timezone(zone)
    notes.line.extend(job.notes)
    if job.user and job.user != _current_user():
        notes.line.append(
            f"cron ran it as user {job.user!r}; cronflow runs it as the daemon's user"
        )
    flow_args = _flow_arguments(job, zone, source, notes)
    shell_args = _shell_arguments(job, flow_id, notes)
    timing = (
        ["Runs once each time the cronflow daemon starts (cron ran @reboot jobs at boot)."]
        if job.schedule == REBOOT
        else [
            "Timing as cron's: the same minutes, day-of-month/day-of-week rule and DST handling;",
            "nothing missed while the daemon was down is run later.",
        ]
    )
    header = (
        f"{flow_id}: crontab line {job.line_no} of {source}, imported by cronflow import-crontab"
    )
    lines = [
        f'"""{_docstring_safe(header)}.',
        "",
        *timing,
        *(["", *_wrapped_notes(notes.all)] if notes.all else []),
        '"""',
        "",
        "from cronflow import Flow, Shell",
        "",
        f"# crontab line {job.line_no}:",
        f"# {_comment_safe(job.line)}",
        "with Flow(",
        f"    {_literal(flow_id)},",
        *_arguments(flow_args, indent=4),
        "):",
        "    Shell(",
        *_arguments(shell_args, indent=8),
        "    )",
        "",
    ]
    text = "\n".join(lines)
    _validate(text, flow_id)
    return text


def _flow_arguments(job: CronJob, zone: str, source: str, notes: Notes) -> list[_Argument]:
    cron_tz = job.env.get("CRON_TZ")
    if cron_tz:
        notes.shared.append(
            f"CRON_TZ={cron_tz}: scheduled in that zone, as cronie does "
            "(Debian's cron ignores CRON_TZ and uses the system's zone)"
        )
    at_start = "once at each daemon start" if job.schedule == REBOOT else ""
    args: list[_Argument] = [
        ("schedule", _literal(job.schedule), at_start),
        ("timezone", _literal(zone), "CRON_TZ" if cron_tz else ""),
        ("catchup", "False", "cron never runs a missed time later"),
        ("max_active_runs", str(MAX_ACTIVE_RUNS), "cron starts a job even while it still runs"),
        ("tags", '["crontab"]', ""),
        ("doc", _literal(f"Imported from crontab line {job.line_no} of {source}."), ""),
    ]
    emails = _emails(job.env.get("MAILTO"), notes.shared)
    if emails:
        args.append(("email_on_failure", _list_literal(emails), "MAILTO"))
    return args


def _shell_arguments(job: CronJob, task_id: str, notes: Notes) -> list[_Argument]:
    env = {k: literal(v) for k, v in _task_env(job.env, notes.line).items()}
    shell = job.env.get("SHELL") or CRON_SHELL
    args: list[_Argument] = [
        (None, _literal(task_id), ""),
        (None, _literal(literal(job.command)), ""),
        ("shell", _literal(shell), "SHELL" if job.env.get("SHELL") else "cron's default shell"),
        ("env", _dict_literal(env, indent=8), "what cron gives the job"),
    ]
    if job.stdin is not None:
        args.append(("stdin", _literal(job.stdin), "the text after '%' in the command"))
    return args


def _validate(text: str, flow_id: str) -> None:
    """Build the flow from the generated text, so a file that would not load is never written."""
    with collecting_flows() as flows:
        exec(compile(text, f"<flow {flow_id}>", "exec"), {"__name__": f"cronflow_import_{flow_id}"})
    for flow in flows:
        flow.spec()


def _arguments(args: Sequence[_Argument], indent: int) -> list[str]:
    pad = " " * indent
    return [
        f"{pad}{name + '=' if name else ''}{value},{f'  # {comment}' if comment else ''}"
        for name, value, comment in args
    ]


def _wrapped_notes(notes: list[str]) -> list[str]:
    lines = []
    for note in notes:
        lines += textwrap.wrap(
            _docstring_safe(note), width=_LINE, initial_indent="Note: ", subsequent_indent="  "
        )
    return lines


def _task_env(crontab_env: dict[str, str], notes: list[str]) -> dict[str, str]:
    """What cron puts in a job's environment: the crontab's variables (LOGNAME is always the
    user's), SHELL and PATH defaulting to cron's."""
    env = {"SHELL": CRON_SHELL, "PATH": CRON_PATH}
    for name, value in crontab_env.items():
        if name == "LOGNAME":
            continue
        if not name or "=" in name or "\0" in name + value:
            notes.append(f"variable {name!r} cannot be passed to a process; it is left out")
            continue
        env[name] = value
    return env


def _emails(mailto: str | None, notes: list[str]) -> list[str]:
    if not mailto:
        return []
    names = [n for n in re.split(r"[,\s]+", mailto) if n]
    local = [n for n in names if "@" not in n]
    if local:
        notes.append(
            f"MAILTO {', '.join(local)}: local mailboxes, not e-mail addresses; "
            "add addresses to email_on_failure"
        )
    emails = [n for n in names if "@" in n]
    if emails and "email_on_failure" not in inspect.signature(Flow).parameters:
        notes.append(f"MAILTO {mailto}: e-mail on failure is not available in this cronflow")
        return []
    if emails:
        notes.append("MAILTO: cron mailed any output; cronflow e-mails when a run fails")
    return emails


def _literal(text: str | None) -> str:
    """A Python string literal, double-quoted unless the text has double quotes."""
    if text is None:
        return "None"
    literal = repr(text)
    if literal.startswith("'") and "'" not in text and '"' not in text:
        literal = f'"{literal[1:-1]}"'
    return literal


def _list_literal(values: list[str]) -> str:
    return "[" + ", ".join(_literal(v) for v in values) + "]"


def _dict_literal(values: dict[str, str], indent: int) -> str:
    """One line if it fits, else one item per line."""
    items = [f"{_literal(k)}: {_literal(v)}" for k, v in values.items()]
    one_line = "{" + ", ".join(items) + "}"
    if indent + len("env=") + len(one_line) + 1 <= _LINE:
        return one_line
    pad = " " * (indent + 4)
    return "{\n" + "".join(f"{pad}{item},\n" for item in items) + " " * indent + "}"


def _comment_safe(text: str) -> str:
    return text.replace("\r", "\\r")


def _docstring_safe(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')


# --- the system ---------------------------------------------------------------------------------


def local_timezone() -> tuple[str, str]:
    """The system's IANA zone (cron's schedules follow it), and a note if it had to guess."""
    candidates = []
    with contextlib.suppress(OSError):
        candidates.append(Path("/etc/timezone").read_text(encoding="utf-8").strip())
    with contextlib.suppress(OSError):
        target = os.readlink("/etc/localtime")
        candidates.append(target.split("zoneinfo/", 1)[1] if "zoneinfo/" in target else "")
    for name in candidates:
        try:
            parse_timezone(name)
        except CronflowError:
            continue
        return name, ""
    return "UTC", "could not tell the system's time zone: flows use UTC (give --timezone)"


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _current_user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())

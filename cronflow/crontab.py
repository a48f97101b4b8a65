"""Reading a crontab the way Debian's cron reads it (cron 3.0pl1-162: entry.c, env.c, do_command.c).

Pure: text in, one `CronJob` per job line out, each with the schedule cronflow should use, the
shell command, its standard input, its environment, and why it cannot be used if so.

What cron does, and so what this module does:

* a line whose first non-blank character is `#` is a comment, a blank line is ignored; `#` later
  in a line is part of the command or the value;
* a line that parses as `NAME = value` (optionally quoted, blanks around `=`) sets a variable for
  the jobs below it; anything else is a job line;
* a job line is five time fields (or an @macro in lowercase), in a system crontab a user name,
  then the command up to the end of the line; in the command the first unescaped `%` starts the
  job's standard input, later `%` in it are newlines and `\\%` is a literal `%`;
* a field is read item by item; what follows a complete item up to the next blank is ignored
  (`5-10-12` reads `5-10`); a reversed range selects nothing; a day field starting with `*` makes
  the two day fields combine with AND, else with OR.

Rejected lines carry cron's own error ("bad minute", ...) and the detail; lines cron accepts but
that never fire are reported as such, never silently dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from cronflow.errors import ScheduleError
from cronflow.timetable import Schedule

REBOOT = "@reboot"
CRON_SHELL = "/bin/sh"  # _PATH_BSHELL
CRON_PATH = "/usr/bin:/bin"  # _PATH_DEFPATH: what cron's jobs get unless the crontab sets PATH
_MAX_COMMAND = 1000  # cron refuses a command of MAX_COMMAND - 1 characters or more
_BLANKS = " \t"
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")


class LineStatus(StrEnum):
    OK = "ok"
    REJECTED = "rejected"  # cron refuses the line
    NEVER_FIRES = "never_fires"  # cron accepts it but no date ever matches


@dataclass(frozen=True)
class CronJob:
    """One job line of a crontab, as cron reads it."""

    line_no: int
    line: str
    status: LineStatus
    reason: str = ""  # why it is rejected or never fires
    schedule: str | None = None  # the expression cronflow uses (cron's reading), or "@reboot"
    command: str = ""  # what the shell runs: the part before the first unescaped '%'
    stdin: str | None = None  # the job's standard input, after '%'
    env: dict[str, str] = field(default_factory=dict)  # the crontab's variables for this line
    user: str | None = None  # the user field of a system crontab
    notes: tuple[str, ...] = ()  # what cron does that a reader should know


class _Rejected(Exception):
    pass


class _NeverFires(Exception):
    pass


@dataclass(frozen=True)
class _FieldSpec:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()

    @property
    def ecode(self) -> str:
        return f"bad {self.name}"


_FIELDS = (
    _FieldSpec("minute", 0, 59),
    _FieldSpec("hour", 0, 23),
    _FieldSpec("day-of-month", 1, 31),
    _FieldSpec("month", 1, 12, _MONTHS),
    _FieldSpec("day-of-week", 0, 7, ("sun", "mon", "tue", "wed", "thu", "fri", "sat")),
)
# an item as cron's get_range reads it: '*' or a number/name with an optional '-' and number/name,
# then an optional '/' and step; cron stops at the first character that does not fit
_ITEM = re.compile(r"(\*|[A-Za-z0-9]*)(?:(?<!\*)(-)([A-Za-z0-9]*))?(?:(/)([A-Za-z0-9]*))?")


def read_crontab(
    text: str, *, system: bool = False, user_exists: Callable[[str], bool] | None = None
) -> list[CronJob]:
    """Every job line of a crontab, in order; variables apply to the lines below them.

    `system`: the file has a user field (/etc/crontab, /etc/cron.d); `user_exists` checks it."""
    env: dict[str, str] = {}
    jobs = []
    for line_no, raw in enumerate(text.removesuffix("\n").split("\n"), start=1):
        stripped = raw.lstrip(_BLANKS)
        if not stripped or stripped.startswith("#"):
            continue
        if "\0" in raw:  # no command, variable or flow file can hold it
            reason = "the line holds a NUL character, which no command can take"
            shown = raw.replace("\0", "\\0")
            jobs.append(CronJob(line_no, shown, LineStatus.REJECTED, reason, env=dict(env)))
            continue
        variable = parse_env_line(stripped)
        if variable is not None:
            env[variable[0]] = variable[1]
            continue
        jobs.append(read_job_line(line_no, raw, env, system=system, user_exists=user_exists))
    return jobs


def read_job_line(
    line_no: int,
    line: str,
    env: Mapping[str, str],
    *,
    system: bool = False,
    user_exists: Callable[[str], bool] | None = None,
) -> CronJob:
    """One job line (not a comment, not a variable), with the variables in effect."""
    notes: list[str] = []
    try:
        schedule, rest, never = _read_schedule(line.lstrip(_BLANKS), notes)
        user, rest = _read_user(rest, system, user_exists)
        if len(rest) >= _MAX_COMMAND - 1:
            raise _Rejected(f"command too long: {len(rest)} characters (cron's limit is 998)")
        if not never and schedule != REBOOT:
            never = _never_fires(schedule)
    except _Rejected as exc:
        reason = f"cron rejects it: {exc}"
        return CronJob(line_no, line, LineStatus.REJECTED, reason, env=dict(env))
    command, stdin = split_command(rest)
    return CronJob(
        line_no,
        line,
        status=LineStatus.NEVER_FIRES if never else LineStatus.OK,
        reason=f"cron accepts it but it never fires: {never}" if never else "",
        schedule=schedule,
        command=command,
        stdin=stdin,
        env=dict(env),
        user=user,
        notes=tuple(notes),
    )


def _never_fires(expression: str) -> str:
    """Why no date ever matches (cron accepts e.g. '0 0 31 2 *' and waits forever), or ''."""
    try:
        Schedule.parse(expression)
    except ScheduleError as exc:
        reason = str(exc).removeprefix(f"bad cron expression {expression!r}: ")
        if "never fires" not in reason:
            raise _Rejected(f"cronflow cannot read {expression!r}: {reason}") from None
        return reason
    return ""


def _read_schedule(line: str, notes: list[str]) -> tuple[str, str, str]:
    """(expression cronflow uses, the rest of the line, why it never fires or ''); _Rejected."""
    if line.startswith("@"):
        word, _, rest = _split_word(line)
        if word == REBOOT or word in _MACROS:
            return word, rest, ""
        known = ", ".join((REBOOT, *_MACROS))
        raise _Rejected(f"bad time specifier: unknown {word!r} (cron knows, in lowercase: {known})")
    texts, fields, rest = [], [], line
    for spec in _FIELDS:  # field by field, as cron reads them: the first bad one is reported
        word, _, rest = _split_word(rest)
        if not word:
            raise _Rejected(f"{spec.ecode}: the line ends before the {spec.name} field")
        texts.append(word)
        fields.append(_read_field(word, spec, notes))
    try:
        return _combine(texts, fields, notes), rest, ""
    except _NeverFires as exc:
        return " ".join(texts), rest, str(exc)


def _split_word(text: str) -> tuple[str, str, str]:
    """(the first blank-delimited word, the blanks after it, the rest)."""
    end = len(text)
    for i, ch in enumerate(text):
        if ch in _BLANKS:
            end = i
            break
    rest = text[end:]
    after = rest.lstrip(_BLANKS)
    return text[:end], rest[: len(rest) - len(after)], after


def _read_user(
    rest: str, system: bool, user_exists: Callable[[str], bool] | None
) -> tuple[str | None, str]:
    if not system:
        if rest.startswith("*"):  # Debian: a sixth time field is a mistake, not a command
            raise _Rejected(
                "bad command: it starts with '*' (cron takes 5 time fields; no seconds)"
            )
        return None, rest
    user, _, command = _split_word(rest)
    if not user:
        raise _Rejected("bad command: no user name and command after the time fields")
    if user_exists is not None and not user_exists(user):
        raise _Rejected(f"bad username: no user {user!r} on this system")
    return user, command


def _read_field(text: str, spec: _FieldSpec, notes: list[str]) -> list[str]:
    """The items cron uses from one field, as text (reversed ranges dropped)."""
    items, pos = [], 0
    while True:
        match = _ITEM.match(text, pos)
        assert match is not None  # every part of the pattern is optional
        item = match.group(0)
        _check_item(item, match, spec)
        if not _reversed(match, spec):
            items.append(item)
        pos = match.end()
        if pos < len(text) and text[pos] == ",":
            pos += 1
            continue
        break
    if pos < len(text):
        kept = text[:pos]
        notes.append(f"cron reads the {spec.name} field {text!r} as {kept!r} (it ignores the rest)")
    return items


def _check_item(item: str, match: re.Match[str], spec: _FieldSpec) -> None:
    first, dash, last, slash, step = match.groups()
    where = f"{spec.ecode}: {item or 'nothing'!r}"
    if not first:
        raise _Rejected(f"{where}: a number is missing")
    if first != "*":
        _value(first, spec, where)
        if slash and not dash:
            raise _Rejected(f"{where}: a step needs a range or '*' (write e.g. '*/15')")
    if dash:
        _value(last, spec, where)
    if slash and not (step.isascii() and step.isdigit() and int(step) > 0):
        raise _Rejected(f"{where}: the step must be a number above 0")


def _value(token: str, spec: _FieldSpec, where: str) -> int:
    if not token:
        raise _Rejected(f"{where}: a number is missing")
    if token.lower() in spec.names:
        return spec.names.index(token.lower()) + spec.low
    if not (token.isascii() and token.isdigit()):
        names = f" (names: {', '.join(spec.names)})" if spec.names else ""
        raise _Rejected(f"{where}: {token!r} is not a number{names}")
    if not spec.low <= int(token) <= spec.high:
        raise _Rejected(f"{where}: {int(token)} is out of range ({spec.low}-{spec.high})")
    return int(token)


def _reversed(match: re.Match[str], spec: _FieldSpec) -> bool:
    first, dash, last, _, _ = match.groups()
    if not dash or first == "*":
        return False
    return _value(first, spec, "") > _value(last, spec, "")


def _combine(texts: list[str], fields: list[list[str]], notes: list[str]) -> str:
    """The expression for cronflow: cron's items of each field; _NeverFires if one is empty."""
    for i in (0, 1, 3):
        if not fields[i]:
            what = f"the {_FIELDS[i].name} field {texts[i]!r}"
            raise _NeverFires(f"{what} selects nothing (a reversed range)")
    # cron: both day fields restricted (neither starts with '*'): a day matches if EITHER does,
    # so an empty one simply never matches; otherwise BOTH must match
    day_or = not texts[2].startswith("*") and not texts[4].startswith("*")
    empty = [i for i in (2, 4) if not fields[i]]
    if empty and (not day_or or len(empty) == 2):
        what = f"the {_FIELDS[empty[0]].name} field {texts[empty[0]]!r}"
        raise _NeverFires(f"{what} selects no day (a reversed range)")
    if empty:
        notes.append(
            f"the {_FIELDS[empty[0]].name} field {texts[empty[0]]!r} selects no day (a reversed "
            "range), so only the other day field counts"
        )
        fields[empty[0]] = ["*"]
    return " ".join(",".join(items) for items in fields)


def split_command(text: str) -> tuple[str, str | None]:
    """(command, standard input) the way cron splits a job's command at the first '%'.

    In the command `\\%` becomes `%` and `\\\\` becomes `\\`; in the input `%` becomes a newline,
    `\\%` a literal `%`, and a final newline is added. None: the job gets no input."""
    out: list[str] = []
    escaped = False
    for i, ch in enumerate(text):
        if escaped:
            if ch in "%\\":
                out[-1] = ch
            else:
                out.append(ch)
            escaped = False
        elif ch == "\\":
            out.append(ch)
            escaped = True
        elif ch == "%":
            return "".join(out), _stdin(text[i + 1 :])
        else:
            out.append(ch)
    return "".join(out), None


def _stdin(data: str) -> str | None:
    if not data:
        return None
    out: list[str] = []
    escaped = need_newline = False
    for ch in data:
        if escaped:
            if ch != "%":
                out.append("\\")
        elif ch == "%":
            ch = "\n"
        escaped = ch == "\\"
        if not escaped:
            out.append(ch)
            need_newline = ch != "\n"
    if escaped:
        out.append("\\")
    if need_newline:
        out.append("\n")
    return "".join(out)


_SPACE = " \t\n\v\f\r"


def parse_env_line(text: str) -> tuple[str, str] | None:
    """(name, value) if cron reads the line as a variable setting, else None (env.c load_env)."""
    name_i, name, eq1, eq2, value_i, value, fini, error = range(8)
    state, quote, i = name_i, "", 0
    parts: tuple[list[str], list[str]] = ([], [])
    while state != error and i < len(text):
        ch = text[i]
        if state in (name_i, value_i):
            if ch in "'\"":
                quote, i = ch, i + 1
            state += 1
            if i >= len(text):
                break
            ch = text[i]
        if state in (name, value):
            if quote and ch == quote:
                state, i = state + 1, i + 1
                continue
            if quote and state == name and ch == "=":
                state = error
                continue
            if not quote and state == name and ch in _SPACE:
                state, i = eq1, i + 1
                continue
            if not quote and state == name and ch == "=":
                state = eq1
                continue
            parts[state == value].append(ch)
            i += 1
        elif state == eq1:
            if ch == "=":
                state, quote = eq2, ""
            elif ch not in _SPACE:
                state = error
            i += 1
        elif ch in _SPACE:  # eq2 or fini: skip blanks
            i += 1
        else:
            state += 1
    if state != fini and not (state == value and not quote):
        return None
    text_value = "".join(parts[1]).rstrip(_SPACE)  # cron strips trailing blanks, even quoted
    if len(text_value) >= 2 and text_value[0] in "'\"" and text_value[-1] == text_value[0]:
        text_value = text_value[1:-1]
    return "".join(parts[0]), text_value

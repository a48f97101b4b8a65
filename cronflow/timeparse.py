"""Parsing of user-written dates, date-times and durations (flow files and the command line). Pure."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import overload
from zoneinfo import ZoneInfo

from cronflow.errors import InvalidInputError

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: float | int | str | timedelta, what: str = "duration") -> float:
    """Seconds from a number of seconds, a timedelta or text like '90s', '5m', '1h30m', '90d'."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _duration_text(value, what)
    else:
        raise InvalidInputError(
            f"{what}: expected seconds, a timedelta or text like '5m', got {value!r}"
        )
    if seconds < 0:
        raise InvalidInputError(f"{what}: must not be negative, got {value!r}")
    return seconds


def _duration_text(text: str, what: str) -> float:
    compact = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", compact):
        return float(compact)
    parts = _DURATION_PART.findall(compact)
    if not parts or "".join(n + u for n, u in parts) != compact.replace(" ", ""):
        raise InvalidInputError(
            f"{what}: cannot read {text!r} (use seconds or units like 30s, 5m, 2h, 90d)"
        )
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


def parse_date_or_datetime(text: str, tz: ZoneInfo) -> date | datetime:
    """'YYYY-MM-DD' -> date; an ISO date-time -> aware datetime (naive ones are in `tz`)."""
    raw = text.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw):
        try:
            return date.fromisoformat(raw)
        except ValueError:
            raise InvalidInputError(f"bad date {text!r}: no such day") from None
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInputError(
            f"bad date {text!r}: use YYYY-MM-DD or an ISO date-time like 2024-03-01T02:30"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=tz)


def to_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


def start_of_day(day: date, tz: ZoneInfo) -> datetime:
    """The first instant of a local day (midnight, or the first instant after a DST gap)."""
    return to_utc(datetime(day.year, day.month, day.day, tzinfo=tz))


@overload
def iso(moment: datetime) -> str: ...
@overload
def iso(moment: None) -> None: ...
def iso(moment: datetime | None) -> str | None:
    """Store format: UTC ISO 8601 with offset, second precision unless finer is needed."""
    if moment is None:
        return None
    return to_utc(moment).isoformat()


@overload
def from_iso(text: str) -> datetime: ...
@overload
def from_iso(text: None) -> None: ...
def from_iso(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def short_moment(stamp: str | None, tz: tzinfo) -> str:
    """'YYYY-MM-DD HH:MM' (':SS' when not zero) in `tz`, or '-': a moment in a table cell or
    on a page (the CLI's tables and the web view)."""
    if not stamp:
        return "-"
    moment = datetime.fromisoformat(stamp).astimezone(tz)
    return moment.strftime("%Y-%m-%d %H:%M:%S" if moment.second else "%Y-%m-%d %H:%M")


def offset_text(offset: int) -> str:
    """A day offset between flows in words: 'the same day', 'the day before', '2 days after'."""
    if offset == 0:
        return "the same day"
    if offset == -1:
        return "the day before"
    return f"{abs(offset)} days {'before' if offset < 0 else 'after'}"


def duration_text(seconds: float | None) -> str:
    """'4.2s', '3m05s', '2h10m' (or '-'): a duration for people, in tables and pages."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"

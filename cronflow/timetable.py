"""When things run: a cron expression in a timezone -> fire instants (aware UTC).

Debian cron (Vixie cron 3.0pl1) is the reference, not croniter's defaults, so this module parses
and validates expressions itself (rejecting what cron rejects, with a reason) and maps wall-clock
times to instants itself, following cron(8) "Daylight Saving Time and other time changes":

* fire times are computed on the naive wall clock of the schedule's timezone;
* in a spring-forward gap, "fixed-time" jobs (neither minute nor hour starts with '*') run once at
  the first instant after the jump; "wildcard" jobs skip the missing wall times;
* in a fall-back overlap, fixed-time jobs run once (first occurrence); wildcard jobs run in both.

croniter (imported only here) only ever sees naive wall-clock datetimes and a normalised numeric
expression. The time line is cut into segments of constant UTC offset (one per transition, plus
one per UTC year), and each query asks croniter for one wall time per segment, never per minute.
`count_fires` counts over the same segments without croniter (matchcount.py): a planner that
skips or catches up years of fire times pays per calendar month, not per fire.
"""

from __future__ import annotations

import copy
import functools
import re
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import MAXYEAR, UTC, date, datetime, time, timedelta
from functools import lru_cache
from itertools import groupby
from typing import TYPE_CHECKING, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronflow.errors import ScheduleError
from cronflow.matchcount import MatchCounter

if TYPE_CHECKING:
    from croniter import croniter

_TICK = timedelta(microseconds=1)
_SAMPLE = timedelta(hours=12)  # no zone changes its offset twice within 12 hours
_DAY_MARGIN = timedelta(hours=3)  # more than any DST shift, for fires_on's search window
# cron(8) treats only clock changes of less than 3 hours as DST: a jump forward of 3 hours or more
# runs just the new minute's jobs, a jump back of more than 3 hours runs the repeated times again
_CRON_JUMP = timedelta(hours=3)

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_MAX_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # February 29 exists in leap years
_LAYOUT = "minute hour day-of-month month day-of-week"


class _Field(NamedTuple):
    name: str
    low: int
    high: int
    names: dict[str, int]


_FIELDS = (
    _Field("minute", 0, 59, {}),
    _Field("hour", 0, 23, {}),
    _Field("day-of-month", 1, 31, {}),
    _Field("month", 1, 12, {name: i for i, name in enumerate(_MONTHS, start=1)}),
    _Field("day-of-week", 0, 7, {name: i for i, name in enumerate(_DAYS)}),
)


class _Spec(NamedTuple):
    """An expression parsed the way cron parses it."""

    texts: tuple[str, ...]  # the five fields as written (macros expanded)
    values: tuple[tuple[int, ...], ...]  # sorted values per field; Sunday is 0 only
    day_or: bool  # both day fields restricted: a day matches if EITHER matches (cron(5))
    fixed: bool  # cron's "fixed-time" job, which DST handling treats differently


def parse_timezone(name: str) -> ZoneInfo:
    """The IANA timezone `name`, or ScheduleError."""
    try:
        zone = ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        zone = None
    # 'localtime' resolves on some hosts, but it means a different zone on each of them
    if zone is None or name in ("localtime", "posixrules"):
        raise ScheduleError(
            f"unknown timezone {name!r}: not an IANA time zone name (e.g. 'Europe/Paris', 'UTC')"
        )
    return zone


@dataclass(frozen=True)
class Schedule:
    """A cron expression in a timezone; immutable, validated on construction."""

    expression: str
    timezone: str = "UTC"
    _spec: _Spec = field(init=False, repr=False, compare=False)
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)
    _cron: croniter = field(init=False, repr=False, compare=False)
    _counter: MatchCounter = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        spec = _parse(self.expression)
        object.__setattr__(self, "_zone", parse_timezone(self.timezone))
        object.__setattr__(self, "_spec", spec)
        object.__setattr__(self, "_cron", _croniter_for(spec))
        object.__setattr__(self, "_counter", MatchCounter(spec.values, spec.day_or))

    @classmethod
    def parse(cls, expression: str, timezone: str = "UTC") -> Schedule:
        """Validate `expression` in `timezone`; ScheduleError says what is wrong. Schedules
        are immutable, so flows sharing an expression share one (parsing is the costly part)."""
        return _parsed_schedule(expression, timezone)

    def next_after(self, at: datetime) -> datetime | None:
        """The first fire instant strictly after `at` (aware UTC), None if it never fires again."""
        return _next_after(self, _utc(at, "next_after"))

    def prev_before(self, at: datetime) -> datetime | None:
        """The last fire instant strictly before `at` (aware UTC), None if there is none."""
        return _prev_before(self, _utc(at, "prev_before"))

    def _next_after(self, after: datetime) -> datetime | None:
        from croniter import CroniterBadDateError  # imported by the first Schedule already

        try:
            seg, walker = _segment_at(self._zone, after), _Walker(self._cron)
            while (found := self._first_in(seg, after, walker)) is None:
                seg = _segment_at(self._zone, seg.end)
        except (CroniterBadDateError, OverflowError):
            return None  # beyond year 9999, or nothing within croniter's search horizon
        return found

    def _prev_before(self, before: datetime) -> datetime | None:
        from croniter import CroniterBadDateError

        try:
            seg, walker = _segment_at(self._zone, before), _Walker(self._cron)
            while (found := self._last_in(seg, before, walker)) is None:
                seg = _segment_at(self._zone, seg.start - _TICK)
        except (CroniterBadDateError, OverflowError):
            return None
        return found

    def fires(self, after: datetime, until: datetime) -> Iterator[datetime]:
        """Every fire instant t with after < t <= until, ascending, aware UTC."""
        start, end = _utc(after, "fires"), _utc(until, "fires")  # checked now, not lazily
        return self._iter_fires(start, end)

    def count_fires(self, after: datetime, until: datetime) -> int:
        """How many fire instants t have after < t <= until: len(list(fires(after, until))),
        at a cost that grows with the calendar months spanned, not with the fires."""
        start, end = _utc(after, "count_fires"), _utc(until, "count_fires")
        total = 0
        try:
            seg = _segment_at(self._zone, start)
            while seg.start <= end:  # a segment's fires are in [seg.start, seg.end)
                total += self._count_in(seg, start, end)
                seg = _segment_at(self._zone, seg.end)
        except OverflowError:
            pass  # next_after stops at the end of year 9998 too
        return total

    def fires_on(self, day: date) -> list[datetime]:
        """The fire instants whose local date, in the schedule's timezone, is `day`."""
        # margins in UTC: wall-clock arithmetic would land in a skipped day (Samoa, 2011-12-30)
        start = datetime.combine(day, time(), tzinfo=self._zone).astimezone(UTC) - _DAY_MARGIN
        end = datetime.combine(day + timedelta(days=1), time(), tzinfo=self._zone).astimezone(UTC)
        fired = self._iter_fires(start, end + _DAY_MARGIN)
        return [t for t in fired if t.astimezone(self._zone).date() == day]

    def describe(self) -> str:
        """A human reading for the CLI, e.g. 'daily at 02:00 Europe/Paris'."""
        return f"{_describe(self._spec) or f'cron {self.expression!r}'} {self.timezone}"

    def _iter_fires(self, after: datetime, until: datetime) -> Iterator[datetime]:
        at = self.next_after(after)
        while at is not None and at <= until:
            yield at
            at = self.next_after(at)

    def _gap(self, seg: _Segment) -> tuple[datetime, datetime] | None:
        """The wall times [from, to) skipped by a jump forward at seg.start, if they matter."""
        if not self._spec.fixed or not timedelta(0) < seg.offset - seg.offset_before < _CRON_JUMP:
            return None  # wildcard jobs simply do not fire in the gap
        return _wall(seg.start, seg.offset_before), _wall(seg.start, seg.offset)

    def _floor(self, seg: _Segment) -> datetime:
        """The earliest wall time that fires inside `seg`."""
        if self._spec.fixed and timedelta(0) < seg.offset_before - seg.offset <= _CRON_JUMP:
            # after a fall-back, the repeated wall times already fired once (fold=0)
            return _wall(seg.start, seg.offset_before)
        return _wall(seg.start, seg.offset)

    def _first_in(self, seg: _Segment, after: datetime, walker: _Walker) -> datetime | None:
        gap = self._gap(seg)
        if gap and seg.start > after and walker.next(gap[0] - _TICK) < gap[1]:
            return seg.start  # skipped fixed-time fires all collapse into the first instant
        wall = walker.next(max(self._floor(seg) - _TICK, _wall(after, seg.offset)))
        return _instant(wall, seg.offset) if wall < _wall(seg.end, seg.offset) else None

    def _count_in(self, seg: _Segment, after: datetime, until: datetime) -> int:
        """_first_in's fires of `seg` in (after, until], counted rather than walked."""
        lowest = max(self._floor(seg), _wall(after, seg.offset) + _TICK)
        beyond = min(_wall(seg.end, seg.offset), _wall(until, seg.offset) + _TICK)
        jumped = 0
        gap = self._gap(seg)
        if gap and after < seg.start <= until and self._counter.count(*gap):
            # the skipped fixed times, and one right at the jump, fire once at seg.start
            jumped, lowest = 1, max(lowest, gap[1] + _TICK)
        return jumped + self._counter.count(lowest, beyond)

    def _last_in(self, seg: _Segment, before: datetime, walker: _Walker) -> datetime | None:
        wall = walker.prev(_wall(min(before, seg.end), seg.offset))
        if wall >= self._floor(seg):
            return _instant(wall, seg.offset)
        gap = self._gap(seg)  # if any, `wall` is the last match before its end
        return seg.start if gap and seg.start < before and wall >= gap[0] else None


def data_interval(schedule: Schedule | None, logical_at: datetime) -> tuple[datetime, datetime]:
    """[previous fire, this fire) if `logical_at` is a fire time, else (logical_at, logical_at)."""
    at = _utc(logical_at, "data_interval")
    if schedule is None or schedule.next_after(at - _TICK) != at:
        return at, at  # a manual run, or a run outside the schedule, covers no interval
    prev = schedule.prev_before(at)
    return (at if prev is None else prev), at


class _Walker:
    """The croniter queries of one next_after/prev_before call, on naive wall times.

    Walking segment by segment asks croniter the same question again and again (a yearly job
    crosses several segments): an answer is reused while it still holds.
    """

    def __init__(self, cron: croniter) -> None:
        self._cron = copy.copy(cron)  # croniter keeps a cursor: never move the shared one
        self._next: tuple[datetime, datetime] | None = None  # (asked, first match after it)
        self._prev: tuple[datetime, datetime] | None = None  # (asked, last match before it)

    def next(self, wall: datetime) -> datetime:
        """The first matching wall time strictly after `wall`."""
        if self._next is None or not self._next[0] <= wall < self._next[1]:
            self._next = (wall, _beyond_years(self._cron.get_next, wall))
        return self._next[1]

    def prev(self, wall: datetime) -> datetime:
        """The last matching wall time strictly before `wall`."""
        if self._prev is None or not self._prev[1] < wall <= self._prev[0]:
            self._prev = (wall, _beyond_years(self._cron.get_prev, wall))
        return self._prev[1]


def _beyond_years(query: Callable[..., datetime], wall: datetime) -> datetime:
    """croniter's answer; its ValueError for a year past 9999 (or before 1) is an OverflowError,
    which next_after and prev_before turn into None."""
    try:
        return query(datetime, start_time=wall)
    except ValueError as exc:
        if "out of range" not in str(exc):
            raise
        raise OverflowError(str(exc)) from None


# --- instants and wall clocks -------------------------------------------------------------------


class _Segment(NamedTuple):
    """A stretch [start, end) of time with one UTC offset."""

    start: datetime
    end: datetime
    offset: timedelta
    offset_before: timedelta  # the offset just before start: larger = overlap, smaller = gap


def _utc(at: datetime, where: str) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ScheduleError(
            f"naive datetime {at.isoformat()} passed to {where}: "
            "cronflow needs timezone-aware datetimes (e.g. tzinfo=timezone.utc)"
        )
    return at.astimezone(UTC)


def _wall(at: datetime, offset: timedelta) -> datetime:
    return at.replace(tzinfo=None) + offset


def _instant(wall: datetime, offset: timedelta) -> datetime:
    return (wall - offset).replace(tzinfo=UTC)


def _offset(zone: ZoneInfo, at: datetime) -> timedelta:
    return at.astimezone(zone).utcoffset() or timedelta(0)  # never None with a ZoneInfo


def _segment_at(zone: ZoneInfo, at: datetime) -> _Segment:
    segments = _year_segments(zone, at.year)
    return segments[bisect_right(segments, at, key=lambda s: s.start) - 1]


@lru_cache(maxsize=1024)
def _year_segments(zone: ZoneInfo, year: int) -> tuple[_Segment, ...]:
    """The constant-offset segments of one UTC year (zoneinfo does not expose transitions)."""
    if year == MAXYEAR:
        raise OverflowError("cronflow computes fire times up to the end of year 9998")
    start, end = datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC)
    starts = [start, *_transitions(zone, start, end)]
    before = _offset(zone, start - _TICK) if year > 1 else _offset(zone, start)
    segments = []
    for begin, finish in zip(starts, [*starts[1:], end], strict=True):
        offset = _offset(zone, begin)
        segments.append(_Segment(begin, finish, offset, before))
        before = offset
    return tuple(segments)


def _transitions(zone: ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
    """Instants in (start, end) where the UTC offset changes, found by sampling then bisecting."""
    found, lo = [], start
    while lo < end:
        hi = min(lo + _SAMPLE, end - timedelta(seconds=1))
        if _offset(zone, hi) != _offset(zone, lo):
            found.append(_first_change(zone, lo, hi))
        lo += _SAMPLE
    return found


def _first_change(zone: ZoneInfo, lo: datetime, hi: datetime) -> datetime:
    """The first second in (lo, hi] whose offset differs from lo's."""
    before = _offset(zone, lo)
    while hi - lo > timedelta(seconds=1):
        mid = lo + timedelta(seconds=(hi - lo).total_seconds() // 2)
        lo, hi = (mid, hi) if _offset(zone, mid) == before else (lo, mid)
    return hi


# --- parsing ------------------------------------------------------------------------------------


def _bad(expression: str, reason: str) -> ScheduleError:
    return ScheduleError(f"bad cron expression {expression!r}: {reason}")


def _parse(expression: str) -> _Spec:
    text = expression
    if expression.startswith("@"):
        if expression == "@reboot":
            raise _bad(expression, "@reboot is not a time schedule (cron runs it at boot)")
        if expression not in _MACROS:
            known = ", ".join(_MACROS)
            raise _bad(expression, f"unknown macro (cron knows, in lowercase: {known})")
        text = _MACROS[expression]
    texts = tuple(text.split())
    if len(texts) != 5:
        extra = " (seconds are not supported)" if len(texts) == 6 else ""
        raise _bad(expression, f"cron takes 5 fields ({_LAYOUT}), got {len(texts)}{extra}")
    values = [_parse_field(expression, t, f) for t, f in zip(texts, _FIELDS, strict=True)]
    values[4] = sorted({v % 7 for v in values[4]})  # Sunday is 0 or 7
    day_or = not texts[2].startswith("*") and not texts[4].startswith("*")
    if not day_or and not _has_date(values[2], values[3]):
        raise _bad(expression, f"day {texts[2]} never comes in month {texts[3]}, so it never fires")
    fixed = not texts[0].startswith("*") and not texts[1].startswith("*")
    return _Spec(texts, tuple(tuple(v) for v in values), day_or, fixed)


def _parse_field(expression: str, text: str, spec: _Field) -> list[int]:
    values: set[int] = set()
    for item in text.split(","):
        if not item:
            raise _bad(expression, f"empty item in the {spec.name} field {text!r}")
        values.update(_parse_item(expression, item, spec))
    return sorted(values)


def _parse_item(expression: str, item: str, spec: _Field) -> range:
    base, slash, step_text = item.partition("/")
    step = _parse_step(expression, item, step_text) if slash else 1
    if base == "*":
        return range(spec.low, spec.high + 1, step)
    if "-" not in base:
        if slash:
            raise _bad(expression, f"a step needs a range or '*' (cron rejects {item!r})")
        value = _parse_value(expression, base, spec)
        return range(value, value + 1)
    first, _, last = base.partition("-")
    low, high = _parse_value(expression, first, spec), _parse_value(expression, last, spec)
    if low > high:
        # cron accepts a reversed range but sets no bit for it: certainly a mistake
        raise _bad(expression, f"range {base!r} is reversed, so it never fires")
    return range(low, high + 1, step)


def _parse_step(expression: str, item: str, text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise _bad(expression, f"step {text!r} in {item!r} is not a number")
    if int(text) == 0:
        raise _bad(expression, f"a zero step in {item!r} (cron rejects it)")
    return int(text)


def _parse_value(expression: str, token: str, spec: _Field) -> int:
    if token.isascii() and token.isdigit():
        value = int(token)
        if not spec.low <= value <= spec.high:
            limits = f"{spec.low}-{spec.high}"
            raise _bad(expression, f"{value} is out of range for {spec.name} ({limits})")
        return value
    if token.lower() in spec.names:
        return spec.names[token.lower()]
    raise _bad(expression, _unknown_token(token, spec))


_EXTENSIONS = (  # croniter/Quartz syntax that cron rejects
    (r".*#.*", "'#' (nth weekday)"),
    (r".*\?.*", "'?'"),
    (r"\d*L|LW?", "'L' (last)"),
    (r"\d*W", "'W' (nearest weekday)"),
)


def _unknown_token(token: str, spec: _Field) -> str:
    """Why cron would reject `token`, naming the extensions croniter accepts."""
    for pattern, what in _EXTENSIONS:
        if re.fullmatch(pattern, token, re.IGNORECASE):
            return f"{what} in {token!r} is not cron syntax (cron rejects it)"
    if not token:
        return f"a number is missing in the {spec.name} field"
    if spec.names and token.isalpha():
        return f"unknown {spec.name} name {token!r} (known: {', '.join(spec.names)})"
    return f"{token!r} is not a number in the {spec.name} field"


def _has_date(days: Sequence[int], months: Sequence[int]) -> bool:
    return any(day <= _MAX_DAYS[month - 1] for month in months for day in days)


def _croniter_for(spec: _Spec) -> croniter:
    """A croniter that matches `spec` on naive wall times.

    croniter reads the day fields its own way ('*/2' next to a weekday is an OR unless
    implement_cron_bug=True), so it gets plain numbers and the day rule through day_or.
    """
    minute, hour, days, months, weekdays = spec.values
    day_or = spec.day_or
    if day_or and (len(days) == 31 or len(weekdays) == 7):
        days, weekdays, day_or = tuple(range(1, 32)), tuple(range(7)), False  # every day
    elif day_or and not _has_date(days, months):
        # the day-of-month side never matches: croniter would search 100 years for it each call
        days, day_or = tuple(range(1, 32)), False
    from croniter import croniter  # here, not at the top: commands that only read pay nothing

    fields = zip((minute, hour, days, months, weekdays), (60, 24, 31, 12, 7), strict=True)
    text = " ".join("*" if len(vs) == full else ",".join(map(str, vs)) for vs, full in fields)
    return croniter(text, datetime(2000, 1, 1), day_or=day_or, max_years_between_matches=100)


# --- describing ---------------------------------------------------------------------------------


def _describe(spec: _Spec) -> str | None:
    """A plain-words reading of the common shapes; None for anything more complex."""
    minute_text, hour_text, day_text, month_text, weekday_text = spec.texts
    minute, hour, days, months, weekdays = spec.values
    every_day = day_text == month_text == weekday_text == "*"
    if every_day and hour_text == "*":
        if minute_text == "*":
            return "every minute"
        step = minute_text.removeprefix("*/")
        if minute_text.startswith("*/") and 60 % int(step) == 0:
            return f"every {step} minutes"
        if len(minute) == 1:
            return f"hourly at :{minute[0]:02d}"
    if len(minute) != 1 or len(hour) != 1:
        return None
    at = f"{hour[0]:02d}:{minute[0]:02d}"
    if every_day:
        return f"daily at {at}"
    if day_text == month_text == "*":
        return f"at {at} on {_weekday_names(weekdays)}"
    if len(days) == 1 and weekday_text == "*":
        if month_text == "*":
            return f"monthly on day {days[0]} at {at}"
        if len(months) == 1:
            return f"yearly on {_MONTHS[months[0] - 1].title()} {days[0]} at {at}"
    return None


def _weekday_names(weekdays: tuple[int, ...]) -> str:
    """'Mon-Fri' for each run of three days or more, the others listed: 'Mon-Fri', 'Sun,Sat'."""
    runs = groupby(enumerate(weekdays), key=lambda pair: pair[1] - pair[0])
    names = []
    for _, run in runs:
        days = [_DAYS[day].title() for _, day in run]
        names.append(f"{days[0]}-{days[-1]}" if len(days) >= 3 else ",".join(days))
    return ",".join(names)


# A fire time is asked for again and again (each run's interval, each attempt's context, by
# every flow sharing the schedule): the answers of a pure function of immutable values, kept.
@functools.lru_cache(maxsize=4096)
def _next_after(schedule: Schedule, after: datetime) -> datetime | None:
    return schedule._next_after(after)


@functools.lru_cache(maxsize=4096)
def _prev_before(schedule: Schedule, before: datetime) -> datetime | None:
    return schedule._prev_before(before)


@functools.lru_cache(maxsize=4096)
def _parsed_schedule(expression: str, timezone: str) -> Schedule:
    return Schedule(expression, timezone)

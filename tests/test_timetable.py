"""Tests for cronflow.timetable: Debian cron semantics, DST days, and the API's consistency."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest

from cronflow.errors import ScheduleError
from cronflow.timetable import Schedule, data_interval, parse_timezone

TICK = timedelta(microseconds=1)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def iso(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def days_between(start: date, end: date) -> list[date]:
    return [start + timedelta(days=n) for n in range((end - start).days)]


# --- DST ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tz", "expression", "day", "expected"),
    [
        # spring forward: a skipped fixed time runs once, at the first instant after the jump
        ("Europe/Paris", "30 2 * * *", date(2024, 3, 31), [utc(2024, 3, 31, 1)]),
        ("America/New_York", "30 2 * * *", date(2024, 3, 10), [utc(2024, 3, 10, 7)]),
        ("Australia/Lord_Howe", "15 2 * * *", date(2024, 10, 6), [utc(2024, 10, 5, 15, 30)]),
        # several skipped fire times, or a skipped one and the one right after the jump: once
        ("Europe/Paris", "0,30 2 * * *", date(2024, 3, 31), [utc(2024, 3, 31, 1)]),
        ("Europe/Paris", "0 2,3 * * *", date(2024, 3, 31), [utc(2024, 3, 31, 1)]),
        # fall back: a repeated fixed time runs once, at its first occurrence
        ("Europe/Paris", "30 2 * * *", date(2024, 10, 27), [utc(2024, 10, 27, 0, 30)]),
        ("America/New_York", "30 2 * * *", date(2024, 11, 3), [utc(2024, 11, 3, 7, 30)]),
        ("America/New_York", "30 1 * * *", date(2024, 11, 3), [utc(2024, 11, 3, 5, 30)]),
        ("Australia/Lord_Howe", "45 1 * * *", date(2024, 4, 7), [utc(2024, 4, 6, 14, 45)]),
        ("Australia/Lord_Howe", "30 2 * * *", date(2024, 4, 7), [utc(2024, 4, 6, 16)]),
        # no DST, half-hour offset
        ("Asia/Kolkata", "30 2 * * *", date(2024, 3, 31), [utc(2024, 3, 30, 21)]),
        ("Asia/Kolkata", "0 0 * * *", date(2024, 10, 27), [utc(2024, 10, 26, 18, 30)]),
    ],
)
def test_fixed_time_jobs_run_once_on_dst_days(
    tz: str, expression: str, day: date, expected: list[datetime]
) -> None:
    assert Schedule.parse(expression, tz).fires_on(day) == expected


@pytest.mark.parametrize(
    ("tz", "expression", "day", "count"),
    [
        ("Europe/Paris", "*/15 * * * *", date(2024, 3, 31), 92),  # 23 hours
        ("Europe/Paris", "*/15 * * * *", date(2024, 10, 27), 100),  # 25 hours
        ("Europe/Paris", "*/15 * * * *", date(2024, 7, 1), 96),
        ("America/New_York", "*/15 * * * *", date(2024, 3, 10), 92),
        ("America/New_York", "*/15 * * * *", date(2024, 11, 3), 100),
        ("Australia/Lord_Howe", "*/15 * * * *", date(2024, 10, 6), 94),  # 23.5 hours
        ("Australia/Lord_Howe", "*/15 * * * *", date(2024, 4, 7), 98),  # 24.5 hours
        ("Asia/Kolkata", "*/15 * * * *", date(2024, 3, 31), 96),
        ("Europe/Paris", "@hourly", date(2024, 3, 31), 23),
        ("Europe/Paris", "@hourly", date(2024, 10, 27), 25),
        ("Australia/Lord_Howe", "@hourly", date(2024, 10, 6), 23),  # 02:00 is skipped
        ("Australia/Lord_Howe", "@hourly", date(2024, 4, 7), 24),  # 01:30-02:00 repeats, no :00
        # an hour field starting with '*' makes a wildcard job: skipped in the gap, twice after
        ("Europe/Paris", "30 */2 * * *", date(2024, 3, 31), 11),
        ("Europe/Paris", "30 */2 * * *", date(2024, 10, 27), 13),
        ("Europe/Paris", "30 2 * * *", date(2024, 10, 27), 1),
    ],
)
def test_fire_counts_on_dst_days(tz: str, expression: str, day: date, count: int) -> None:
    assert len(Schedule.parse(expression, tz).fires_on(day)) == count


@pytest.mark.parametrize(
    ("tz", "expression", "day", "expected"),
    [
        # cron(8) treats a clock change of 3 hours or more as a jump, not as DST: the skipped
        # fixed times do not run (Antarctica/Casey went 02:00 -> 05:00, +8 -> +11)
        ("Antarctica/Casey", "30 3 * * *", date(2009, 10, 18), []),
        ("Antarctica/Casey", "0 5 * * *", date(2009, 10, 18), [utc(2009, 10, 17, 18)]),
        # a jump back of exactly 3 hours is still DST for cron: the fixed time runs once
        ("Antarctica/Casey", "30 0 * * *", date(2010, 3, 5), [utc(2010, 3, 4, 13, 30)]),
        # Samoa skipped 30 December 2011 (+24 hours): nothing of that day runs on the next one
        ("Pacific/Apia", "30 12 * * *", date(2011, 12, 30), []),
        ("Pacific/Apia", "30 12 * * *", date(2011, 12, 31), [utc(2011, 12, 30, 22, 30)]),
        ("Pacific/Apia", "0 0 * * *", date(2011, 12, 31), [utc(2011, 12, 30, 10)]),
    ],
)
def test_clock_jumps_of_3_hours_or_more_are_not_dst(
    tz: str, expression: str, day: date, expected: list[datetime]
) -> None:
    assert Schedule.parse(expression, tz).fires_on(day) == expected


@pytest.mark.parametrize("start", [utc(2024, 3, 30), utc(2024, 10, 26)])
def test_hourly_in_paris_fires_every_utc_hour_across_dst(start: datetime) -> None:
    fired = list(Schedule.parse("@hourly", "Europe/Paris").fires(start, start + timedelta(days=2)))
    assert fired == [start + timedelta(hours=n) for n in range(1, 49)]


def test_wildcard_job_fires_in_both_occurrences_of_the_repeated_hour() -> None:
    fired = Schedule.parse("*/30 * * * *", "America/New_York").fires(
        utc(2024, 11, 3, 4, 45), utc(2024, 11, 3, 7)
    )
    # 01:00 and 01:30 EDT, then 01:00 and 01:30 again in EST, then 02:00 EST
    assert [t.strftime("%H:%M") for t in fired] == ["05:00", "05:30", "06:00", "06:30", "07:00"]


@pytest.mark.parametrize(
    ("expression", "at", "expected_next", "expected_prev"),
    [
        # inside the repeated hour of the fall-back day (02:45 CEST, then 02:45 CET)
        ("30 2 * * *", "2024-10-27 00:45", "2024-10-28 01:30", "2024-10-27 00:30"),
        ("30 2 * * *", "2024-10-27 01:45", "2024-10-28 01:30", "2024-10-27 00:30"),
        ("*/15 * * * *", "2024-10-27 00:50", "2024-10-27 01:00", "2024-10-27 00:45"),
        ("0 * * * *", "2024-10-27 00:30", "2024-10-27 01:00", "2024-10-27 00:00"),
        # around the spring-forward jump at 01:00 UTC
        ("30 2 * * *", "2024-03-31 00:59", "2024-03-31 01:00", "2024-03-30 01:30"),
        ("30 2 * * *", "2024-03-31 01:30", "2024-04-01 00:30", "2024-03-31 01:00"),
    ],
)
def test_next_and_prev_around_paris_transitions(
    expression: str, at: str, expected_next: str, expected_prev: str
) -> None:
    schedule = Schedule.parse(expression, "Europe/Paris")
    assert schedule.next_after(iso(at)) == iso(expected_next)
    assert schedule.prev_before(iso(at)) == iso(expected_prev)


def cron8_fires(tz: str, matches, fixed: bool, after: datetime, until: datetime) -> list:
    """cron(8)'s DST rules read minute by minute: the slow, obvious version of the module."""
    zone, fired, t = ZoneInfo(tz), [], after
    while (t := t + timedelta(minutes=1)) <= until:
        local, before = t.astimezone(zone), (t - timedelta(minutes=1)).astimezone(zone)
        wall = local.replace(tzinfo=None)
        first_occurrence = wall.replace(tzinfo=zone, fold=0).astimezone(UTC) == t
        if matches(wall) and (first_occurrence or not fixed):
            fired.append(t)  # a wildcard job, or the first occurrence of a fixed time
        elif fixed and local.utcoffset() > before.utcoffset():
            skipped = (local.utcoffset() - before.utcoffset()) // timedelta(minutes=1)
            if any(matches(wall - timedelta(minutes=n)) for n in range(1, skipped + 1)):
                fired.append(t)  # the jump skipped fixed times: run once, now
    return fired


@pytest.mark.parametrize(
    ("tz", "day"),
    [
        ("Europe/Paris", date(2024, 3, 31)),
        ("Europe/Paris", date(2024, 10, 27)),
        ("America/New_York", date(2024, 3, 10)),
        ("America/New_York", date(2024, 11, 3)),
        ("Australia/Lord_Howe", date(2024, 4, 6)),
        ("Australia/Lord_Howe", date(2024, 10, 5)),
        ("America/Santiago", date(2024, 4, 7)),  # DST ends at midnight
        ("America/Santiago", date(2024, 9, 8)),  # 00:00 does not exist
        ("Pacific/Chatham", date(2024, 4, 6)),  # +13:45 -> +12:45 at 03:45
    ],
)
@pytest.mark.parametrize(
    ("expression", "matches", "fixed"),
    [
        ("*/20 * * * *", lambda w: w.minute % 20 == 0, False),
        ("10,40 */2 * * *", lambda w: w.minute in (10, 40) and w.hour % 2 == 0, False),
        ("0,30 0-3,23 * * *", lambda w: w.minute in (0, 30) and w.hour in (0, 1, 2, 3, 23), True),
        ("50 2 * * *", lambda w: (w.hour, w.minute) == (2, 50), True),
    ],
)
def test_fires_match_a_minute_by_minute_reading_of_cron8(
    tz: str, day: date, expression: str, matches, fixed: bool
) -> None:
    after = datetime.combine(day, datetime.min.time(), tzinfo=UTC) - timedelta(days=1)
    until = after + timedelta(days=3)
    expected = cron8_fires(tz, matches, fixed, after, until)
    assert list(Schedule.parse(expression, tz).fires(after, until)) == expected


# --- calendar -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "tz", "at", "expected"),
    [
        ("0 0 1 * *", "UTC", utc(2024, 12, 31, 23, 30), utc(2025, 1, 1)),
        ("0 0 31 * *", "UTC", utc(2024, 4, 1), utc(2024, 5, 31)),
        ("59 23 31 12 *", "UTC", utc(2024, 6, 1), utc(2024, 12, 31, 23, 59)),
        ("@yearly", "Europe/Paris", utc(2024, 6, 1), utc(2024, 12, 31, 23)),
        ("@annually", "America/New_York", utc(2024, 12, 31, 12), utc(2025, 1, 1, 5)),
        ("@monthly", "Asia/Kolkata", utc(2024, 2, 15), utc(2024, 2, 29, 18, 30)),
        ("0 0 29 2 *", "UTC", utc(2024, 2, 28), utc(2024, 2, 29)),
        ("0 0 29 2 *", "UTC", utc(2024, 3, 1), utc(2028, 2, 29)),
        ("0 0 29 2 *", "UTC", utc(2097, 1, 1), utc(2104, 2, 29)),  # 2100 is no leap year
        ("@daily", "UTC", utc(2024, 1, 1), utc(2024, 1, 2)),  # strictly after
        ("@weekly", "UTC", utc(2024, 5, 1), utc(2024, 5, 5)),  # a Sunday
    ],
)
def test_next_after_over_month_and_year_ends(
    expression: str, tz: str, at: datetime, expected: datetime
) -> None:
    assert Schedule.parse(expression, tz).next_after(at) == expected


def test_leap_days() -> None:
    schedule = Schedule.parse("0 0 29 2 *")
    assert list(schedule.fires(utc(2024, 1, 1), utc(2033, 1, 1))) == [
        utc(2024, 2, 29),
        utc(2028, 2, 29),
        utc(2032, 2, 29),
    ]
    assert schedule.prev_before(utc(2028, 1, 1)) == utc(2024, 2, 29)


@pytest.mark.parametrize(
    ("expression", "same_as"),
    [
        ("0 0 * * 7", "0 0 * * 0"),
        ("0 0 * * sun", "0 0 * * 0"),
        ("0 0 * * 5-7", "0 0 * * 0,5,6"),
        ("0 0 * * MON-fri", "0 0 * * 1-5"),
        ("0 0 * * mon,Wed,FRI", "0 0 * * 1,3,5"),
        ("0 0 * * 1-7/2", "0 0 * * 0,1,3,5"),
        ("0 0 1 jan,JUL *", "0 0 1 1,7 *"),
        ("0 0 1 jan-mar/2 *", "0 0 1 1,3 *"),
        ("@midnight", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
    ],
)
def test_equivalent_spellings(expression: str, same_as: str) -> None:
    window = (utc(2024, 1, 1), utc(2024, 9, 1))
    assert list(Schedule.parse(expression).fires(*window)) == list(
        Schedule.parse(same_as).fires(*window)
    )


@pytest.mark.parametrize(
    ("expression", "minutes", "hours"),
    [
        ("10-30/10 * * * *", [10, 20, 30], range(24)),
        ("*/25 * * * *", [0, 25, 50], range(24)),
        ("5 1-7/2 * * *", [5], [1, 3, 5, 7]),
        ("0-59/30 */12 * * *", [0, 30], [0, 12]),
    ],
)
def test_steps(expression: str, minutes: list[int], hours: range | list[int]) -> None:
    fired = Schedule.parse(expression).fires_on(date(2024, 5, 1))
    assert fired == [utc(2024, 5, 1, h, m) for h in hours for m in minutes]


@pytest.mark.parametrize(
    ("expression", "matches"),
    [
        # both day fields restricted: either one matches (weekday(): Monday is 0)
        ("0 0 1 * mon", lambda d: d.day == 1 or d.weekday() == 0),
        ("0 0 13 * fri", lambda d: d.day == 13 or d.weekday() == 4),
        ("0 0 1-31 * mon", lambda d: True),
        ("0 0 31 2 mon", lambda d: d.month == 2 and d.weekday() == 0),
        # a day field starting with '*' (even '*/2'): both must match
        ("0 0 */2 * mon", lambda d: d.day % 2 == 1 and d.weekday() == 0),
        ("0 0 13 * */5", lambda d: d.day == 13 and d.weekday() in (4, 6)),
        ("0 0 * * mon", lambda d: d.weekday() == 0),
        ("0 0 */10 * *", lambda d: d.day in (1, 11, 21, 31)),
    ],
)
def test_day_of_month_and_day_of_week_rule(expression: str, matches) -> None:
    expected = [
        datetime.combine(d, datetime.min.time(), tzinfo=UTC)
        for d in days_between(date(2024, 1, 1), date(2026, 1, 1))
        if matches(d)
    ]
    window = (utc(2023, 12, 31), utc(2025, 12, 31))
    assert list(Schedule.parse(expression).fires(*window)) == expected


# --- consistency --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "tz", "start", "days"),
    [
        ("*/15 * * * *", "Europe/Paris", utc(2024, 10, 26, 22), 2),
        ("*/15 * * * *", "Australia/Lord_Howe", utc(2024, 10, 5, 12), 2),
        ("30 2 * * *", "Europe/Paris", utc(2024, 3, 25), 14),
        ("30 2 * * *", "Europe/Paris", utc(2024, 10, 20), 14),
        ("0,30 1,2 * * *", "America/New_York", utc(2024, 11, 2), 3),
        ("0,30 1,2 * * *", "America/New_York", utc(2024, 3, 9), 3),
        ("@hourly", "Australia/Lord_Howe", utc(2024, 4, 5), 3),
        ("0 0 1 * mon", "Asia/Kolkata", utc(2024, 1, 1), 90),
        ("@weekly", "America/New_York", utc(2024, 1, 1), 366),
    ],
)
def test_next_prev_and_fires_agree(expression: str, tz: str, start: datetime, days: int) -> None:
    schedule = Schedule.parse(expression, tz)
    end = start + timedelta(days=days)
    fired = list(schedule.fires(start, end))
    assert len(fired) > 3
    assert all(a < b for a, b in pairwise(fired))
    assert all(t.tzinfo == UTC for t in fired)
    for earlier, later in pairwise(fired):
        assert schedule.next_after(earlier) == later
        assert schedule.next_after(later - TICK) == later
        assert schedule.prev_before(later) == earlier
        assert schedule.prev_before(earlier + (later - earlier) / 2) == earlier
    walked_back, at = [], end + TICK
    while (at := schedule.prev_before(at)) is not None and at > start:
        walked_back.append(at)
    assert walked_back[::-1] == fired


def test_the_ends_of_time_give_none() -> None:
    schedule = Schedule.parse("@yearly", "Europe/Paris")
    assert schedule.next_after(utc(9998, 6, 1)) == utc(9998, 12, 31, 23)
    assert schedule.next_after(utc(9999, 6, 1)) is None  # datetime stops at 9999
    assert schedule.next_after(utc(9998, 12, 31, 23)) is None  # croniter would look in 10000
    assert Schedule.parse("@daily").prev_before(utc(1, 1, 1, 12)) == utc(1, 1, 1)
    assert Schedule.parse("@daily").prev_before(utc(1, 1, 1)) is None


def test_inputs_in_any_timezone_give_utc_outputs() -> None:
    at = datetime(2024, 7, 1, 9, 0, tzinfo=ZoneInfo("Asia/Kolkata"))
    result = Schedule.parse("0 * * * *", "Europe/Paris").next_after(at)
    assert result == utc(2024, 7, 1, 4) and result.tzinfo == UTC


# --- data intervals -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schedule", "logical_at", "expected"),
    [
        (Schedule.parse("@daily"), utc(2024, 1, 2), (utc(2024, 1, 1), utc(2024, 1, 2))),
        (Schedule.parse("@daily"), utc(2024, 1, 2, 0, 30), (utc(2024, 1, 2, 0, 30),) * 2),
        (None, utc(2024, 1, 2, 0, 30), (utc(2024, 1, 2, 0, 30),) * 2),
        # the day after spring forward in Paris is 23 hours long
        (
            Schedule.parse("@daily", "Europe/Paris"),
            utc(2024, 3, 31, 22),
            (utc(2024, 3, 30, 23), utc(2024, 3, 31, 22)),
        ),
        (
            Schedule.parse("30 2 * * *", "Europe/Paris"),
            datetime(2024, 4, 1, 2, 30, tzinfo=ZoneInfo("Europe/Paris")),
            (utc(2024, 3, 31, 1), utc(2024, 4, 1, 0, 30)),
        ),
    ],
)
def test_data_interval(
    schedule: Schedule | None, logical_at: datetime, expected: tuple[datetime, datetime]
) -> None:
    assert data_interval(schedule, logical_at) == expected


# --- describe, value, errors --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "tz", "expected"),
    [
        ("0 2 * * *", "Indian/Reunion", "daily at 02:00 Indian/Reunion"),
        ("@daily", "UTC", "daily at 00:00 UTC"),
        ("*/15 * * * *", "UTC", "every 15 minutes UTC"),
        ("* * * * *", "UTC", "every minute UTC"),
        ("30 2 * * 1-5", "Europe/Paris", "at 02:30 on Mon-Fri Europe/Paris"),
        ("30 2 * * sat,sun", "Europe/Paris", "at 02:30 on Sun,Sat Europe/Paris"),
        ("5 * * * *", "UTC", "hourly at :05 UTC"),
        ("@monthly", "UTC", "monthly on day 1 at 00:00 UTC"),
        ("@yearly", "UTC", "yearly on Jan 1 at 00:00 UTC"),
        ("*/7 * * * *", "UTC", "cron '*/7 * * * *' UTC"),
        ("0 0 1 * mon", "UTC", "cron '0 0 1 * mon' UTC"),
    ],
)
def test_describe(expression: str, tz: str, expected: str) -> None:
    assert Schedule.parse(expression, tz).describe() == expected


def test_schedule_is_an_immutable_value_that_keeps_the_expression() -> None:
    schedule = Schedule.parse("@daily", "Indian/Reunion")
    assert (schedule.expression, schedule.timezone) == ("@daily", "Indian/Reunion")
    assert schedule == Schedule("@daily", "Indian/Reunion")
    assert len({schedule, Schedule.parse("@daily", "Indian/Reunion")}) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        schedule.expression = "@hourly"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("5/15 * * * *", "a step needs a range or '*' (cron rejects '5/15')"),
        ("*/0 * * * *", "a zero step in '*/0'"),
        ("*/x * * * *", "step 'x' in '*/x' is not a number"),
        ("", "cron takes 5 fields (minute hour day-of-month month day-of-week), got 0"),
        ("* * * *", "got 4"),
        ("0 * * * * *", "got 6 (seconds are not supported)"),
        ("60 * * * *", "60 is out of range for minute (0-59)"),
        ("0 24 * * *", "24 is out of range for hour (0-23)"),
        ("0 0 0 * *", "0 is out of range for day-of-month (1-31)"),
        ("0 0 1 13 *", "13 is out of range for month (1-12)"),
        ("0 0 * * 8", "8 is out of range for day-of-week (0-7)"),
        ("0 0 L * *", "'L' (last)"),
        ("0 0 * * 5L", "'L' (last)"),
        ("0 0 15W * *", "'W' (nearest weekday)"),
        ("0 0 ? * mon", "'?'"),
        ("0 0 * * mon#2", "'#' (nth weekday)"),
        ("0 0 * foo *", "unknown month name 'foo'"),
        ("0 0 * * monday", "unknown day-of-week name 'monday'"),
        ("abc * * * *", "'abc' is not a number in the minute field"),
        ("1,,2 * * * *", "empty item in the minute field"),
        ("0 0 1, * *", "empty item in the day-of-month field"),
        ("1- * * * *", "a number is missing"),
        ("0 5-1 * * *", "range '5-1' is reversed, so it never fires"),
        ("0 0 * * fri-sun", "range 'fri-sun' is reversed"),  # Sunday is 0 in a range
        ("0 0 30 2 *", "never fires"),
        ("0 0 31 4,6,9,11 *", "never fires"),
        ("0 0 30,31 feb */2", "never fires"),
        ("@reboot", "not a time schedule"),
        ("@Daily", "unknown macro"),
        ("@every 5m", "unknown macro"),
    ],
)
def test_rejected_expressions(expression: str, reason: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        Schedule.parse(expression)
    assert str(caught.value).startswith(f"bad cron expression {expression!r}: ")
    assert reason in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("name", ["Mars/Olympus", "utc", "", "../etc/passwd", "localtime"])
def test_unknown_timezones(name: str) -> None:
    with pytest.raises(ScheduleError, match=re.escape(f"unknown timezone {name!r}")):
        Schedule.parse("@daily", name)
    with pytest.raises(ScheduleError):
        parse_timezone(name)


def test_parse_timezone() -> None:
    assert parse_timezone("Australia/Lord_Howe") == ZoneInfo("Australia/Lord_Howe")


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.next_after(datetime(2024, 1, 1)),
        lambda s: s.prev_before(datetime(2024, 1, 1)),
        lambda s: s.fires(datetime(2024, 1, 1), utc(2024, 1, 2)),
        lambda s: s.fires(utc(2024, 1, 1), datetime(2024, 1, 2)),
        lambda s: data_interval(s, datetime(2024, 1, 1)),
        lambda s: data_interval(None, datetime(2024, 1, 1)),
    ],
)
def test_naive_datetimes_are_rejected(call) -> None:
    with pytest.raises(ScheduleError, match="naive datetime 2024-01-0"):
        call(Schedule.parse("@daily"))

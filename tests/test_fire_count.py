"""Schedule.count_fires: counting fire times by arithmetic gives what walking them gives.

The reference is the walk itself, `len(list(fires(after, until)))`, whose fire times
tests/test_timetable.py and tests/test_cron_conformance.py hold to cron(8): every DST rule
(skipped fixed times once at the jump, repeated ones once, wildcards in both) must come out of
the count too. Where a walk would take millions of steps, the reference is plain arithmetic.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cronflow.errors import ScheduleError
from cronflow.timetable import Schedule

TICK = timedelta(microseconds=1)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def walked(schedule: Schedule, after: datetime, until: datetime) -> int:
    return sum(1 for _ in schedule.fires(after, until))


@pytest.mark.parametrize(
    ("expression", "tz", "after", "until"),
    [
        # DST days, fixed-time and wildcard jobs, bounds on and between fire times
        ("30 2 * * *", "Europe/Paris", utc(2024, 3, 29), utc(2024, 4, 2)),
        ("30 2 * * *", "Europe/Paris", utc(2024, 10, 25), utc(2024, 10, 29)),
        ("30 2 * * *", "Europe/Paris", utc(2024, 3, 31, 1) - TICK, utc(2024, 3, 31, 1)),
        ("30 2 * * *", "Europe/Paris", utc(2024, 3, 31, 1), utc(2024, 4, 1)),
        ("0,30 2 * * *", "Europe/Paris", utc(2024, 3, 30), utc(2024, 4, 1)),
        ("0 2,3 * * *", "Europe/Paris", utc(2024, 3, 30), utc(2024, 4, 1)),  # jump + 03:00: once
        ("0 3 * * *", "Europe/Paris", utc(2024, 3, 30), utc(2024, 4, 1)),
        ("*/15 * * * *", "Europe/Paris", utc(2024, 3, 30, 22), utc(2024, 3, 31, 3)),
        ("*/15 * * * *", "Europe/Paris", utc(2024, 10, 26, 22), utc(2024, 10, 27, 3)),
        ("30 */2 * * *", "Europe/Paris", utc(2024, 10, 26), utc(2024, 10, 28)),
        ("30 1 * * *", "America/New_York", utc(2024, 11, 2), utc(2024, 11, 5)),
        ("0,30 1,2 * * *", "America/New_York", utc(2024, 3, 9), utc(2024, 3, 12)),
        ("* * * * *", "America/New_York", utc(2024, 11, 3, 4, 30), utc(2024, 11, 3, 7, 30)),
        # half-hour zones: no DST (Kolkata), DST of an hour (Adelaide), of 30 minutes (Lord Howe)
        ("0 0 * * *", "Asia/Kolkata", utc(2024, 1, 1), utc(2024, 3, 1)),
        ("30 2 * * *", "Australia/Adelaide", utc(2024, 4, 5), utc(2024, 4, 8)),
        ("30 2 * * *", "Australia/Adelaide", utc(2024, 10, 4), utc(2024, 10, 8)),
        ("15 2 * * *", "Australia/Lord_Howe", utc(2024, 10, 4), utc(2024, 10, 8)),
        ("45 1 * * *", "Australia/Lord_Howe", utc(2024, 4, 5), utc(2024, 4, 9)),
        ("@hourly", "Australia/Lord_Howe", utc(2024, 4, 5), utc(2024, 4, 9)),
        ("*/15 * * * *", "Australia/Lord_Howe", utc(2024, 10, 5, 12), utc(2024, 10, 5, 18)),
        ("0 0 * * *", "America/Santiago", utc(2024, 9, 6), utc(2024, 9, 10)),  # no 00:00
        ("*/20 * * * *", "Pacific/Chatham", utc(2024, 4, 5, 12), utc(2024, 4, 6, 18)),
        # clock jumps of 3 hours or more are not DST; a day that never was (Samoa)
        ("30 3 * * *", "Antarctica/Casey", utc(2009, 10, 16), utc(2009, 10, 20)),
        ("30 0 * * *", "Antarctica/Casey", utc(2010, 3, 3), utc(2010, 3, 7)),
        ("30 12 * * *", "Pacific/Apia", utc(2011, 12, 28), utc(2012, 1, 2)),
        # month and year ends, leap days, the day rules of cron(5)
        ("0 0 29 2 *", "UTC", utc(2015, 1, 1), utc(2025, 1, 1)),
        ("0 0 31 * *", "Europe/Paris", utc(2016, 1, 1), utc(2026, 1, 1)),
        ("59 23 31 12 *", "America/New_York", utc(2016, 1, 1), utc(2026, 1, 1)),
        ("0 0 1-7 * 1", "UTC", utc(2016, 1, 1), utc(2026, 1, 1)),  # days 1-7 OR Mondays
        ("0 0 */2 * sun", "UTC", utc(2016, 1, 1), utc(2026, 1, 1)),  # odd days AND Sundays
        ("0 12 1,15 * mon", "Europe/Paris", utc(2016, 1, 1), utc(2026, 1, 1)),
        ("0 0 31 2 1", "UTC", utc(2016, 1, 1), utc(2026, 1, 1)),  # Mondays of February
        ("30 4 * 2 *", "UTC", utc(2023, 1, 1), utc(2025, 1, 1)),
        # ten years of a daily and a weekly job across every DST change in between
        ("30 2 * * *", "Europe/Paris", utc(2015, 1, 1), utc(2025, 1, 1)),
        ("30 2 * * *", "America/New_York", utc(2015, 1, 1, 3, 17), utc(2025, 1, 1, 9, 41, 5)),
        ("@weekly", "Australia/Lord_Howe", utc(2015, 6, 1), utc(2025, 6, 1)),
        # empty and reversed ranges
        ("* * * * *", "UTC", utc(2024, 1, 1), utc(2024, 1, 1)),
        ("* * * * *", "UTC", utc(2024, 1, 2), utc(2024, 1, 1)),
    ],
)
def test_count_equals_the_walk(expression: str, tz: str, after: datetime, until: datetime) -> None:
    schedule = Schedule.parse(expression, tz)
    assert schedule.count_fires(after, until) == walked(schedule, after, until)


@pytest.mark.parametrize("tz", ["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata"])
@pytest.mark.parametrize(("expression", "every"), [("* * * * *", 1), ("*/15 * * * *", 15)])
def test_wildcard_jobs_fire_every_utc_step_for_ten_years(tz: str, expression: str, every: int):
    """A wildcard job fires at each of its minutes in both occurrences of a repeated hour and
    nowhere in a skipped one: in a zone whose offsets are whole quarter hours, every UTC step."""
    after, until = utc(2016, 5, 17, 8, 3, 12), utc(2026, 5, 17, 8, 3, 12)
    minutes = (until - after) // timedelta(minutes=every)
    assert Schedule.parse(expression, tz).count_fires(after, until) == minutes


def test_a_count_past_the_end_of_time_stops_where_fires_stop() -> None:
    schedule = Schedule.parse("@yearly", "Europe/Paris")
    assert schedule.count_fires(utc(9990, 1, 1), utc(9999, 12, 31)) == walked(
        schedule, utc(9990, 1, 1), utc(9999, 12, 31)
    )


def test_count_needs_aware_datetimes() -> None:
    with pytest.raises(ScheduleError, match="count_fires"):
        Schedule.parse("@daily").count_fires(datetime(2024, 1, 1), utc(2024, 2, 1))


EXPRESSIONS = [
    "30 2 * * *",
    "0,30 1-3 * * *",
    "*/20 * * * *",
    "15 */3 * * *",
    "0 0 1-7 * 1",
    "0 12 29 2 *",
    "45 1 * * 0,6",
    "5 4 */2 * sun",
]
ZONES = ["UTC", "Europe/Paris", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]


@settings(max_examples=150, deadline=None)
@given(
    expression=st.sampled_from(EXPRESSIONS),
    tz=st.sampled_from(ZONES),
    after=st.datetimes(datetime(2000, 1, 1), datetime(2030, 1, 1), timezones=st.just(UTC)),
    span=st.timedeltas(timedelta(0), timedelta(days=40)),
)
def test_count_equals_the_walk_anywhere(
    expression: str, tz: str, after: datetime, span: timedelta
) -> None:
    schedule = Schedule.parse(expression, tz)
    assert schedule.count_fires(after, after + span) == walked(schedule, after, after + span)

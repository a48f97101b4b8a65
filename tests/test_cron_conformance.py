"""Proof of equal timing: every crontab line cronflow imports fires exactly when Debian's cron would.

The reference is tests/cron_reference.py, a model of cron's own source (entry.c, cron.c) that
shares no code with cronflow. Each expression goes through the import path (cronflow.crontab
reads the line as cron does, then cronflow.timetable.Schedule computes the fire times) and is
compared, fire time by fire time, with the reference walking the wall clock minute by minute.

What is compared, over 14 months (2024 and the February of 2025, so leap days count):
* every expression, every fire of the whole range, in a zone whose offset never changes (UTC for
  CALENDAR, Asia/Kolkata for DST): the wall-clock matching of every field, every day;
* in the zones with DST, every fire of the whole range for the expressions with at most DENSE
  fires there; the denser ones (a year of `*/15 * * * *` is 40,000 fires, 2 s of CPU per zone)
  in a day around every edge of cronflow's constant-offset segments (each DST change, each UTC
  new year, the range's ends) and in two days around both ends of each February.
Why the windows suffice: inside a segment, cronflow's fire times are the wall-clock matches shifted
by that segment's one offset (timetable._first_in asks croniter for the next wall time and maps it
back), the same matches the fixed-offset zone checks all year; only a segment's edges (a gap, an
overlap, a year's cut) differ, and the windows hold all of them.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo

import pytest
from cron_reference import Entry, Rejected, cron_fires, parse_entry

from cronflow.crontab import LineStatus, read_job_line
from cronflow.timetable import Schedule

AFTER, UNTIL = datetime(2023, 12, 31, tzinfo=UTC), datetime(2025, 3, 2, tzinfo=UTC)
DENSE = 1000  # above this many fires, compare around the days that matter (see windows())

CALENDAR_ZONES = ("UTC", "Europe/Paris")
DST_ZONES = (
    "Europe/Paris",  # 02:00 -> 03:00 and 03:00 -> 02:00
    "America/New_York",
    "Australia/Lord_Howe",  # 30-minute shifts
    "America/Santiago",  # shifts at midnight: 00:00 does not exist in September
    "Pacific/Chatham",  # +13:45 / +12:45
    "Asia/Kolkata",  # no DST, a half-hour offset
)

# (expression, what cron does with it): "fires", "never" (accepted, never fires), or the error
# cron reports. The comment says what makes the line tricky.
CALENDAR = [
    # day-of-month / day-of-week: both restricted -> either matches
    ("0 0 1,15 * 5", "fires"),  # the 1st, the 15th and every Friday
    ("30 4 1,15 * 5", "fires"),  # crontab(5)'s own example
    ("0 0 1-7 * 1", "fires"),  # NOT the first Monday: days 1-7 plus every Monday
    ("0 0 13 * fri", "fires"),
    ("0 0 1-31 * 1", "fires"),
    ("0 0 1 * 0-6", "fires"),  # every day
    ("0 0 31 * 1", "fires"),
    ("0 0 31 2 1", "fires"),  # day 31 never comes in February; Mondays of February do
    ("0 0 29 2 1", "fires"),  # the leap day and the Mondays of February
    # a day field starting with '*' -> both must match (croniter's default differs)
    ("0 0 */2 * sun", "fires"),  # Debian's man page: Sundays that are odd dates
    ("0 0 */1 * 1", "fires"),
    ("0 0 1 * */1", "fires"),
    ("0 0 */2 * 1-5", "fires"),
    ("0 0 1-15 * */2", "fires"),
    ("0 0 * * 1", "fires"),
    ("0 0 1 * *", "fires"),
    # Sunday as 0 and as 7, names, names in ranges and lists
    ("0 12 * * 0", "fires"),
    ("0 12 * * 7", "fires"),
    ("0 12 * * 0,7", "fires"),
    ("0 12 * * 5-7", "fires"),
    ("0 12 * * SUN", "fires"),
    ("0 12 * * sat-7", "fires"),
    ("0 12 * * */7", "fires"),  # 0 and 7: Sundays
    ("0 12 * * 1-7/3", "fires"),  # 1, 4, 7
    ("0 12 * * Mon-Fri/2", "fires"),
    ("0 0 * jan-mar *", "fires"),
    ("0 0 1 JAN,jul *", "fires"),
    ("0 0 1 jan-dec/3 *", "fires"),
    ("0 0 1 1-mar *", "fires"),
    # steps: from the start of the range, not aligned on the hour or the month
    ("*/7 * * * *", "fires"),  # :00 :07 ... :56, then :00 again
    ("0 */5 * * *", "fires"),
    ("0 1-23/5 * * *", "fires"),
    ("0 0 */5 * *", "fires"),  # 1, 6, 11, ... 31
    ("0 0 2-31/10 * *", "fires"),
    ("0 0 * */5 *", "fires"),  # January, June, November
    ("0 0 * * */2", "fires"),
    ("*/60 * * * *", "fires"),
    ("*/100 6 * * *", "fires"),  # a step beyond the range: just the first value
    ("0 0 */31 * *", "fires"),
    ("59 23 */30 * *", "fires"),  # days 1 and 31
    ("0 0 1-31/32 * *", "fires"),
    ("10-30/10 * * * *", "fires"),
    ("0-59/30 */12 * * *", "fires"),
    ("05 07 * * *", "fires"),  # leading zeros
    # month ends and leap days
    ("0 0 31 * *", "fires"),
    ("0 0 30 * *", "fires"),
    ("59 23 28-31 * *", "fires"),
    ("0 0 28-31 2 *", "fires"),
    ("0 0 29 2 *", "fires"),
    ("59 23 31 12 *", "fires"),
    # macros, lowercase only
    ("@yearly", "fires"),
    ("@annually", "fires"),
    ("@monthly", "fires"),
    ("@weekly", "fires"),
    ("@daily", "fires"),
    ("@midnight", "fires"),
    ("@hourly", "fires"),
    # what cron reads differently from what is written (cron ignores the rest of the field)
    ("5-10-12 * * * *", "fires"),  # 5-10
    ("*/15/2 * * * *", "fires"),  # */15
    ("*-5 3 * * *", "fires"),  # *
    ("0 0 1 * fri-sun", "fires"),  # a reversed range selects no weekday: the 1st only
    ("0 0 10-5 * mon", "fires"),  # no day of month: Mondays only
    ("0 1,5-1 * * *", "fires"),  # 1 only
    # accepted by cron, but never fires
    ("0 5-1 * * *", "never"),  # a reversed range selects nothing
    ("0 0 * * fri-sun", "never"),  # Sunday is 0 in a range: 5-0 is reversed
    ("0 0 * dec-jan *", "never"),
    ("0 0 30 2 *", "never"),
    ("0 0 31 4,6,9,11 *", "never"),
    ("0 0 30,31 feb */2", "never"),
    ("0 0 fri-sun 2 31", "bad day-of-month"),  # no names in the day-of-month field
    # rejected by cron
    ("5/15 * * * *", "bad minute"),  # Debian: a step needs a range (croniter reads 5,20,35,50)
    ("60 * * * *", "bad minute"),
    ("*/0 * * * *", "bad minute"),
    ("5-64/30 * * * *", "bad minute"),  # Debian checks both ends of a range
    ("1,,2 * * * *", "bad minute"),
    ("-5 * * * *", "bad minute"),
    ("abc * * * *", "bad minute"),
    ("* 24 * * *", "bad hour"),
    ("0 0 0 * *", "bad day-of-month"),
    ("0 0 32 * *", "bad day-of-month"),
    ("0 0 L * *", "bad day-of-month"),
    ("0 0 15W * *", "bad day-of-month"),
    ("0 0 ? * mon", "bad day-of-month"),
    ("0 0 * 0 *", "bad month"),
    ("0 0 * 13 *", "bad month"),
    ("0 0 * january *", "bad month"),
    ("0 0 * * 8", "bad day-of-week"),
    ("0 0 * * 5L", "bad day-of-week"),
    ("0 0 * * mon#2", "fires"),  # no "2nd Monday" in cron: it reads "mon", every Monday
    ("0 0 * * monday", "bad day-of-week"),
    ("0 0 * * */mon", "bad day-of-week"),
    ("0 0 * *", "bad day-of-week"),  # four fields: the command would be the fifth
    ("* * * * * *", "bad command"),  # Debian: a sixth time field (seconds) is an error
    ("@Daily", "bad time specifier"),
    ("@DAILY", "bad time specifier"),
    ("@every", "bad time specifier"),
]

# fixed-time jobs (neither minute nor hour starts with '*') run once right after a DST jump
# that skipped them, and never twice in a repeated hour; wildcard jobs follow the new clock
DST = [
    "30 2 * * *",
    "0 2 * * *",
    "59 1 * * *",
    "30 0 * * *",
    "0,30 2 * * *",
    "0 2,3 * * *",
    "15 1-3 * * *",
    "0-59/30 2 * * *",  # fixed-time: the minute field does not start with '*'
    "*/20 1-3 * * *",  # wildcard: the minute field starts with '*'
    "* 2 * * *",
    "30 */2 * * *",
    "*/15 * * * *",
    "0 * * * *",
    "30 1 * * 0",
    "45 1 * * *",
    "0 0 * * *",
    "@daily",
    "@hourly",
    "@weekly",
    "0 0 1-7 * 0",
]


@cache
def reference(expression: str, tz: str) -> list[datetime]:
    return cron_fires(parse_entry(expression + " true"), tz, AFTER, UNTIL)


@cache
def transitions(tz: str) -> list[datetime]:
    zone, found, at = ZoneInfo(tz), [], AFTER
    while at < UNTIL:
        if (at + timedelta(hours=1)).astimezone(zone).utcoffset() != at.astimezone(
            zone
        ).utcoffset():
            found.append(at)
        at += timedelta(hours=1)
    return found


def windows(tz: str) -> list[tuple[datetime, datetime]]:
    """For dense schedules in a zone with DST (see the module docstring): a day around each edge
    of cronflow's segments (each DST change, each UTC new year, the range's ends: nothing of a
    change reaches beyond 3 hours), and two days around both ends of each February."""
    half = timedelta(hours=12)
    edges = [t + timedelta(hours=1) for t in transitions(tz)]
    edges += [AFTER + half, datetime(2024, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC)]
    edges += [UNTIL - half]
    months = [datetime(2024, 2, 1, tzinfo=UTC), datetime(2024, 3, 1, tzinfo=UTC)]
    months += [datetime(2025, 2, 1, tzinfo=UTC), datetime(2025, 3, 1, tzinfo=UTC)]
    around = [(edge - half, edge + half) for edge in edges]
    return around + [(month - 2 * half, month + 2 * half) for month in months]


def imported(expression: str):
    return read_job_line(1, f"{expression} true", {})


def assert_same_fires(expression: str, tz: str) -> int:
    job = imported(expression)
    assert job.status is LineStatus.OK, job.reason
    expected = reference(expression, tz)
    schedule = Schedule.parse(job.schedule, tz)
    whole = len(expected) <= DENSE or not transitions(tz)
    spans = [(AFTER, UNTIL)] if whole else windows(tz)
    for start, end in spans:
        got = list(schedule.fires(start, end))
        assert got == [t for t in expected if start < t <= end], (expression, tz, start)
    return len(expected)


@pytest.mark.parametrize("tz", CALENDAR_ZONES)
@pytest.mark.parametrize(
    "expression", [e for e, kind in CALENDAR if kind == "fires"], ids=lambda e: e
)
def test_calendar_expressions_fire_as_cron_does(expression: str, tz: str) -> None:
    assert assert_same_fires(expression, tz) > 0


@pytest.mark.parametrize("tz", DST_ZONES)
@pytest.mark.parametrize("expression", DST, ids=lambda e: e)
def test_dst_days_fire_as_cron_does(expression: str, tz: str) -> None:
    assert assert_same_fires(expression, tz) > 0


@pytest.mark.parametrize("zones", [CALENDAR_ZONES, DST_ZONES], ids=["calendar", "dst"])
def test_each_list_is_compared_all_year_in_a_zone_without_dst(zones: tuple[str, ...]) -> None:
    """The windows of the DST zones stand on this: one zone of each list never changes offset,
    and a change is seen by the sampling (so the DST zones really have their windows)."""
    assert any(not transitions(tz) for tz in zones)
    assert len(transitions("Europe/Paris")) == 2  # March and October 2024 (2025's is in March)


@pytest.mark.parametrize(
    "expression", [e for e, kind in CALENDAR if kind == "never"], ids=lambda e: e
)
def test_lines_cron_accepts_but_that_never_fire_are_reported(expression: str) -> None:
    entry: Entry = parse_entry(expression + " true")
    assert entry.never_fires()
    job = imported(expression)
    assert job.status is LineStatus.NEVER_FIRES
    assert job.reason.startswith("cron accepts it but it never fires: ")


@pytest.mark.parametrize(
    ("expression", "error"),
    [(e, kind) for e, kind in CALENDAR if kind not in ("fires", "never")],
    ids=lambda e: e,
)
def test_lines_cron_rejects_are_rejected_with_crons_reason(expression: str, error: str) -> None:
    with pytest.raises(Rejected, match=f"^{error}$"):
        parse_entry(expression + " true")
    job = imported(expression)
    assert job.status is LineStatus.REJECTED
    assert job.reason.startswith(f"cron rejects it: {error}"), job.reason


@pytest.mark.parametrize(
    ("tz", "start", "expression"),
    [
        # Casey jumps exactly 3 hours: cron(8) treats that as a clock change, not DST, and runs
        # only the new minute's jobs (forward) and does not hold fixed-time jobs back (back)
        ("Antarctica/Casey", datetime(2009, 10, 16, tzinfo=UTC), "30 3 * * *"),
        ("Antarctica/Casey", datetime(2009, 10, 16, tzinfo=UTC), "0 * * * *"),
        ("Antarctica/Casey", datetime(2010, 3, 3, tzinfo=UTC), "30 0 * * *"),
        ("Antarctica/Casey", datetime(2010, 3, 3, tzinfo=UTC), "*/30 * * * *"),
        # Samoa skipped 30 December 2011 (+24 hours): that day's fixed-time jobs do not run
        ("Pacific/Apia", datetime(2011, 12, 27, tzinfo=UTC), "30 12 * * *"),
        ("Pacific/Apia", datetime(2011, 12, 27, tzinfo=UTC), "0 12 30 12 *"),
        ("Pacific/Apia", datetime(2011, 12, 27, tzinfo=UTC), "*/30 * * * *"),
    ],
)
def test_clock_jumps_of_3_hours_or_more_are_not_dst(tz: str, start: datetime, expression: str):
    end = start + timedelta(days=6)
    expected = cron_fires(parse_entry(expression + " true"), tz, start, end)
    assert list(Schedule.parse(expression, tz).fires(start, end)) == expected


def test_the_reference_reads_the_man_page_examples() -> None:
    """The reference itself, on what cron's documentation says in words."""
    fires = cron_fires(parse_entry("30 4 1,15 * 5 x"), "UTC", AFTER, UNTIL)
    days = {t.date() for t in fires if t.year == 2024}
    assert date(2024, 3, 1) in days and date(2024, 3, 15) in days and date(2024, 3, 8) in days
    assert all(t.hour == 4 and t.minute == 30 for t in fires)
    sundays = cron_fires(parse_entry("0 0 */2 * sun x"), "UTC", AFTER, UNTIL)
    assert sundays and all(t.weekday() == 6 and t.day % 2 == 1 for t in sundays)
    paris = cron_fires(parse_entry("30 2 * * * x"), "Europe/Paris", AFTER, UNTIL)
    spring = [t for t in paris if t.date() == date(2024, 3, 31)]
    autumn = [t for t in paris if t.date() == date(2024, 10, 27)]
    assert spring == [datetime(2024, 3, 31, 1, tzinfo=UTC)]  # right after the jump
    assert autumn == [datetime(2024, 10, 27, 0, 30, tzinfo=UTC)]  # once, the first time


IMPORTED = """\
CRON_TZ=Europe/Paris
30 2 * * * nightly.sh
0 0 1,15 * 5 report.sh
5-10-12 1 * * sun cleanup.sh
CRON_TZ=America/Santiago
@daily rotate.sh
0 0 1 * fri-sun bill.sh
CRON_TZ=Australia/Lord_Howe
*/30 1-3 * * 1-5 poll.sh
"""


def test_imported_flow_files_keep_crons_timing(tmp_path) -> None:
    """End to end: the flow files written by the import, loaded as the daemon loads them."""
    from cronflow.catalog import FlowSpec
    from cronflow.flowfile import import_crontab
    from cronflow.loader import load_files

    report = import_crontab(IMPORTED, tmp_path, timezone="UTC")
    paths = [tmp_path / f"{row.flow}.py" for row in report.rows]
    loaded = load_files(paths, timeout_s=30)
    for row, path in zip(report.rows, paths, strict=True):
        [spec] = loaded[path].specs
        flow = FlowSpec.from_spec(spec, str(path))
        expected = cron_fires(parse_entry(row.line), row.timezone, AFTER, UNTIL)
        assert list(flow.schedule.fires(AFTER, UNTIL)) == expected, row.line
    assert [row.timezone for row in report.rows] == [
        *["Europe/Paris"] * 3,
        *["America/Santiago"] * 2,
        "Australia/Lord_Howe",
    ]

"""How many wall-clock minutes a cron expression matches in a range, by arithmetic.

Counting fire times one by one costs a croniter query each: a minutely flow that missed years
has millions. Here a range costs one lookup per calendar month it spans, whatever the schedule:
which days of a month match depends only on the month, its length and its first weekday (a few
dozen shapes, each worked out once), and every matching day matches the same minutes.

Pure: naive wall-clock datetimes in, counts out. Timezones and DST are timetable.py's business.
"""

from __future__ import annotations

import calendar
from bisect import bisect_left
from collections.abc import Sequence
from datetime import date, datetime, timedelta

_MINUTE = timedelta(minutes=1)


class MatchCounter:
    """The matching minutes of one parsed cron expression (values per field, as cron(5) reads
    them; Sunday is 0), counted over wall-clock ranges."""

    def __init__(self, values: Sequence[Sequence[int]], day_or: bool) -> None:
        minutes, hours, days, months, weekdays = values
        self._times = sorted(hour * 60 + minute for hour in hours for minute in minutes)
        self._days, self._months, self._weekdays = set(days), set(months), set(weekdays)
        self._day_or = day_or  # both day fields restricted: either may match (cron(5))
        self._shapes: dict[tuple[int, int, int], list[int]] = {}  # (month, weekday, length)

    def count(self, start: datetime, stop: datetime) -> int:
        """Matching wall-clock minutes m with start <= m < stop."""
        start, stop = _minute_up(start), _minute_up(stop)
        if stop <= start:
            return 0
        first, last = start.date(), stop.date()
        if first == last:
            if not self._matches(first):
                return 0
            return self._minutes_before(stop) - self._minutes_before(start)
        per_day = len(self._times)
        total = per_day - self._minutes_before(start) if self._matches(first) else 0
        total += self._minutes_before(stop) if self._matches(last) else 0
        return total + per_day * self._matching_days(first + timedelta(days=1), last)

    def _matching_days(self, first: date, stop: date) -> int:
        """Days d with first <= d < stop on which the expression fires."""
        total = 0
        while first < stop:
            following = _next_month(first)
            prefix = self._month(first.year, first.month)
            last_day = len(prefix) - 1 if stop >= following else stop.day - 1
            total += prefix[last_day] - prefix[first.day - 1]
            first = following
        return total

    def _matches(self, day: date) -> bool:
        prefix = self._month(day.year, day.month)
        return prefix[day.day] > prefix[day.day - 1]

    def _minutes_before(self, at: datetime) -> int:
        """How many matching times of day come before `at`'s (a whole minute)."""
        return bisect_left(self._times, at.hour * 60 + at.minute)

    def _month(self, year: int, month: int) -> list[int]:
        """prefix[n]: how many of the month's days 1..n match (prefix[0] is 0)."""
        first_weekday, length = calendar.monthrange(year, month)  # Monday is 0
        shape = (month, first_weekday, length)
        if shape not in self._shapes:
            prefix = [0]
            for day in range(1, length + 1):
                weekday = (first_weekday + day) % 7  # cron's: Sunday is 0
                prefix.append(prefix[-1] + self._day_matches(month, day, weekday))
            self._shapes[shape] = prefix
        return self._shapes[shape]

    def _day_matches(self, month: int, day: int, weekday: int) -> bool:
        if month not in self._months:
            return False
        by_date, by_weekday = day in self._days, weekday in self._weekdays
        return (by_date or by_weekday) if self._day_or else (by_date and by_weekday)


def _minute_up(at: datetime) -> datetime:
    """`at` if it is a whole minute, else the next whole minute."""
    whole = at.replace(second=0, microsecond=0)
    return whole if whole == at else whole + _MINUTE


def _next_month(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)

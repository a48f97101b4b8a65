"""Bounds of the numbers given on the command line: how many runs, fire times or failures to
list, how often `top` refreshes. Without them a typo such as 10**20 overflows SQLite's integers
or asks for a listing that takes minutes. One place, so the help of each command and its error
say the same bound.
"""

from __future__ import annotations

from cronflow.errors import InvalidInputError

MAX_LISTED = 10_000  # runs, fire times, failures, grid columns: more is no longer a listing
REFRESH_S = (0.1, 3600.0)  # `top --interval`
MAX_AGE_DAYS = 36_500  # `db clean --older-than`: past that, a date before year 1


def checked(option: str, value: float, low: float, high: float) -> float:
    """The value if low <= value <= high (NaN is not), else an error naming the option and
    its bounds."""
    if not low <= value <= high:
        raise InvalidInputError(f"{option} must be between {low:g} and {high:,g}, got {value}")
    return value


def checked_count(option: str, value: int, low: int = 1) -> int:
    """A number of items to list: from `low` to MAX_LISTED."""
    return int(checked(option, value, low, MAX_LISTED))


def checked_age(option: str, seconds: float) -> float:
    """An age given as a duration: at most MAX_AGE_DAYS."""
    if not seconds <= MAX_AGE_DAYS * 86_400:
        raise InvalidInputError(
            f"{option} must be at most {MAX_AGE_DAYS:,} days, got {seconds / 86_400:,.0f} days"
        )
    return seconds

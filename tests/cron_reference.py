"""An independent model of Debian's cron (3.0pl1-162), for the conformance tests only.

It follows cron's own source rather than cronflow.timetable, and shares no code with it:

* entry.c `load_entry`/`get_list`/`get_range`/`get_number`: each field is a bit set; an item is
  `*`, a number or a name (strcasecmp against the first three letters), a range `a-b`, and only
  after `*` or a range a step `/n`; a lone `n/m` (Debian patch), a number outside the field, a
  step of 0 and an unknown name make the line fail; characters after a complete item up to the
  next blank are skipped (so `5-10-12` reads `5-10`); a reversed range sets no bit. A field whose
  first character is `*` sets MIN_STAR, HR_STAR, DOM_STAR or DOW_STAR. Day-of-week 0 and 7 are
  both Sunday. The macros are compared with strcmp (lowercase only).
* cron.c `find_jobs`: minute, hour and month bits must match, then
  `(DOM_STAR || DOW_STAR) ? (dom && dow) : (dom || dow)`; "wildcard" jobs are those with
  MIN_STAR or HR_STAR, the others are "fixed-time".
* cron.c `main`: every minute, timeDiff = wall-clock minute now - virtual minute. 1: run the
  minute. 2..5: run every minute up to now. 6..180 (clock moved forward, e.g. DST starts):
  wildcard jobs for the new minute, fixed-time jobs for every skipped minute and the new one.
  -180..0 (clock moved back): wildcard jobs only, virtual time stays until the clock catches up.
  Otherwise: jump, run the new minute. Jobs found for the same minute run once: cronflow has one
  run per instant, so a fixed-time job found several times at the jump counts once.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
DOW_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")
EOF = ""
MIN_STAR, HR_STAR, DOM_STAR, DOW_STAR, WHEN_REBOOT = 1, 2, 4, 8, 16
FIELDS = (  # ecode text, low, high, names, star flag
    ("bad minute", 0, 59, None, MIN_STAR),
    ("bad hour", 0, 23, None, HR_STAR),
    ("bad day-of-month", 1, 31, None, DOM_STAR),
    ("bad month", 1, 12, MONTH_NAMES, 0),
    ("bad day-of-week", 0, 7, DOW_NAMES, DOW_STAR),
)


class Rejected(Exception):
    """cron refuses the line; the message is its ecode text ('bad minute', ...)."""


@dataclass
class Entry:
    bits: tuple[frozenset[int], ...]  # minute, hour, dom, month, dow (0 and 7 both Sunday)
    flags: int
    command: str

    @property
    def wildcard(self) -> bool:
        return bool(self.flags & (MIN_STAR | HR_STAR))

    def day_matches(self, day: date) -> bool:
        _, _, doms, months, dows = self.bits
        if day.month not in months:
            return False
        dom, dow = day.day in doms, (day.isoweekday() % 7) in dows
        if self.flags & (DOM_STAR | DOW_STAR):
            return dom and dow
        return dom or dow

    def never_fires(self) -> bool:
        """No minute of 28 years (a full cycle of leap years and weekdays) matches."""
        if not self.bits[0] or not self.bits[1]:
            return True
        day, end = date(2000, 1, 1), date(2028, 1, 1)
        while day < end:
            if self.day_matches(day):
                return False
            day += timedelta(days=1)
        return True


class _Reader:
    def __init__(self, text: str) -> None:
        self.text, self.pos = text, 0

    def get(self) -> str:
        if self.pos >= len(self.text):
            return EOF
        self.pos += 1
        return self.text[self.pos - 1]


def _isalnum(ch: str) -> bool:
    return ch != EOF and ch.isascii() and ch.isalnum()


def _get_number(reader: _Reader, ch: str, low: int, names) -> tuple[int | None, str]:
    token = ""
    while _isalnum(ch):
        token += ch
        ch = reader.get()
    if not token:
        return None, EOF
    if names:
        for i, name in enumerate(names):
            if name == token.lower():
                return i + low, ch
    if token.isdigit():
        return int(token), ch
    return None, EOF


def _get_range(reader: _Reader, bits: set[int], low: int, high: int, names, ch: str) -> str:
    if ch == "*":
        num1, num2 = low, high
        ch = reader.get()
        if ch == EOF:
            return EOF
    else:
        num1, ch = _get_number(reader, ch, low, names)
        if ch == EOF:
            return EOF
        if ch != "-":
            if ch == "/" or not low <= num1 <= high:
                return EOF
            bits.add(num1)
            return ch
        ch = reader.get()
        if ch == EOF:
            return EOF
        num2, ch = _get_number(reader, ch, low, names)
        if ch == EOF:
            return EOF
    step = 1
    if ch == "/":
        ch = reader.get()
        if ch == EOF:
            return EOF
        step, ch = _get_number(reader, ch, 0, None)
        if ch == EOF or step <= 0:
            return EOF
    if not (low <= num1 <= high and low <= num2 <= high):
        return EOF
    bits.update(range(num1, num2 + 1, step))
    return ch


def _get_list(reader: _Reader, low: int, high: int, names, ch: str) -> tuple[set[int], str]:
    bits: set[int] = set()
    while True:
        ch = _get_range(reader, bits, low, high, names, ch)
        if ch != ",":
            break
        ch = reader.get()
    if ch == EOF:
        return bits, EOF
    while ch not in ("\t", " ", "\n", EOF):  # Skip_Nonblanks: cron ignores the rest
        ch = reader.get()
    while ch in ("\t", " "):
        ch = reader.get()
    return bits, ch


_MACROS = {
    "yearly": ("0", "0", "1", "1", "*"),
    "annually": ("0", "0", "1", "1", "*"),
    "monthly": ("0", "0", "1", "*", "*"),
    "weekly": ("0", "0", "*", "*", "0"),
    "daily": ("0", "0", "*", "*", "*"),
    "midnight": ("0", "0", "*", "*", "*"),
    "hourly": ("0", "*", "*", "*", "*"),
}
_MACRO_FLAGS = {"yearly": DOW_STAR, "annually": DOW_STAR, "monthly": DOW_STAR, "weekly": DOM_STAR}


def parse_entry(line: str) -> Entry:
    """One job line of a user crontab (no leading blanks or comments), or Rejected."""
    reader = _Reader(line + "\n")
    ch = reader.get()
    flags = 0
    if ch == "@":
        word = ""
        while (ch := reader.get()) not in (" ", "\t", "\n", EOF):
            word += ch
        if word == "reboot":
            return Entry((frozenset(),) * 5, WHEN_REBOOT, line.split(None, 1)[1])
        if word not in _MACROS:
            raise Rejected("bad time specifier")
        flags = _MACRO_FLAGS.get(word, 0) | (HR_STAR if word == "hourly" else 0)
        fields = []
        for text, (_, low, high, names, _) in zip(_MACROS[word], FIELDS, strict=True):
            bits, _ = _get_list(_Reader(text[1:] + " "), low, high, names, text[0])
            fields.append(bits)
    else:
        fields = []
        for ecode, low, high, names, star in FIELDS:
            if ch == "*":
                flags |= star
            bits, ch = _get_list(reader, low, high, names, ch)
            if ch == EOF:
                raise Rejected(ecode)
            fields.append(bits)
    while ch in (" ", "\t"):
        ch = reader.get()
    if ch == "*":  # Debian: a sixth time field is a mistake, not a command
        raise Rejected("bad command")
    command = ch + line[reader.pos :]
    if fields[4] & {0, 7}:
        fields[4] |= {0, 7}
    return Entry(tuple(frozenset(f) for f in fields), flags, command.rstrip("\n"))


# --- cron.c's main loop -------------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _utc_minute(at: datetime) -> int:
    return int((at - _EPOCH).total_seconds() // 60)


@lru_cache(maxsize=64)
def _offsets(tz: str, start: int, end: int) -> list[tuple[int, int]]:
    """(first UTC minute, UTC offset in minutes) of each constant-offset stretch of [start, end)."""
    zone = ZoneInfo(tz)

    def offset(minute: int) -> int:
        at = _EPOCH + timedelta(minutes=minute)
        return int(at.astimezone(zone).utcoffset().total_seconds() // 60)

    stretches, current = [(start, offset(start))], offset(start)
    for quarter in range(start, end, 15):  # every zone changes its offset on a quarter hour
        if offset(quarter) != current:
            first = next(m for m in range(quarter - 14, quarter + 1) if offset(m) != current)
            current = offset(first)
            stretches.append((first, current))
    return stretches


def _wall_matches(entry: Entry, first_day: date, last_day: date) -> list[int]:
    """Sorted wall-clock minutes (minutes since 1970-01-01 00:00 on the wall) that match."""
    minutes, hours = sorted(entry.bits[0]), sorted(entry.bits[1])
    in_day = [h * 60 + m for h in hours for m in minutes]
    found, day = [], first_day
    while day <= last_day:
        if entry.day_matches(day):
            base = (day - date(1970, 1, 1)).days * 1440
            found.extend(base + m for m in in_day)
        day += timedelta(days=1)
    return found


def cron_fires(entry: Entry, tz: str, after: datetime, until: datetime) -> list[datetime]:
    """The instants t, after < t <= until, at which cron starts the job (minute precision)."""
    start, end = _utc_minute(after) + 1, _utc_minute(until) + 1
    stretches = _offsets(tz, start - 1, end)
    first_day = (after - timedelta(days=2)).date()
    walls = _wall_matches(entry, first_day, (until + timedelta(days=2)).date())
    matched = set(walls)
    fired: list[int] = []
    changes = [first for first, _ in stretches[1:]] + [end]
    offset = stretches[0][1]
    virtual = start - 1 + offset  # all jobs up to here have run
    t, index = start, 0
    while t < end:
        while changes[index] <= t:
            offset = stretches[index + 1][1]
            index += 1
        now = t + offset
        diff = now - virtual
        if diff == 1:
            # fast path: the offset holds until the next change, so every minute is "diff == 1"
            stop = changes[index]
            lo, hi = bisect.bisect_left(walls, now), bisect.bisect_left(walls, stop + offset)
            fired.extend(w - offset for w in walls[lo:hi])
            virtual, t = stop - 1 + offset, stop
            continue
        if 1 < diff <= 5:  # woke up late: every minute up to now
            due = any(v in matched for v in range(virtual + 1, now + 1))
            virtual = now
        elif 5 < diff <= 180:  # forward jump: wildcard now, fixed-time for each minute missed
            fixed = not entry.wildcard and any(v in matched for v in range(virtual + 1, now + 1))
            due = fixed or (entry.wildcard and now in matched)
            virtual = now
        elif -180 < diff <= 0:  # backward jump: wildcard jobs only, until caught up
            due = entry.wildcard and now in matched
        else:  # the clock moved a lot: start over from now
            due, virtual = now in matched, now
        if due:
            fired.append(t)
        t += 1
    return [_EPOCH + timedelta(minutes=m) for m in fired if start <= m < end]

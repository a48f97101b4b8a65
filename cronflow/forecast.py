"""Fire times to come (`cronflow next`): from the same Schedule, start and end dates the daemon
uses (FlowSpec.next_fires, as `list` and `show` do), so a user can compare them with
cron's before switching crontab off."""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import islice
from typing import Any
from zoneinfo import ZoneInfo

from cronflow.catalog import FlowSpec
from cronflow.limits import checked_count
from cronflow.timeparse import parse_date_or_datetime, start_of_day, to_utc

_TICK = timedelta(microseconds=1)


@dataclass(frozen=True)
class Fire:
    """One coming fire time of one flow."""

    flow_id: str
    at: datetime  # aware UTC
    tz: ZoneInfo

    def as_dict(self) -> dict[str, Any]:
        return {
            "flow": self.flow_id,
            "fire_time": self.at.astimezone(self.tz).isoformat(),
            "fire_time_utc": self.at.isoformat(),
            "timezone": str(self.tz),
        }


def after_instant(text: str | None, tz: ZoneInfo, now: datetime) -> datetime:
    """Fire times are listed strictly after this: now, an ISO date-time (naive: in `tz`), or
    just before the start of a day (YYYY-MM-DD: a fire at midnight counts)."""
    if text is None:
        return now
    value = parse_date_or_datetime(text, tz)
    if isinstance(value, datetime):
        return to_utc(value)
    return start_of_day(value, tz) - _TICK


def next_fires(
    flows: Iterable[FlowSpec], after_text: str | None, now: datetime, limit: int
) -> list[Fire]:
    """The `limit` soonest fire times of all `flows`, soonest first (ties by flow id)."""
    checked_count("--limit", limit)
    streams = [
        [Fire(flow.flow_id, at, flow.tz) for at in flow.next_fires(after, limit)]
        for flow in sorted(flows, key=lambda f: f.flow_id)
        for after in [after_instant(after_text, flow.tz, now)]
    ]
    return list(islice(heapq.merge(*streams, key=lambda fire: fire.at), limit))

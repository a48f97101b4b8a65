"""What templates compute with besides a run's own values: its dates as real datetimes in the
flow's timezone, and the macros and filters Airflow users reach for. Pure: no Jinja here
(cronflow.templates hands these to its environment), no clock.

    {{ logical_date.strftime('%Y%m%d%H%M') }}   {{ logical_date.hour }}
    {{ logical_date | strftime('%Y%m%d%H') }}   {{ ds | ds_add(-1) }}
    {{ macros.ds_add(ds, 7) }}                  {{ macros.ds_format(ds, '%Y-%m-%d', '%d/%m/%Y') }}
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

DAY_FORMAT = "%Y-%m-%d"


class LocalDateTime(datetime):
    """An aware datetime in the flow's timezone that prints as ISO 8601 with its offset
    (`2024-03-01T02:30:00+01:00`), as these values printed when they were text. Arithmetic
    (`logical_date - macros.timedelta(hours=1)`) keeps the class, so results print alike."""

    def __str__(self) -> str:
        return self.isoformat()


def local_datetime(moment: datetime, tz: ZoneInfo) -> LocalDateTime:
    local = moment.astimezone(tz)
    return LocalDateTime.combine(local.date(), local.timetz())


def date_context(
    logical_at: datetime,
    interval: tuple[datetime, datetime],
    tz: ZoneInfo,
    prev_at: datetime | None,
    next_at: datetime | None,
) -> dict[str, Any]:
    """The execution-date values, in the flow's timezone (ds is the local date of the run):
    text for ds, ts and friends, aware datetimes for logical_date and the data interval."""
    local = local_datetime(logical_at, tz)
    # without a schedule: the neighbouring local days (wall-clock arithmetic, so a 23- or
    # 25-hour DST day does not give the same day or skip one)
    prev_local = prev_at.astimezone(tz) if prev_at else local - timedelta(days=1)
    next_local = next_at.astimezone(tz) if next_at else local + timedelta(days=1)
    return {
        "ds": local.strftime(DAY_FORMAT),
        "ds_nodash": local.strftime("%Y%m%d"),
        "ts": local.isoformat(),
        "ts_nodash": local.strftime("%Y%m%dT%H%M%S"),
        "logical_date": local,
        "data_interval_start": local_datetime(interval[0], tz),
        "data_interval_end": local_datetime(interval[1], tz),
        "prev_ds": prev_local.strftime(DAY_FORMAT),
        "next_ds": next_local.strftime(DAY_FORMAT),
    }


DATE_NAMES = tuple(
    date_context(
        datetime(2000, 1, 1, tzinfo=ZoneInfo("UTC")),
        (datetime(2000, 1, 1, tzinfo=ZoneInfo("UTC")),) * 2,
        ZoneInfo("UTC"),
        None,
        None,
    )
)


def _as_moment(value: Any) -> date | datetime:
    """A date or datetime from one, or from ISO text ('2024-03-01', '2024-03-01T02:30+01:00')."""
    if isinstance(value, date):
        return value
    text = str(value).strip()
    try:
        if len(text) == 10:
            return date.fromisoformat(text)
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is neither a date (YYYY-MM-DD) nor an ISO date-time") from None


def ds_add(ds: Any, days: int) -> Any:
    """`ds_add('2024-03-01', -1)` = '2024-02-29'; a date or datetime gives the same type
    (calendar days: the wall-clock time stays across a DST change)."""
    moment = _as_moment(ds)
    shifted = moment + timedelta(days=int(days))
    return shifted if isinstance(ds, date) else shifted.strftime(DAY_FORMAT)


def ds_format(ds: Any, input_format: str, output_format: str) -> str:
    """`ds_format('2024-03-01', '%Y-%m-%d', '%d/%m/%Y')` = '01/03/2024' (as Airflow's)."""
    return datetime.strptime(str(ds), input_format).strftime(output_format)


def strftime(value: Any, fmt: str) -> str:
    """`{{ logical_date | strftime('%Y%m%d%H%M') }}`; also takes ISO text such as `ts`."""
    return _as_moment(value).strftime(fmt)


FILTERS = {
    "ds_add": ds_add,
    "ds_format": ds_format,
    "strftime": strftime,
    # Airflow's own filters: `{{ data_interval_start | ds }}`
    "ds": lambda value: strftime(value, DAY_FORMAT),
    "ds_nodash": lambda value: strftime(value, "%Y%m%d"),
    "ts": lambda value: _as_moment(value).isoformat(),
    "ts_nodash": lambda value: strftime(value, "%Y%m%dT%H%M%S"),
    "ts_nodash_with_tz": lambda value: (
        _as_moment(value).isoformat().replace("-", "").replace(":", "")
    ),
}

# `{{ macros.NAME }}`, as in Airflow; nothing here sleeps, reads files or reaches the network
MACROS = SimpleNamespace(
    ds_add=ds_add,
    ds_format=ds_format,
    datetime=datetime,
    date=date,
    timedelta=timedelta,
    timezone=timezone,
)

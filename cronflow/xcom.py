"""XCom: small JSON values that tasks pass to each other, kept in the store.

A Python task's return value is its `return_value`; any Python-side task can also
`context["xcom"].push("rows", 42)` and `context["xcom"].pull("fetch")` (another task's
return value) or `.pull("fetch", "rows")`. Templates read return values too: `{{ xcom.fetch }}`.

Other runs, of this flow or another: `pull("count", flow="ingest", date=...)`, in templates
too (`{{ xcom.pull('count', flow='ingest', date=prev_ds) | sum }}`). A date-time (or ISO text
with a time) names one run: its value, or `default`. A day (`YYYY-MM-DD`, a `date`) names every
run of that local day in the flow's timezone: a list of their values, oldest run first, runs
without the value left out (so a daily flow sums the counts of its 144 ingest runs, and
`len()` says how many there were). Without `date`: the run at this run's logical date-time.

Values are capped (xcom_max_bytes in cronflow.toml, 64 KiB of JSON by default): XCom is for
paths, counts and ids, not for the data itself. `cronflow xcom FLOW` lists them (xcom_rows).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from cronflow.errors import CronflowError
from cronflow.store import Store
from cronflow.timeparse import parse_date_or_datetime, start_of_day, to_utc

if TYPE_CHECKING:
    from cronflow.catalog import FlowSpec

DEFAULT_MAX_BYTES = 64 * 1024
# the database that XComs of other runs come from when it is not the attempt's own (`cronflow
# test` runs its attempts in a scratch home)
XCOM_HISTORY_ENV = "CRONFLOW_XCOM_HISTORY"
RETURN_VALUE = "return_value"


class XComError(CronflowError, ValueError):
    """A value cannot be pushed: not JSON, or over the size limit."""


def encode(value: Any, task_id: str, key: str, max_bytes: int) -> str:
    """The JSON text of a value, or XComError saying why it cannot be stored."""
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise XComError(
            f"task '{task_id}': xcom '{key}' is not JSON-serialisable: {exc}; return or push "
            "only dicts, lists, strings, numbers, booleans and None"
        ) from None
    size = len(text.encode())
    if size > max_bytes:
        raise XComError(
            f"task '{task_id}': xcom '{key}' is {size / 1024:.1f} KiB of JSON, over the limit "
            f"of {max_bytes / 1024:g} KiB (xcom_max_bytes in cronflow.toml); write large data "
            "to a file and pass its path"
        )
    return text


class XCom(Mapping[str, Any]):
    """`context["xcom"]` of one attempt. As a mapping (for templates): task id -> return value."""

    def __init__(
        self,
        store: Store,
        run_id: int,
        task_id: str,
        max_bytes: int = DEFAULT_MAX_BYTES,
        *,
        flow_id: str | None = None,
        logical_at: datetime | None = None,
    ) -> None:
        self._store = store
        self.run_id = run_id
        self.task_id = task_id
        self.max_bytes = max_bytes
        self.flow_id, self.logical_at = flow_id, logical_at
        # where other runs are read: the home's store, also under `cronflow test`, whose own
        # run lives in a scratch store
        self.history = store

    def push(self, key: str, value: Any) -> None:
        """Store a JSON value under this task's `key` (replacing an earlier one)."""
        encode(value, self.task_id, key, self.max_bytes)
        self._store.push_xcom(self.run_id, self.task_id, key, value)

    def pull(
        self,
        task_id: str,
        key: str | None = None,
        *,
        flow: str | None = None,
        date: str | date | datetime | None = None,
        default: Any = None,
    ) -> Any:
        """A value pushed by `task_id` (its return value unless `key` is given) in this run, or
        `default` if there is none; with `flow` and/or `date`, in other runs (module doc)."""
        key = key or RETURN_VALUE
        if flow is None and date is None:
            row = self._store.pull_xcom(self.run_id, task_id, key)
            if row is None:  # a mapped task: the values of its instances, as a list
                row = self._store.pull_mapped_xcoms(self.run_id, task_id, key)
            return default if row is None else row
        run_ids, is_day = self._runs(flow or self.flow_id, date)
        values = self.history.xcom_values(run_ids, task_id, key)
        if is_day:
            return [values[r] for r in run_ids if r in values]
        return values.get(run_ids[0], default) if run_ids else default

    def _runs(
        self, flow_id: str | None, when: str | date | datetime | None
    ) -> tuple[list[int], bool]:
        """The ids of the runs a date names (oldest first), and whether it named a whole day."""
        if flow_id is None:
            raise XComError("xcom.pull: give flow= (this context does not know its flow)")
        tz = ZoneInfo(self.history.flow(flow_id)["timezone"] or "UTC")
        if when is None:
            when = self.logical_at
        if isinstance(when, str):
            when = parse_date_or_datetime(when, tz)
        if isinstance(when, datetime):
            start = to_utc(when if when.tzinfo else when.replace(tzinfo=tz))
            end = start + timedelta(microseconds=1)
        elif isinstance(when, date):
            start, end = start_of_day(when, tz), start_of_day(when + timedelta(days=1), tz)
        else:
            raise XComError(f"xcom.pull: date must be a day, a date-time or ISO text, not {when!r}")
        runs = self.history.runs_between(flow_id, start, end)
        return [r["run_id"] for r in runs], not isinstance(when, datetime)

    def __getitem__(self, task_id: str) -> Any:
        value = self._store.pull_xcom(self.run_id, task_id, RETURN_VALUE)
        if value is None:
            value = self._store.pull_mapped_xcoms(self.run_id, task_id, RETURN_VALUE)
        if value is None:
            raise KeyError(task_id)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._store.xcom_task_ids(self.run_id))

    def __len__(self) -> int:
        return len(self._store.xcom_task_ids(self.run_id))

    def __repr__(self) -> str:
        return f"<xcom of run {self.run_id}>"


def xcom_rows(
    store: Store,
    flow: FlowSpec,
    date_text: str | None,
    task_id: str | None,
    mask: Callable[[str], str],
) -> list[dict[str, Any]]:
    """`cronflow xcom`: every value of the runs a --date names (the latest run by default; a
    day: all its runs), oldest run first, secrets masked by `mask` (they are not meant to be
    secret, but a task may return one)."""
    from cronflow import control

    if task_id is not None:
        flow.task(task_id)
    runs = control.find_runs(store, flow, date_text)
    by_id = {r["run_id"]: r for r in runs}
    rows = []
    for row in store.xcom_rows(list(by_id), task_id):
        run = by_id[row["run_id"]]
        rows.append(
            {
                "flow_id": flow.flow_id,
                "run_id": run["run_id"],
                "logical_date": run["logical_date"],
                "task_id": row["task_id"],
                "key": row["key"],
                "value": _masked(json.loads(row["value"]), mask),
            }
        )
    return sorted(rows, key=lambda r: (r["logical_date"], r["task_id"], r["key"]))


def _masked(value: Any, mask: Callable[[str], str]) -> Any:
    """The JSON value with every secret in its texts (and numbers) replaced by ***."""
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {mask(k): _masked(v, mask) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v, mask) for v in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value if mask(str(value)) == str(value) else mask(str(value))
    return value

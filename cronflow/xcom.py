"""XCom: small JSON values that tasks of one run pass to each other, kept in the store.

A Python task's return value is its `return_value`; any Python-side task can also
`context["xcom"].push("rows", 42)` and `context["xcom"].pull("fetch")` (another task's
return value) or `.pull("fetch", "rows")`. Templates read return values too: `{{ xcom.fetch }}`.
Values are capped (xcom_max_bytes in cronflow.toml, 64 KiB of JSON by default): XCom is for
paths, counts and ids, not for the data itself.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from cronflow.errors import CronflowError
from cronflow.store import Store

DEFAULT_MAX_BYTES = 64 * 1024
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
        self, store: Store, run_id: int, task_id: str, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        self._store = store
        self.run_id = run_id
        self.task_id = task_id
        self.max_bytes = max_bytes

    def push(self, key: str, value: Any) -> None:
        """Store a JSON value under this task's `key` (replacing an earlier one)."""
        encode(value, self.task_id, key, self.max_bytes)
        self._store.push_xcom(self.run_id, self.task_id, key, value)

    def pull(self, task_id: str, key: str = RETURN_VALUE, default: Any = None) -> Any:
        """A value pushed by `task_id` in this run, or `default` if there is none."""
        row = self._store.pull_xcom(self.run_id, task_id, key)
        return default if row is None else row

    def __getitem__(self, task_id: str) -> Any:
        value = self._store.pull_xcom(self.run_id, task_id, RETURN_VALUE)
        if value is None:
            raise KeyError(task_id)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._store.xcom_task_ids(self.run_id))

    def __len__(self) -> int:
        return len(self._store.xcom_task_ids(self.run_id))

    def __repr__(self) -> str:
        return f"<xcom of run {self.run_id}>"

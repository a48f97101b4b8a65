"""The context of one task attempt: what its templates and a Python task's `context` see.

TEMPLATE_NAMES lists them (the README's "Task context" table documents each): execution dates
(text, and aware datetimes in the flow's timezone), ids, params, conf, variables, and, looked
up only when used, `conn` (connections by id) and `xcom` (values of this run's tasks, or of
other runs). Beside them, plumbing that operators use and templates never see
(cronflow.templates.INTERNAL_NAMES): `secrets` (what the attempt's log must mask), and in
the worker `store` and `settings`.

Built the same way for scheduled, manual and retried runs, in the daemon (shell tasks) and in
the worker (Python tasks), so a task sees the same values wherever it runs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from typing import Any

from cronflow.catalog import FlowSpec, TaskSpec
from cronflow.connections import Connections
from cronflow.errors import CronflowError
from cronflow.logs import TIMEZONE_ENV
from cronflow.macros import DATE_NAMES, date_context
from cronflow.mapping import instance_id
from cronflow.masking import SecretValues
from cronflow.store import Store
from cronflow.timeparse import from_iso
from cronflow.xcom import XCom

ENV_VAR_PREFIX = "CRONFLOW_VAR_"
TEMPLATE_NAMES = (
    *DATE_NAMES,
    *("flow_id", "task_id", "run_id", "run_type", "try_number", "item", "map_index"),
    *("params", "conf", "var", "conn", "xcom"),
)


class Variables(Mapping[str, str]):
    """`{{ var.NAME }}`: CRONFLOW_VAR_NAME from the environment, else the store; read lazily."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._values: dict[str, str] | None = None

    def _load(self) -> dict[str, str]:
        if self._values is None:
            values = self._store.variables()
            for key, value in os.environ.items():
                if key.startswith(ENV_VAR_PREFIX):
                    values[key.removeprefix(ENV_VAR_PREFIX)] = value
            self._values = values
        return self._values

    def __getitem__(self, name: str) -> str:
        return self._load()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())


def task_context(
    flow: FlowSpec,
    task: TaskSpec,
    run: Mapping[str, Any],
    try_number: int,
    store: Store,
    map_index: int | None = None,
) -> dict[str, Any]:
    """What templates and Python tasks see of one attempt. A mapped instance (`map_index`) is
    `task[i]` (its own XComs) and gets its item: `{{ item }}`, `{{ map_index }}`."""
    logical_at = from_iso(run["logical_date"])
    assert logical_at is not None
    interval = (from_iso(run["data_interval_start"]), from_iso(run["data_interval_end"]))
    prev_at = next_at = None
    if flow.schedule:
        prev_at = flow.schedule.prev_before(logical_at)
        next_at = flow.schedule.next_after(logical_at)
    conf = json.loads(run["conf"] or "{}")
    context = date_context(logical_at, interval, flow.tz, prev_at, next_at)
    task_id = task.task_id if map_index is None else instance_id(task.task_id, map_index)
    context.update(
        flow_id=flow.flow_id,
        task_id=task_id,
        run_id=run["run_id"],
        run_type=run["run_type"],
        try_number=try_number,
        params={**flow.raw["params"], **task.params, **conf},
        conf=conf,
        var=Variables(store),
        conn=Connections(store),
        xcom=XCom(store, run["run_id"], task_id, flow_id=flow.flow_id, logical_at=logical_at),
        secrets=SecretValues(store),
        map_index=-1 if map_index is None else map_index,  # Airflow's value when not mapped
        item=None,
    )
    if map_index is not None and task.map_over is not None:
        items = store.pull_xcom(run["run_id"], task.map_over)
        if not isinstance(items, list) or map_index >= len(items):
            raise CronflowError(
                f"task '{task_id}' has no item: '{task.map_over}' no longer returns a list of "
                f"{map_index + 1} or more (replay '{task.task_id}' to map it again)"
            )
        context["item"] = items[map_index]
    return context


def task_environment(context: Mapping[str, Any], home: str) -> dict[str, str]:
    """Variables every attempt gets, whatever its kind, so a task knows where and when it is."""
    return {
        "CRONFLOW_HOME": home,
        "CRONFLOW_FLOW_ID": context["flow_id"],
        "CRONFLOW_TASK_ID": context["task_id"],
        "CRONFLOW_RUN_ID": str(context["run_id"]),
        "CRONFLOW_TRY_NUMBER": str(context["try_number"]),
        "CRONFLOW_DS": context["ds"],
        "CRONFLOW_LOGICAL_DATE": context["ts"],
        TIMEZONE_ENV: str(context["logical_date"].tzinfo),
    }

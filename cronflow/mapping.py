"""Mapping (Airflow's dynamic task mapping): one task instance per item of a list known only
at run time. Pure: names, the per-run graph, and what makes a list mappable.

A task mapped over another (`process.map(over=list_files)`) has, in each run, one placeholder
task instance `process` until the daemon expands it: when the placeholder would start, the
list `list_files` returned (its XCom `return_value`) replaces it by one instance per item,
`process[0]`, `process[1]`, ... (each with its own state, tries, log and XCom). An empty list
skips the placeholder; anything else than a list, or a list over MAX_MAP_ITEMS, fails it with
the reason in words. The tasks after `process` then wait for every instance (their trigger
rules count each instance as one upstream), which is what `expand_graph` builds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

MAX_MAP_ITEMS = 10_000  # Airflow's max_map_length is 1024; beyond this, split the list
DEFAULT_ARG = "item"  # the keyword argument (and template name) that carries the item
_INSTANCE = re.compile(r"^(?P<base>[A-Za-z0-9_][A-Za-z0-9_-]*)\[(?P<index>[0-9]+)\]$")

Graph = Mapping[str, tuple[list[str], str]]


def instance_id(task_id: str, map_index: int) -> str:
    """The task instance id of one mapped item: `process[3]`."""
    return f"{task_id}[{map_index}]"


def split_id(task_id: str) -> tuple[str, int | None]:
    """(`process`, 3) for `process[3]`; (`process`, None) for a plain task id."""
    found = _INSTANCE.match(task_id)
    if found is None:
        return task_id, None
    return found["base"], int(found["index"])


def base_id(task_id: str) -> str:
    """The flow's task id of a task instance id (`process[3]` -> `process`)."""
    return task_id.split("[", 1)[0] if task_id.endswith("]") else task_id


def items_problem(value: Any, over: str) -> str | None:
    """Why an upstream's return value cannot be mapped over (None: it can)."""
    if not isinstance(value, list):
        got = "nothing (None)" if value is None else f"a {type(value).__name__}"
        return f"cannot map over '{over}': it returned {got}, not a list"
    if len(value) > MAX_MAP_ITEMS:
        return (
            f"cannot map over '{over}': it returned {len(value)} items, over the limit of "
            f"{MAX_MAP_ITEMS}; split the list"
        )
    return None


def counts_of(task_ids: Sequence[str] | Mapping[str, Any], mapped: Sequence[str]) -> dict[str, int]:
    """mapped task id -> how many instances a run's task instances hold, for the mapped tasks
    already expanded (those whose placeholder is gone)."""
    counts: dict[str, int] = {}
    if not mapped:
        return counts
    wanted = set(mapped)
    for task_id in task_ids:
        if task_id.endswith("]"):
            base = base_id(task_id)
            if base in wanted:
                counts[base] = counts.get(base, 0) + 1
    return counts


def expand_graph(
    graph: Graph, order: Sequence[str], counts: Mapping[str, int]
) -> tuple[dict[str, tuple[list[str], str]], list[str]]:
    """The graph of one run, with each expanded mapped task replaced by its instances (same
    upstreams and trigger rule), and its order (each instance where its task was). The tasks
    after a mapped task keep its id as their upstream: it stands for all its instances, whose
    states the scheduler counts (deps.resolve_run's `groups`), so a task after 2,000 instances
    is decided from a few distinct states, not 2,000 lookups at each instance's end."""

    def ids(task_id: str) -> list[str]:
        if task_id in counts:
            return [instance_id(task_id, i) for i in range(counts[task_id])]
        return [task_id]

    expanded: dict[str, tuple[list[str], str]] = {}
    new_order: list[str] = []
    for task_id in order:
        ups, rule = graph[task_id]
        for one in ids(task_id):
            expanded[one] = (ups, rule)
            new_order.append(one)
    return expanded, new_order


# The one state a grid cell shows for all of a mapped task's instances: the first of these
# that any instance is in (what needs a look first), so a single failure is never hidden.
_SUMMARY_ORDER = (
    "failed",
    "upstream_failed",
    "running",
    "queued",
    "up_for_retry",
    "up_for_reschedule",
    "scheduled",
    "none",
    "success",
    "skipped",
)


def summary_state(states: Sequence[str]) -> str:
    """The state a grid shows for a mapped task's instances (see _SUMMARY_ORDER)."""
    present = set(states)
    return next((s for s in _SUMMARY_ORDER if s in present), "none")


def fold_instances(states: Mapping[str, str]) -> dict[str, str]:
    """task id -> state, each mapped task's instances folded into one entry under its own id
    (summary_state): what a grid of a run's tasks shows."""
    folded: dict[str, str] = {}
    grouped: dict[str, list[str]] = {}
    for task_id, state in states.items():
        if task_id.endswith("]"):
            grouped.setdefault(base_id(task_id), []).append(state)
        else:
            folded[task_id] = state
    for task_id, group in grouped.items():
        folded[task_id] = summary_state(group)
    return folded

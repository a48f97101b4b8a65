"""A flow's task graph laid out for an SVG drawn on the server: a column per depth (the longest
chain of upstream tasks), a row per task within its column, a line per dependency."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

BOX_W, BOX_H, GAP_X, GAP_Y, PAD = 150, 30, 50, 14, 8


@dataclass(frozen=True)
class Node:
    task_id: str
    x: int
    y: int
    state: str | None


@dataclass(frozen=True)
class Graph:
    nodes: list[Node]
    edges: list[tuple[int, int, int, int]]  # x1, y1, x2, y2
    width: int
    height: int
    box_w: int = BOX_W
    box_h: int = BOX_H


def layout(tasks: list[dict[str, Any]], states: dict[str, str]) -> Graph:
    """`tasks` as overview.flow_detail gives them (task_id, upstream), in the flow's order."""
    depth: dict[str, int] = {}
    by_id = {t["task_id"]: t for t in tasks}

    def depth_of(task_id: str, seen: frozenset[str] = frozenset()) -> int:
        if task_id not in depth:
            ups = [u for u in by_id[task_id]["upstream"] if u in by_id and u not in seen]
            depth[task_id] = 1 + max((depth_of(u, seen | {task_id}) for u in ups), default=-1)
        return depth[task_id]

    rows: dict[int, int] = {}
    nodes: dict[str, Node] = {}
    for task in tasks:
        column = depth_of(task["task_id"])
        row = rows.get(column, 0)
        rows[column] = row + 1
        nodes[task["task_id"]] = Node(
            task["task_id"],
            PAD + column * (BOX_W + GAP_X),
            PAD + row * (BOX_H + GAP_Y),
            states.get(task["task_id"]),
        )
    edges = [
        (up.x + BOX_W, up.y + BOX_H // 2, node.x, node.y + BOX_H // 2)
        for task in tasks
        for node in [nodes[task["task_id"]]]
        for up in (nodes[u] for u in task["upstream"] if u in nodes)
    ]
    columns = max(rows, default=0) + 1
    height_rows = max(rows.values(), default=1)
    return Graph(
        list(nodes.values()),
        edges,
        2 * PAD + columns * BOX_W + (columns - 1) * GAP_X,
        2 * PAD + height_rows * BOX_H + (height_rows - 1) * GAP_Y,
    )

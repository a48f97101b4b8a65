"""One flow: show it in depth, pause and unpause it, ask why it is not running."""

import sys
from typing import Annotated, Any

import typer

from cronflow.cli.app import (
    STATE_STYLES,
    app,
    handles_errors,
    open_home,
    short_text,
    utc_now,
)
from cronflow.cli.tables import Cell, Spans, styled_line, table_lines
from cronflow.limits import MAX_LISTED
from cronflow.states import STATE_CELLS
from cronflow.timeparse import duration_text, offset_text

FlowArg = Annotated[str, typer.Argument(metavar="FLOW", help="The flow.")]


RUN_TYPE_CELLS = {
    "scheduled": "sched",
    "manual": "manual",
    "backfill": "backf",
    "triggered": "trig",
}


@app.command()
@handles_errors
def show(
    flow_id: FlowArg,
    runs: Annotated[
        int, typer.Option(help=f"How many recent runs the grid shows (1 to {MAX_LISTED:,}).")
    ] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON object.")] = False,
) -> None:
    """A flow in depth: doc, task tree, flows it waits for, next fire times, recent runs grid."""
    import json

    from cronflow.overview import flow_detail

    _s, store, cat = open_home()
    detail = flow_detail(store, cat, cat.get(flow_id), utc_now(), runs)
    if as_json:
        typer.echo(json.dumps(detail, indent=2))
        return
    paused: Spans = [("  ", ""), ("paused", "yellow")] if detail["paused"] else []
    lines = [styled_line([(flow_id, "bold"), (f"  {detail['schedule_text']}", ""), *paused])]
    lines.append(styled_line([(detail["path"], "dim")]))
    if detail["doc"]:
        lines.append(detail["doc"])
    lines += _task_tree(detail["tasks"])
    for link in detail["wait_for"]:
        limit = duration_text(link["wait_timeout_s"])
        soft = ", then skip" if link["soft_fail"] else ""
        lines.append(
            f"waits for: {link['flow_id']} ({offset_text(link['offset_days'])}: its whole "
            f"day, at most {limit}{soft})"
        )
    for link in detail["waited_by"]:
        lines.append(f"waited for by: {link['flow_id']} ({offset_text(link['offset_days'])})")
    fires = [short_text(cat, flow_id, t) for t in detail["next_fire_at"]]
    lines.append("next runs: " + (", ".join(fires) if fires else "none scheduled"))
    lines += _grid(cat, flow_id, detail) if detail["runs"] else ["no runs yet"]
    sys.stdout.write("\n".join(lines) + "\n")  # not typer.echo: it strips the styles


def _task_tree(tasks: list[dict[str, Any]]) -> list[str]:
    """Tasks from their roots down, drawn as `tree` draws directories; a task with several
    upstreams is drawn once in full."""
    by_id = {t["task_id"]: t for t in tasks}
    lines, drawn = [styled_line([("tasks", "bold")])], set()

    def add(task_id: str, prefix: str, last: bool) -> None:
        task = by_id[task_id]
        branch = prefix + ("└── " if last else "├── ")
        if task_id in drawn:
            lines.append(styled_line([(branch + task_id, ""), (" (see above)", "dim")]))
            return
        drawn.add(task_id)
        notes = [task["kind"]]
        if task["trigger_rule"] != "all_success":
            notes.append(task["trigger_rule"])
        if task["pool"] != "default":
            notes.append(f"pool {task['pool']}")
        if task["retries"]:
            notes.append(f"{task['retries']} retries")
        lines.append(styled_line([(branch + task_id, ""), (f" ({', '.join(notes)})", "dim")]))
        children = task["downstream"]
        for k, child in enumerate(children):
            add(child, prefix + ("    " if last else "│   "), k == len(children) - 1)

    roots = [t["task_id"] for t in tasks if not t["upstream"]]
    for k, root in enumerate(roots):
        add(root, "", k == len(roots) - 1)
    return lines


def _grid(cat: Any, flow_id: str, detail: dict[str, Any]) -> list[str]:
    """Runs x tasks, oldest run first: each column a run (its day over its time of day)."""
    days, times = [], []
    for run in detail["runs"]:
        day, _, time = short_text(cat, flow_id, run["logical_date"]).partition(" ")
        days.append(day[5:])
        times.append(time)
    rows: list[list[Cell]] = [
        ["", *times],
        [[("run", "bold")], *(_cell(run["state"]) for run in detail["runs"])],
        [
            [("type", "dim")],
            *(RUN_TYPE_CELLS.get(run["run_type"], run["run_type"]) for run in detail["runs"]),
        ],
    ]
    for task in detail["tasks"]:
        rows.append(
            [
                task["task_id"],
                *(_cell(run["task_states"].get(task["task_id"])) for run in detail["runs"]),
            ]
        )
    return table_lines(["task", *days], rows, title="recent runs")


def _cell(state: str | None) -> Cell:
    if state is None:
        return " "
    return [(STATE_CELLS.get(state, state), STATE_STYLES.get(state, "default"))]


@app.command()
@handles_errors
def pause(flow_id: FlowArg) -> None:
    """Stop starting new runs of a flow (runs already running go on)."""
    _set_paused(flow_id, True)


@app.command()
@handles_errors
def unpause(flow_id: FlowArg) -> None:
    """Let a paused flow run again (missed fire times follow its catchup setting)."""
    _set_paused(flow_id, False)


def _set_paused(flow_id: str, paused: bool) -> None:
    from cronflow.daemonlock import poke

    settings, store, cat = open_home()
    cat.get(flow_id)
    store.set_paused(flow_id, paused)
    poke(settings.home)
    typer.echo(f"flow {flow_id} {'paused' if paused else 'unpaused'}")


@app.command()
@handles_errors
def why(
    flow_id: FlowArg,
    date: Annotated[
        str | None,
        typer.Option(help="The run: YYYY-MM-DD or an ISO date-time (default: the latest run)."),
    ] = None,
    task: Annotated[str | None, typer.Option(help="Ask about this task only.")] = None,
) -> None:
    """Say in words why a run or a task is not running, or what it is doing."""
    from cronflow.daemonlock import running_daemon_pid
    from cronflow.reasons import Explainer

    settings, store, cat = open_home()
    flow = cat.get(flow_id)
    running = running_daemon_pid(settings.home) is not None
    explainer = Explainer(settings, store, cat, flow, utc_now(), running)
    for reason in explainer.explain(date, task):
        typer.echo(f"- {reason}")

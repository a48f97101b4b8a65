"""Runs: list them, and repair them by hand (replay, mark, backfill)."""

from typing import Annotated, Any

import typer

from cronflow.cli.app import (
    app,
    console,
    handles_errors,
    open_home,
    print_json,
    run_type_text,
    short_text,
    state_cell,
    styled_state,
    utc_now,
)
from cronflow.cli.tables import print_rows
from cronflow.limits import MAX_LISTED
from cronflow.timeparse import duration_text

FlowArg = Annotated[str, typer.Argument(metavar="FLOW", help="The flow.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a JSON array.")]


@app.command()
@handles_errors
def runs(
    flow_id: FlowArg,
    state: Annotated[
        list[str] | None,
        typer.Option(
            help="Only runs in this state: queued, running, success, failed (repeatable)."
        ),
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Only runs on or after this date (YYYY-MM-DD or ISO).")
    ] = None,
    limit: Annotated[
        int, typer.Option(help=f"At most this many runs, newest first (1 to {MAX_LISTED:,}).")
    ] = 20,
    as_json: JsonOpt = False,
) -> None:
    """The runs of a flow, newest first: id, logical date, type, state, start, end, duration."""
    from cronflow.overview import run_rows

    _s, store, cat = open_home()
    flow = cat.get(flow_id)
    rows = run_rows(store, flow, state or [], since, limit)
    if as_json:
        print_json(rows)
        return
    if not rows:
        typer.echo("no runs match")
        return
    print_rows(
        ["run", "logical date", "type", "state", "started", "ended", "duration"],
        [
            [
                str(row["run_id"]),
                short_text(cat, flow_id, row["logical_date"]),
                run_type_text(cat, row["run_type"], row["triggered_by"]),
                state_cell(row["state"]),
                short_text(cat, flow_id, row["started_at"]),
                short_text(cat, flow_id, row["ended_at"]),
                duration_text(row["duration_s"]),
            ]
            for row in rows
        ],
        title=f"{flow_id} ({flow.raw['timezone']})",
    )


@app.command()
@handles_errors
def replay(
    flow_id: FlowArg,
    date: Annotated[
        str,
        typer.Option(help="The run(s): YYYY-MM-DD (every run that day) or an ISO date-time."),
    ],
    to: Annotated[
        str | None, typer.Option(help="Replay every run from --date up to this date, included.")
    ] = None,
    task: Annotated[
        list[str] | None, typer.Option(help="Only this task (repeatable; default: all tasks).")
    ] = None,
    downstream: Annotated[
        bool, typer.Option("--downstream", help="Also the tasks downstream of --task.")
    ] = False,
    upstream: Annotated[
        bool, typer.Option("--upstream", help="Also the tasks upstream of --task.")
    ] = False,
    only_failed: Annotated[
        bool, typer.Option("--only-failed", help="Only failed and upstream_failed tasks.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Clear task instances (whole runs by default) so the daemon runs them again."""
    from rich.table import Table

    from cronflow import repair
    from cronflow.daemonlock import poke, running_daemon_pid

    settings, store, cat = open_home()
    flow = cat.get(flow_id)
    plan = repair.plan_replay(store, flow, date, to, task or [], downstream, upstream, only_failed)
    if not plan.count:
        typer.echo("nothing to replay: no task instance matches")
        return
    table = Table(box=None, header_style="bold")
    for column in ("logical date", "task", "state", "tries"):
        table.add_column(column, no_wrap=True)
    for run, tis in plan.runs:
        for ti in tis:
            table.add_row(
                short_text(cat, flow_id, run["logical_date"]),
                ti["task_id"],
                styled_state(ti["state"]),
                str(ti["try_number"]),
            )
    console().print(table)
    what = f"{plan.count} task instance(s) in {len(plan.runs)} run(s) of {flow_id}"
    if not yes and not typer.confirm(f"Clear {what}?"):
        typer.echo("nothing cleared")
        raise typer.Exit(1)
    cleared = repair.replay(store, plan, utc_now())
    poke(settings.home)
    typer.echo(f"cleared {cleared} task instance(s) in {len(plan.runs)} run(s)")
    _notes(settings, store, flow_id, running_daemon_pid(settings.home))


@app.command()
@handles_errors
def mark(
    target: Annotated[
        str,
        typer.Argument(metavar="FLOW[.TASK]", help="A flow's whole run, or one task: FLOW.TASK."),
    ],
    date: Annotated[str, typer.Option(help="The run: YYYY-MM-DD or an ISO date-time.")],
    state: Annotated[
        str, typer.Option(help="success, failed or skipped (a whole run: success or failed).")
    ],
    downstream: Annotated[
        bool, typer.Option("--downstream", help="Also every task downstream of TASK.")
    ] = False,
) -> None:
    """Set a task (or a whole run) to a final state by hand; a running task is stopped."""
    from cronflow import repair
    from cronflow.attempts import parse_target
    from cronflow.daemonlock import poke

    flow_id, task_id = parse_target(target)
    settings, store, cat = open_home()
    flow = cat.get(flow_id)
    result = repair.mark(store, flow, task_id, date, state, downstream, utc_now())
    poke(settings.home)
    local = short_text(cat, flow_id, result.run["logical_date"])
    what = ", ".join(result.task_ids) if task_id else "every task"
    out = console()
    out.print(
        f"marked {what} of {flow_id} {local} {styled_state(state)} "
        f"({result.changed} changed); run: {styled_state(result.run['state'])}"
    )
    if result.cleared:
        out.print(
            f"cleared {', '.join(result.cleared)} (upstream_failed): the daemon runs them as "
            "their trigger rules now allow"
        )
    if state == "success" and result.run["state"] == "failed" and result.failed:
        day = result.run["logical_date"]
        out.print(
            f"note: the run stays failed: {', '.join(result.failed)} failed or could not run; "
            f"`cronflow replay {flow_id} --date {day} --only-failed` runs them again",
            soft_wrap=True,
        )


@app.command()
@handles_errors
def backfill(
    flow_id: FlowArg,
    from_: Annotated[
        str, typer.Option("--from", help="First day (YYYY-MM-DD) or date-time, included.")
    ],
    to: Annotated[str, typer.Option(help="Last day (YYYY-MM-DD) or date-time, included.")],
    as_json: JsonOpt = False,
) -> None:
    """Create the runs of every fire time in a range that has no run yet; the daemon runs them."""
    from cronflow import repair
    from cronflow.daemonlock import poke, running_daemon_pid
    from cronflow.timeparse import iso

    settings, store, cat = open_home()
    flow = cat.get(flow_id)
    result = repair.backfill(store, flow, from_, to, utc_now())
    poke(settings.home)
    if as_json:
        print_json([_created(flow_id, run_id, iso(at)) for run_id, at in result.created])
        return
    for run_id, at in result.created:
        typer.echo(f"run {run_id} of {flow_id} for {short_text(cat, flow_id, iso(at))} queued")
    typer.echo(
        f"{len(result.created)} run(s) created, {result.existing} already existed"
        + (" (fire times after now are left to the schedule)" if result.future else "")
    )
    _notes(settings, store, flow_id, running_daemon_pid(settings.home))


def _created(flow_id: str, run_id: int, logical_date: str | None) -> dict[str, Any]:
    return {"run_id": run_id, "flow_id": flow_id, "logical_date": logical_date, "state": "queued"}


def _notes(settings: Any, store: Any, flow_id: str, daemon_pid: int | None) -> None:
    if daemon_pid is None:
        typer.echo(
            f"note: no daemon is running on {settings.home}; start `cronflow daemon`", err=True
        )
    if any(r["flow_id"] == flow_id and r["paused"] for r in store.flow_states()):
        typer.echo(f"note: {flow_id} is paused; `cronflow unpause {flow_id}` to run them", err=True)

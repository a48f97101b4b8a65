"""`cronflow test`: run a flow or one task now, in the foreground, without the daemon."""

import os
from typing import Annotated, Any

import typer

from cronflow.cli.app import app, console, handles_errors, open_home, styled_state
from cronflow.timeparse import duration_text


@app.command("test")
@handles_errors
def test_flow(
    flow_id: Annotated[str, typer.Argument(metavar="FLOW", help="The flow to try.")],
    date: Annotated[
        str | None,
        typer.Option(help="Logical date: YYYY-MM-DD (the fire time that day) or ISO date-time."),
    ] = None,
    task: Annotated[
        str | None, typer.Option(help="Run only this task (its upstream tasks are not run).")
    ] = None,
) -> None:
    """Run a flow (or one task) now in the foreground, without the daemon; exit 1 if a task fails.

    Output is streamed as each task writes it. The home's schedule and history are left alone:
    the run lives in a scratch store that is deleted at the end."""
    from rich.markup import escape

    from cronflow import control
    from cronflow.states import RunState
    from cronflow.testrun import run_test

    settings, store, cat = open_home()
    flow = cat.get(flow_id)
    if task is not None:
        flow.task(task)
    logical_at = control.logical_date_for_trigger(flow, date, control.utc_now())
    out, err = console(), console(err=True)
    err.print(f"testing {flow_id} for {logical_at.astimezone(flow.tz).isoformat()}")

    def on_output(task_id: str, line: str) -> None:
        out.print(f"[dim]{task_id} |[/] {escape(line)}", highlight=False, soft_wrap=True)

    def on_result(result: Any) -> None:
        took = f" in {duration_text(result.duration_s)}" if result.duration_s is not None else ""
        reason = f": {result.reason}" if result.reason else ""
        err.print(f"{result.task_id}: {styled_state(result.state.value)}{took}{reason}")

    # Its tasks run where the daemon's do: in the home (tasks without cwd=), see run_daemon.
    os.chdir(settings.home)
    outcome = run_test(
        store, flow, logical_at, task, on_output, on_result, umask=settings.task_umask
    )
    err.print(f"{flow_id}: {styled_state(outcome.value)}")
    raise typer.Exit(0 if outcome is RunState.SUCCESS else 1)

"""`cronflow logs`: the log of a task's try, or follow it while it runs."""

import os
import sys
from collections.abc import Iterator
from typing import Annotated

import typer

from cronflow.cli.app import app, handles_errors, open_home


@app.command()
@handles_errors
def logs(
    target: Annotated[str, typer.Argument(metavar="FLOW.TASK", help="The task: FLOW.TASK.")],
    date: Annotated[
        str | None,
        typer.Option(help="The run: YYYY-MM-DD or an ISO date-time (default: the latest run)."),
    ] = None,
    try_number: Annotated[
        int | None, typer.Option("--try", help="Which try (default: the last one).")
    ] = None,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow", "-f", help="Keep printing while the try runs (waits for it to start)."
        ),
    ] = False,
) -> None:
    """Print the log of a task's try: its output between cronflow's start and end lines."""
    from cronflow import attempts
    from cronflow.daemonlock import running_daemon_pid

    flow_id, task_id = attempts.parse_target(target, task_required=True)
    assert task_id is not None
    settings, store, cat = open_home()
    attempt = attempts.find_attempt(settings, store, cat.get(flow_id), task_id, date, try_number)
    if not follow:
        _write(attempts.read_attempt(attempt))
        return
    is_running = lambda: running_daemon_pid(settings.home) is not None  # noqa: E731
    _write(attempts.follow_attempt(settings, store, attempt, is_running))


def _write(chunks: Iterator[bytes]) -> None:
    """Chunk by chunk, as they come; a reader that has had enough (`| head`) ends it quietly."""
    out = sys.stdout.buffer
    try:
        for chunk in chunks:
            out.write(chunk)
            out.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        raise typer.Exit(0) from None

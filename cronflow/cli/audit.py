"""`cronflow audit`: who changed what (triggers, marks, replays, backfills, pauses, variables,
connections), newest first."""

from typing import Annotated

import typer

from cronflow.cli.app import app, handles_errors, open_store, print_json
from cronflow.cli.tables import print_rows


@app.command()
@handles_errors
def audit(
    flow: Annotated[
        str | None, typer.Option(help="Only the changes of this flow (runs, tasks, pauses).")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(help="Only changes on or after this day (YYYY-MM-DD, local) or ISO time."),
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many entries, newest first.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
) -> None:
    """Who changed what, newest first: time, user, face (cli, web), action, flow, what."""
    from datetime import datetime

    from cronflow.audit import entries

    rows = entries(open_store(), flow, since, limit)
    if as_json:
        print_json(rows)
        return
    if not rows:
        typer.echo("no changes recorded" + (f" for {flow}" if flow else ""))
        return
    print_rows(
        ["time", "user", "via", "action", "flow", "what"],
        [
            [
                datetime.fromisoformat(row["at"]).astimezone().strftime("%Y-%m-%d %H:%M:%S"),
                row["user"],
                row["face"],
                row["action"],
                row["flow_id"] or "-",
                row["summary"],
            ]
            for row in rows
        ],
        wrap=["what"],
    )

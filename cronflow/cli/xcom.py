"""`cronflow xcom FLOW`: the XCom values of a flow's runs, secrets masked."""

import json
from typing import Annotated

import typer

from cronflow.cli.app import app, handles_errors, open_home, print_json, short_text
from cronflow.cli.tables import print_rows


@app.command()
@handles_errors
def xcom(
    flow_id: Annotated[str, typer.Argument(metavar="FLOW", help="The flow.")],
    date: Annotated[
        str | None,
        typer.Option(
            help="The runs: YYYY-MM-DD (every run of that day) or an ISO date-time "
            "(default: the latest run)."
        ),
    ] = None,
    task: Annotated[str | None, typer.Option(help="Only this task's values.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
) -> None:
    """The XCom values of a run (or of every run of a day): task, key and JSON value.

    Values are not secrets, but a secret value in one prints as ***."""
    from cronflow.masking import Masker, secret_values
    from cronflow.xcom import xcom_rows

    settings, store, cat = open_home()
    masker = Masker(secret_values(store, settings))
    rows = xcom_rows(store, cat.get(flow_id), date, task, masker.mask)
    if as_json:
        print_json(rows)
        return
    if not rows:
        typer.echo(f"no XCom values in the runs of {flow_id} asked for")
        return
    print_rows(
        ["logical date", "task", "key", "value"],
        [
            [
                short_text(cat, flow_id, r["logical_date"]),
                r["task_id"],
                r["key"],
                json.dumps(r["value"]),
            ]
            for r in rows
        ],
        wrap=["value"],
    )

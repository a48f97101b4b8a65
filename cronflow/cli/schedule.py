"""`cronflow next` (coming fire times) and `cronflow check` (validate flow files, e.g. in CI)."""

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cronflow.cli.app import (
    app,
    console,
    handles_errors,
    open_home,
    print_json,
    settings_from_options,
    utc_now,
)
from cronflow.limits import MAX_LISTED

if TYPE_CHECKING:
    from cronflow.config import Settings


@app.command("next")
@handles_errors
def next_fires(
    flow_id: Annotated[
        str | None,
        typer.Argument(metavar="[FLOW]", help="One flow (default: every scheduled flow)."),
    ] = None,
    after: Annotated[
        str | None,
        typer.Option(
            help="List fire times after this ISO date-time (naive: in each flow's zone) "
            "or from the start of this YYYY-MM-DD (default: now)."
        ),
    ] = None,
    limit: Annotated[int, typer.Option(help=f"How many fire times (1 to {MAX_LISTED:,}).")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
) -> None:
    """The next fire times of one flow, or of all flows soonest first, as the daemon computes them."""
    from rich.table import Table

    from cronflow.forecast import next_fires as forecast

    _, store, cat = open_home()
    flows = [cat.get(flow_id)] if flow_id else list(cat.flows.values())
    paused = {r["flow_id"] for r in store.flow_states() if r["paused"]}
    fires = forecast(flows, after, utc_now(), limit)
    rows = [{**fire.as_dict(), "paused": fire.flow_id in paused} for fire in fires]
    if flow_id and flows[0].schedule is None:
        at_start = flows[0].raw.get("run_at_daemon_start")
        kind = "runs once at each daemon start" if at_start else "manual only"
        typer.echo(f"flow '{flow_id}' has no schedule ({kind})", err=True)
    if as_json:
        print_json(rows)
        return
    title = None
    if flow_id and flows[0].schedule is not None:
        title = f"{flow_id}: {flows[0].schedule.describe()}"
    table = Table(title=title, box=None, header_style="bold")
    for column in ("flow", "fire time (flow's zone)", "UTC", "paused"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["flow"],
            row["fire_time"],
            row["fire_time_utc"].removesuffix("+00:00") + "Z",
            "yes" if row["paused"] else "",
        )
    console().print(table)


@app.command()
@handles_errors
def check(
    path: Annotated[
        Path | None,
        typer.Argument(
            metavar="[PATH]", help="A flows directory or one flow file (default: the home's)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON object.")] = False,
) -> None:
    """Validate flow files without a daemon (a CI gate): list each problem, exit 1 if any.

    Checks imports, flow and task definitions, cron expressions and timezones, task and
    inter-flow cycles, waits for unknown flows, duplicate flow ids, template values, and the
    pools (of the home's cronflow.toml) and connections (of its database) tasks use."""
    from rich.markup import escape

    from cronflow.checks import check_flows

    settings = settings_from_options(home_required=False)  # CI checks flows without a home
    report = check_flows(
        path or settings.flows_dir,
        timeout_s=settings.import_timeout_s,
        pools=settings.pools if (settings.home / "cronflow.toml").is_file() else None,
        connections=_known_connections(settings),
        owners=_flow_owners(settings),
    )
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
    else:
        out = console()
        for problem in report.problems:
            out.print(f"[red]problem[/]: {escape(problem.text)}", soft_wrap=True)
        for note in report.notes:
            out.print(f"note: {escape(note)}")
        verdict = f"{len(report.problems)} problem(s)" if report.problems else "no problems"
        out.print(f"{len(report.files)} flow files, {len(report.flows)} flows: {verdict}")
    if report.problems:
        raise typer.Exit(1)


def _flow_owners(settings: "Settings") -> dict[str, str]:
    """flow id -> the file the home's database has it from (none without a database)."""
    from cronflow.store import Store

    if not settings.db_path.exists():
        return {}
    store = Store(settings.db_path)
    try:
        return {row["flow_id"]: row["path"] for row in store.flows()}
    finally:
        store.close()


def _known_connections(settings: "Settings") -> set[str] | None:
    """Connection ids of the home's database and of CRONFLOW_CONN_* variables; None when there
    is neither (e.g. in CI): then they cannot be known and are not checked."""
    from cronflow import connections
    from cronflow.store import Store

    known = set(connections.env_connections())
    db_path = settings.db_path
    if db_path.exists():
        store = Store(db_path)
        try:
            known |= {conn.conn_id for conn in connections.list_connections(store)}
        finally:
            store.close()
    elif not known:
        return None
    return known

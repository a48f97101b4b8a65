"""Core commands: init, daemon, worker, list, trigger, tasks, status."""

import json
import time
from typing import Annotated, Any

import typer

from cronflow.cli.app import (
    STATE_STYLES,
    _options,
    app,
    console,
    farm_lines,
    handles_errors,
    local_text,
    open_home,
    print_json,
    run_type_text,
    settings_from_options,
    short_text,
    state_cell,
    styled_state,
    utc_now,
)
from cronflow.cli.tables import Cell, Spans, print_rows


@app.command()
@handles_errors
def init(
    force: Annotated[bool, typer.Option(help="Overwrite the example flow if it exists.")] = False,
) -> None:
    """Create the home: cronflow.toml, the database, logs/ and flows/ with an example flow."""
    from cronflow.config import home_path
    from cronflow.home import init_home

    home = home_path(_options["home"])
    settings = init_home(home, example=True, force=force)
    typer.echo(f"cronflow home ready at {home}")
    typer.echo(f"  flows:  {settings.flows_dir}")
    typer.echo("  next:   cronflow daemon   (or: cronflow trigger example --wait)")


@app.command()
@handles_errors
def daemon() -> None:
    """Run the scheduler in the foreground (what the systemd service runs)."""
    from cronflow.config import home_path
    from cronflow.daemon import run_daemon

    run_daemon(home_path(_options["home"]))


@app.command()
@handles_errors
def worker(
    queues: Annotated[
        str, typer.Option("--queues", "-Q", help="Queues to serve, comma-separated: gpu,station.")
    ],
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-c", min=1, max=1024, help="Attempts at once.")
    ] = 4,
    name: Annotated[
        str | None,
        typer.Option("--name", "-n", help="This worker's name (default: the host name)."),
    ] = None,
) -> None:
    """Run attempts of tasks with queue= on this server (executor = "celery"; needs the
    celery extra and [celery] in this home's cronflow.toml). Runs in the foreground."""
    from cronflow.config import home_path, load_settings, require_home
    from cronflow.daemon import configure_logging
    from cronflow.errors import ConfigError

    home = home_path(_options["home"])
    require_home(home)
    settings = load_settings(home)
    configure_logging()
    try:
        from cronflow.celery.worker import run_worker
    except ImportError as exc:
        raise ConfigError(
            f'cronflow worker needs: pip install "cronflow[celery]" ({exc})'
        ) from None
    names = [q.strip() for q in queues.split(",") if q.strip()]
    run_worker(settings, names, concurrency, name)


@app.command("list")
@handles_errors
def list_flows(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
) -> None:
    """Every flow: schedule, paused, last run and its state, next run, recent run states, and
    the fire time whose deadline it missed while no run since succeeded."""
    from cronflow.overview import RECENT_RUNS, flow_rows

    _, store, cat = open_home()
    rows = flow_rows(store, cat, utc_now())
    if as_json:
        print_json(rows)
        return
    headers = [
        "flow",
        "schedule",
        "paused",
        "last run",
        "state",
        "next run",
        f"last {RECENT_RUNS} runs",
        "missed deadline",
    ]
    table: list[list[Cell]] = []
    for row in rows:
        if row["flow_id"] is None:
            # a note row: the error spans the line and widens no column
            table.append([[("BROKEN", "red")], [(row["error"], "red")]])
            continue
        table.append(
            [
                row["flow_id"],
                row["schedule_text"],
                "yes" if row["paused"] else "no",
                short_text(cat, row["flow_id"], row["logical_date"]),
                state_cell(row["state"]),
                _next_text(cat, row),
                _counts_text(row["recent_states"]),
                _missed_text(cat, row["missed_deadline"]),
            ]
        )
    print_rows(headers, table, wrap=["schedule"])  # the schedule is the only column that may wrap


def _next_text(cat: Any, row: dict[str, Any]) -> Cell:
    """The next fire time. During a catch-up, its progress instead (the next run is the next of
    the backlog, as soon as max_active_runs allows); otherwise a fire time held back by
    max_active_runs comes first, and says so."""
    progress = row["catching_up"]
    if progress:
        return f"catching up: {progress['created']:,} of {progress['total']:,}"
    if row["held_back"]:
        return [
            (f"{short_text(cat, row['flow_id'], row['held_fire_at'])} {row['held_back']}", "yellow")
        ]
    return short_text(cat, row["flow_id"], row["next_fire_at"])


def _missed_text(cat: Any, miss: dict[str, Any] | None) -> Cell:
    """The fire time whose deadline passed while no run of it (or later) succeeded."""
    if miss is None:
        return ""
    task = f" {miss['task_id']}" if miss["task_id"] else ""
    return [(f"{short_text(cat, miss['flow_id'], miss['fire_at'])}{task}", "red")]


def _counts_text(counts: dict[str, int]) -> Cell:
    order = ("success", "failed", "running", "queued")
    names = {"success": "ok"}
    spans: Spans = []
    for state in (s for s in order if counts.get(s)):
        if spans:
            spans.append((", ", ""))
        spans.append((f"{counts[state]} {names.get(state, state)}", STATE_STYLES[state]))
    return spans


@app.command()
@handles_errors
def trigger(
    flow_id: Annotated[str, typer.Argument(metavar="FLOW", help="The flow to run.")],
    date: Annotated[
        str | None,
        typer.Option(
            help="Logical date: YYYY-MM-DD (the flow's fire time that day) or ISO date-time."
        ),
    ] = None,
    conf: Annotated[
        str | None, typer.Option(help="JSON object given to the run as conf/params.")
    ] = None,
    wait: Annotated[
        bool, typer.Option(help="Wait for the run to end; exit 1 if it failed.")
    ] = False,
) -> None:
    """Create a manual run of a flow; the daemon runs it at once."""
    from cronflow import control
    from cronflow.daemonlock import poke, running_daemon_pid

    settings, store, cat = open_home()
    flow = cat.get(flow_id)
    parsed_conf = control.parse_conf(conf)
    control.logical_date_for_trigger(flow, date, utc_now())  # a bad date before anything else
    daemon_pid = running_daemon_pid(settings.home)
    if wait and daemon_pid is None:
        from cronflow.errors import DaemonError

        raise DaemonError(f"no daemon is running on {settings.home}: start `cronflow daemon` first")
    run_id, logical_at = control.trigger_manual(store, flow, date, utc_now(), parsed_conf)
    poke(settings.home)
    local = logical_at.astimezone(flow.tz).isoformat()
    typer.echo(f"run {run_id} of {flow_id} for {local} queued")
    if daemon_pid is None:
        typer.echo("note: no daemon is running; start `cronflow daemon` to run it", err=True)
    if wait:
        raise typer.Exit(_wait_for_run(store, run_id))


def _wait_for_run(store: Any, run_id: int) -> int:
    """Show task states until the run ends; 0 on success, 1 on failure."""
    seen: dict[str, str] = {}
    err = console(err=True)
    while True:
        run = store.run(run_id)
        for ti in store.tis_of_runs([run_id]):
            if seen.get(ti["task_id"]) != ti["state"]:
                seen[ti["task_id"]] = ti["state"]
                err.print(f"  {ti['task_id']}: {styled_state(ti['state'])}")
        if run["state"] in ("success", "failed"):
            err.print(f"run {run_id}: {styled_state(run['state'])}")
            return 0 if run["state"] == "success" else 1
        time.sleep(0.2)


@app.command()
@handles_errors
def tasks(
    flow_id: Annotated[str, typer.Argument(metavar="FLOW", help="The flow.")],
    date: Annotated[
        str | None,
        typer.Option(help="The run: YYYY-MM-DD or an ISO date-time (default: the latest run)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
) -> None:
    """The task instances of one run: state, try, start, end, duration, queue (for a flow
    that sends tasks to Celery workers), host."""
    from cronflow import control
    from cronflow.overview import task_rows, triggered_by

    _s, store, cat = open_home()
    flow = cat.get(flow_id)
    run = control.find_one_run(store, flow, date)
    rows = task_rows(store, cat, flow, run, utc_now())
    if as_json:
        print_json(rows)
        return
    local = local_text(cat, flow_id, run["logical_date"])
    queues = any(row["queue"] for row in rows)  # a column only for a flow that sends tasks
    headers = ["task", "state", "try", "start", "end", "duration", "host", "reason"]
    if queues:
        headers.insert(6, "queue")
    table: list[list[Cell]] = []
    for row in rows:
        cells: list[Cell] = [
            row["task"],
            state_cell(row["state"]),
            f"{row['try_number']}/{row['max_tries']}",
            local_text(cat, flow_id, row["start"]),
            local_text(cat, flow_id, row["end"]),
            "-" if row["duration_s"] is None else f"{row['duration_s']:.2f}s",
            row["host"] or "-",
            row["reason"] or "",
        ]
        if queues:
            cells.insert(6, row["queue"] or "-")
        table.append(cells)
    print_rows(
        headers,
        table,
        wrap=headers,
        title=[
            (f"{flow_id} {local} (", ""),
            (run["state"], STATE_STYLES[run["state"]]),
            (f", {run_type_text(cat, run['run_type'], triggered_by(run))})", ""),
        ],
    )


@app.command()
@handles_errors
def status(
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the pid.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON object.")] = False,
) -> None:
    """Is the daemon alive: pid, start time, last heartbeat, running and queued tasks. Exit 1 if not."""
    from cronflow.daemonlock import running_daemon_pid
    from cronflow.states import LIVE_TASK_STATES, live_counts
    from cronflow.store import Store

    settings = settings_from_options()
    pid = running_daemon_pid(settings.home)
    store = Store(settings.db_path) if settings.db_path.exists() else None
    record = store.daemon_record() if store else None
    counts = live_counts(store.tis_in_states(LIVE_TASK_STATES) if store else [])
    info = {
        "running": pid is not None,
        "pid": pid,
        "home": str(settings.home),
        "started_at": record["started_at"] if record and pid else None,
        "heartbeat_at": record["heartbeat_at"] if record and pid else None,
        "running_tasks": counts["running"],
        "waiting_tasks": counts["waiting"],
    }
    farm = None
    if settings.executor == "celery":  # the catalog and Celery only for a farm
        from cronflow.overview import farm_overview

        farm = farm_overview(settings, store)
        info["farm"] = farm
    if as_json:
        typer.echo(json.dumps(info, indent=2))
    elif quiet:
        if pid is not None:
            typer.echo(pid)
    elif pid is None:
        typer.echo(f"daemon: not running on {settings.home}")
    else:
        typer.echo(f"daemon: running, pid {pid}, since {info['started_at']}")
        typer.echo(f"last heartbeat: {info['heartbeat_at']}")
        typer.echo(f"tasks: {info['running_tasks']} running, {info['waiting_tasks']} waiting")
    if farm is not None and not quiet and not as_json:
        for line in farm_lines(farm):
            typer.echo(line)
    if pid is None:
        raise typer.Exit(1)

"""`cronflow top`: a live view of running and waiting tasks, the latest failures and missed
deadlines, and with executor = "celery" the broker, the workers and unserved queues."""

import time
from typing import Annotated, Any

import typer

from cronflow.cli.app import (
    app,
    console,
    farm_lines,
    handles_errors,
    open_home,
    short_text,
    styled_state,
    utc_now,
)
from cronflow.limits import MAX_LISTED, REFRESH_S, checked
from cronflow.timeparse import duration_text


@app.command()
@handles_errors
def top(
    once: Annotated[bool, typer.Option("--once", help="Print one frame and exit.")] = False,
    interval: Annotated[
        float,
        typer.Option(help=f"Seconds between refreshes ({REFRESH_S[0]:g} to {REFRESH_S[1]:,g})."),
    ] = 2.0,
    failures: Annotated[
        int, typer.Option(help=f"How many recent failures to show (0 to {MAX_LISTED:,}).")
    ] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print one frame as JSON.")] = False,
) -> None:
    """A live view of running and waiting tasks, the latest failures and missed deadlines,
    until Ctrl-C.

    With --once, or when stdout is not a terminal, one frame is printed."""
    import json

    from cronflow.daemonlock import running_daemon_pid
    from cronflow.overview import farm_overview, live_tasks

    checked("--interval", interval, *REFRESH_S)
    settings, store, cat = open_home()
    out = console()

    def data() -> dict[str, Any]:
        frame_data = live_tasks(store, utc_now(), failures)
        farm = farm_overview(settings, store, cat)  # None unless executor = "celery"
        if farm is not None:
            frame_data["farm"] = farm
        return frame_data

    def frame() -> Any:
        return _render(cat, data(), running_daemon_pid(settings.home))

    if as_json:
        typer.echo(json.dumps(data(), indent=2))
    elif once or not out.is_terminal:
        out.print(frame())
    else:
        _live(out, frame, interval)


def _live(out: Any, frame: Any, interval: float) -> None:
    from rich.live import Live

    with Live(frame(), console=out, auto_refresh=False) as live:
        try:
            while True:
                time.sleep(interval)
                live.update(frame(), refresh=True)
        except KeyboardInterrupt:
            pass


def clock_text(cat: Any, now: Any) -> str:
    """The frame's time with its offset (`14:03:12 +01:00`): in the flows' timezone when they
    all share one (the usual case), else in the system's."""
    zones = {cat.timezone(flow_id) for flow_id in cat.flows}
    local = now.astimezone(zones.pop() if len(zones) == 1 else None)
    return f"{local:%H:%M:%S} {local.isoformat()[-6:]}"


def _render(cat: Any, data: dict[str, Any], daemon_pid: int | None) -> Any:
    from rich.console import Group
    from rich.table import Table

    active, counts = data["active"], data["counts"]
    daemon = f"daemon pid {daemon_pid}" if daemon_pid else "[red]daemon not running[/]"
    stamp = clock_text(cat, utc_now())
    header = (
        f"[bold]cronflow top[/]  {stamp}  {daemon}  {counts['running']} running, "
        f"{counts['waiting']} waiting"
    )
    now_table = Table(box=None, header_style="bold", title="active", title_justify="left")
    for column in ("flow", "task", "logical date", "state", "try", "time", "pool", "pid"):
        now_table.add_column(column, no_wrap=True)
    for ti in active:
        when = duration_text(ti["elapsed_s"]) if ti["state"] == "running" else "-"
        if ti["next_try_at"]:
            when = "at " + short_text(cat, ti["flow_id"], ti["next_try_at"])
        now_table.add_row(
            ti["flow_id"],
            ti["task_id"],
            short_text(cat, ti["flow_id"], ti["logical_date"]),
            styled_state(ti["state"]),
            f"{ti['try_number']}/{ti['max_tries']}",
            when,
            ti["pool"],
            str(ti["pid"] or "-"),
        )
    failed = Table(box=None, header_style="bold", title="latest failures", title_justify="left")
    for column in ("flow", "task", "logical date", "try", "ended", "reason"):
        failed.add_column(column, no_wrap=column != "reason", overflow="ellipsis")
    for ti in data["failures"]:
        failed.add_row(
            ti["flow_id"],
            ti["task_id"],
            short_text(cat, ti["flow_id"], ti["logical_date"]),
            str(ti["try_number"]),
            short_text(cat, ti["flow_id"], ti["end_at"]),
            ti["reason"] or "",
        )
    parts: list[Any] = [header, now_table if active else "no task running or waiting"]
    parts.append(failed if data["failures"] else "no failures")
    if data["missed_deadlines"]:
        parts.append(_missed(cat, data["missed_deadlines"]))
    if "farm" in data:
        parts.append(_farm(data["farm"]))
    return Group(*parts)


def _farm(farm: dict[str, Any]) -> Any:
    """The broker, the workers and the queues no live worker serves (executor = "celery")."""
    from rich.text import Text

    lines = farm_lines(farm)
    text = Text("farm\n", style="bold")
    for line in lines:
        alarm = "UNREACHABLE" in line or "SILENT" in line or "no live worker" in line
        text.append(line + "\n", style="red" if alarm else "")
    text.rstrip()
    return text


def _missed(cat: Any, misses: list[dict[str, Any]]) -> Any:
    """The latest missed deadlines: which fire time, when it was seen, its run now, why."""
    from rich.table import Table

    table = Table(box=None, header_style="bold", title="missed deadlines", title_justify="left")
    for column in ("flow", "task", "fire time", "deadline", "run now", "message"):
        table.add_column(column, no_wrap=column != "message", overflow="ellipsis")
    for miss in misses:
        table.add_row(
            miss["flow_id"],
            miss["task_id"] or "-",
            short_text(cat, miss["flow_id"], miss["fire_at"]),
            short_text(cat, miss["flow_id"], miss["deadline_at"]),
            styled_state(miss["run_state"]) if miss["run_state"] else "no run",
            miss["message"],
        )
    return table

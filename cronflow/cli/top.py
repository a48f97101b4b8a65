"""`cronflow top`: a live view of running and waiting tasks, the latest failures and missed
deadlines, and with executor = "celery" the broker, the workers and unserved queues."""

import sys
import time
from collections.abc import Callable
from typing import Annotated, Any

import typer

from cronflow.cli.app import (
    app,
    farm_lines,
    handles_errors,
    open_home,
    short_text,
    state_cell,
    utc_now,
)
from cronflow.cli.tables import Cell, Spans, styled_line, styled_output, table_lines
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

    def data() -> dict[str, Any]:
        frame_data = live_tasks(store, utc_now(), failures)
        farm = farm_overview(settings, store, cat)  # None unless executor = "celery"
        if farm is not None:
            frame_data["farm"] = farm
        return frame_data

    def frame(styled: bool) -> str:
        return "\n".join(_render(cat, data(), running_daemon_pid(settings.home), styled))

    terminal = styled_output()
    if as_json:
        typer.echo(json.dumps(data(), indent=2))
    elif once or not terminal:
        sys.stdout.write(frame(terminal) + "\n")  # not typer.echo: it strips the styles
    else:
        _live(lambda: frame(True), interval)


def _live(frame: Callable[[], str], interval: float) -> None:
    """Redraw the frame in place until Ctrl-C (rich's Live; the frame is already styled)."""
    from rich.live import Live
    from rich.text import Text

    with Live(Text.from_ansi(frame()), auto_refresh=False) as live:
        try:
            while True:
                time.sleep(interval)
                live.update(Text.from_ansi(frame()), refresh=True)
        except KeyboardInterrupt:
            pass


def clock_text(cat: Any, now: Any) -> str:
    """The frame's time with its offset (`14:03:12 +01:00`): in the flows' timezone when they
    all share one (the usual case), else in the system's."""
    zones = {cat.timezone(flow_id) for flow_id in cat.flows}
    local = now.astimezone(zones.pop() if len(zones) == 1 else None)
    return f"{local:%H:%M:%S} {local.isoformat()[-6:]}"


def _render(cat: Any, data: dict[str, Any], daemon_pid: int | None, styled: bool) -> list[str]:
    active, counts = data["active"], data["counts"]
    daemon = (f"daemon pid {daemon_pid}", "") if daemon_pid else ("daemon not running", "red")
    header: Spans = [
        ("cronflow top", "bold"),
        (f"  {clock_text(cat, utc_now())}  ", ""),
        daemon,
        (f"  {counts['running']} running, {counts['waiting']} waiting", ""),
    ]
    lines = [styled_line(header, styled)]
    if active:
        rows: list[list[Cell]] = []
        for ti in active:
            when = duration_text(ti["elapsed_s"]) if ti["state"] == "running" else "-"
            if ti["next_try_at"]:
                when = "at " + short_text(cat, ti["flow_id"], ti["next_try_at"])
            rows.append(
                [
                    ti["flow_id"],
                    ti["task_id"],
                    short_text(cat, ti["flow_id"], ti["logical_date"]),
                    state_cell(ti["state"]),
                    f"{ti['try_number']}/{ti['max_tries']}",
                    when,
                    ti["pool"],
                    str(ti["pid"] or "-"),
                ]
            )
        headers = ["flow", "task", "logical date", "state", "try", "time", "pool", "pid"]
        lines += table_lines(headers, rows, title="active", styled=styled)
    else:
        lines.append("no task running or waiting")
    if data["failures"]:
        rows = [
            [
                ti["flow_id"],
                ti["task_id"],
                short_text(cat, ti["flow_id"], ti["logical_date"]),
                str(ti["try_number"]),
                short_text(cat, ti["flow_id"], ti["end_at"]),
                ti["reason"] or "",
            ]
            for ti in data["failures"]
        ]
        headers = ["flow", "task", "logical date", "try", "ended", "reason"]
        lines += table_lines(headers, rows, ["reason"], "latest failures", styled)
    else:
        lines.append("no failures")
    if data["missed_deadlines"]:
        lines += _missed(cat, data["missed_deadlines"], styled)
    if "farm" in data:
        lines.append(styled_line([("farm", "bold")], styled))
        for line in farm_lines(data["farm"]):
            alarm = "UNREACHABLE" in line or "SILENT" in line or "no live worker" in line
            lines.append(styled_line([(line, "red" if alarm else "")], styled))
    return lines


def _missed(cat: Any, misses: list[dict[str, Any]], styled: bool) -> list[str]:
    """The latest missed deadlines: which fire time, when it was seen, its run now, why."""
    rows: list[list[Cell]] = [
        [
            miss["flow_id"],
            miss["task_id"] or "-",
            short_text(cat, miss["flow_id"], miss["fire_at"]),
            short_text(cat, miss["flow_id"], miss["deadline_at"]),
            state_cell(miss["run_state"]) if miss["run_state"] else "no run",
            miss["message"],
        ]
        for miss in misses
    ]
    headers = ["flow", "task", "fire time", "deadline", "run now", "message"]
    return table_lines(headers, rows, ["message"], "missed deadlines", styled)

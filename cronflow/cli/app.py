"""The Typer app and what every command module shares: options, errors, rendering.

Heavy modules are imported inside the commands so `cronflow --help` starts quickly. Any
CronflowError becomes `Error: <message>` on stderr and exit code 2; a failed run waited for with
`trigger --wait` exits 1.
"""

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any, Literal, TypeVar, cast

import typer

if TYPE_CHECKING:
    from cronflow.catalog import Catalog
    from cronflow.cli.tables import Cell
    from cronflow.config import Settings
    from cronflow.store import Store

app = typer.Typer(
    help="cronflow: flows of tasks on one server, instead of crontab.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click help: rich's help renderer imports markdown-it and friends, tripling the
    # start-up time of `cronflow --help` (issue: slow CLIs). Command output still uses rich.
    rich_markup_mode=None,
)

STATE_STYLES = {
    "success": "green",
    "failed": "red",
    "running": "cyan",
    "queued": "grey50",
    "scheduled": "grey62",
    "up_for_retry": "yellow",
    "up_for_reschedule": "turquoise2",
    "upstream_failed": "dark_orange",
    "skipped": "pink1",
    "none": "default",
}

_options: dict[str, Any] = {"home": None}
F = TypeVar("F", bound=Callable[..., Any])


def handles_errors(fn: F) -> F:
    """Turn expected errors into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from cronflow.errors import CronflowError

        try:
            return fn(*args, **kwargs)
        except CronflowError as exc:
            typer.echo(f"Error: {exc}", err=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def stdin_text(what: str) -> str:
    """Standard input as text without its final newline (a value kept out of shell history);
    bytes that are not UTF-8 are a one-line error, not a traceback."""
    import sys

    from cronflow.errors import InvalidInputError

    try:
        return sys.stdin.read().removesuffix("\n")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{what} read from stdin is not valid UTF-8: {exc}") from None


@app.callback()
def main_options(
    home: Annotated[
        Path | None,
        typer.Option(help="cronflow home (default: $CRONFLOW_HOME, else ~/.cronflow)."),
    ] = None,
) -> None:
    _options["home"] = home


def settings_from_options(home_required: bool = True) -> "Settings":
    """The home's settings. Only `init` creates a home: other commands on a path that is no
    home (a typo in CRONFLOW_HOME) stop with "no cronflow home at X" instead of making one."""
    from cronflow.config import home_path, load_settings, require_home

    home = home_path(_options["home"])
    if home_required:
        require_home(home)
    return load_settings(home)


def open_store() -> "Store":
    """The home's store, for the commands that need no flow (variables, connections, audit)."""
    from cronflow.store import Store

    return Store(settings_from_options().db_path)


def open_home() -> tuple["Settings", "Store", "Catalog"]:
    from cronflow import catalog
    from cronflow.store import Store

    settings = settings_from_options()
    store = Store(settings.db_path)
    return settings, store, catalog.sync(store, settings)


PIPE_WIDTH = 200  # piped output is read by programs: wider than 80 columns, so rows stay whole


def console(err: bool = False) -> Any:
    """Styles only on a terminal and without NO_COLOR (then not even bold); when piped and
    COLUMNS is not set, wide enough that table rows do not wrap."""
    import os

    from rich.console import Console

    colours: Literal["auto"] | None = None if os.environ.get("NO_COLOR") else "auto"
    out = Console(stderr=err, highlight=False, soft_wrap=False, color_system=colours)
    if not out.is_terminal:
        if "COLUMNS" not in os.environ:
            out.width = PIPE_WIDTH
        out.file = cast(IO[str], TrimmedLines(out.file))  # the rest of IO: __getattr__
    return out


class TrimmedLines:
    """A text stream that drops the spaces ending each line: rich pads every table cell to its
    column's width, which piped output (read by programs, diffed, grepped) does not want."""

    def __init__(self, stream: Any) -> None:
        self._stream, self._partial = stream, ""

    def write(self, text: str) -> int:
        *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            self._stream.write(line.rstrip(" ") + "\n")
        return len(text)

    def flush(self) -> None:
        if self._partial:  # a line printed without its end: kept as written
            self._stream.write(self._partial)
            self._partial = ""
        self._stream.flush()

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:  # encoding, fileno...: the stream's own
        return getattr(self._stream, name)


def styled_state(state: str | None) -> str:
    if not state:
        return "-"
    return f"[{STATE_STYLES.get(state, 'default')}]{state}[/]"


def print_json(rows: list[dict[str, Any]]) -> None:
    typer.echo(json.dumps(rows, indent=2))


def local_text(cat: "Catalog", flow_id: str, stamp: str | None) -> str:
    if not stamp:
        return "-"
    from datetime import datetime

    moment = datetime.fromisoformat(stamp).astimezone(cat.timezone(flow_id))
    return moment.strftime("%Y-%m-%d %H:%M %Z")


def short_text(cat: "Catalog", flow_id: str, stamp: str | None) -> str:
    """A compact moment for table cells in the flow's timezone (UTC for a flow no longer
    loaded); the zone is in the flow's schedule text."""
    from cronflow.timeparse import short_moment

    return short_moment(stamp, cat.timezone(flow_id)) if stamp else "-"


def farm_lines(farm: dict[str, Any]) -> list[str]:
    """A Celery farm (cronflow.overview.farm_overview) in a few lines of text, for `status`
    and `top`: the broker, each worker, each queue tasks wait on that no live worker serves."""
    broker = farm["broker"]
    if not broker["reachable"]:
        return [f"broker: {broker['url'] or '?'} UNREACHABLE: {broker['error']}"]
    persistence = "append-only on" if broker.get("append_only") else "append-only OFF"
    lines = [f"broker: {broker['url']} reachable, {persistence}"]
    if not farm["workers"]:
        lines.append("workers: none")
    for w in farm["workers"]:
        state = "live" if w["live"] else "SILENT"
        lines.append(
            f"worker {w['name']} on {w['host']}: {state}, queues {','.join(w['queues'])}, "
            f"{w['busy']}/{w['slots']} busy, cronflow {w['version']}, "
            f"last seen {w['last_seen_s']:g}s ago"
        )
    from cronflow.overview import unserved_queue_text

    lines += [unserved_queue_text(q) for q in farm["unserved_queues"]]
    return lines


def utc_now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


def state_cell(state: str | None) -> "Cell":
    return [(state, STATE_STYLES.get(state, "default"))] if state else "-"


def run_type_text(cat: "Catalog", run_type: str, by: dict[str, Any] | None) -> str:
    """'scheduled', 'manual', ... or 'triggered by station_day 2024-03-01 06:15 (run 42)'."""
    if not by:
        return run_type
    when = short_text(cat, by["flow_id"], by["logical_date"])
    return f"{run_type} by {by['flow_id']} {when} (run {by['run_id']})"

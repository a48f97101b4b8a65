"""The Typer app and what every command module shares: options, errors, rendering.

Heavy modules are imported inside the commands so `cronflow --help` starts quickly. Any
CronflowError becomes `Error: <message>` on stderr and exit code 2; a failed run waited for with
`trigger --wait` exits 1.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

if TYPE_CHECKING:
    from cronflow.catalog import Catalog
    from cronflow.config import Settings
    from cronflow.store import Store

app = typer.Typer(
    help="cronflow: flows of tasks on one server, instead of crontab.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
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


@app.callback()
def main_options(
    home: Annotated[
        Path | None,
        typer.Option(help="cronflow home (default: $CRONFLOW_HOME, else ~/.cronflow)."),
    ] = None,
) -> None:
    _options["home"] = home


def settings_from_options() -> Settings:
    from cronflow.config import home_path, load_settings

    return load_settings(home_path(_options["home"]))


def open_home() -> tuple[Settings, Store, Catalog]:
    from cronflow import catalog
    from cronflow.store import Store

    settings = settings_from_options()
    store = Store(settings.db_path)
    return settings, store, catalog.sync(store, settings)


def console(err: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=err, highlight=False, soft_wrap=False)


def styled_state(state: str | None) -> str:
    if not state:
        return "-"
    return f"[{STATE_STYLES.get(state, 'default')}]{state}[/]"


def print_json(rows: list[dict[str, Any]]) -> None:
    typer.echo(json.dumps(rows, indent=2))


def local_text(cat: Catalog, flow_id: str, stamp: str | None) -> str:
    if not stamp:
        return "-"
    from datetime import datetime

    moment = datetime.fromisoformat(stamp).astimezone(cat.flows[flow_id].tz)
    return moment.strftime("%Y-%m-%d %H:%M %Z")


def utc_now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)

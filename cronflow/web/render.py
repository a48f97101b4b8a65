"""Jinja2 for the web view's pages: one environment, autoescaped, with the formatting helpers
the templates share (moments in a flow's zone, durations, state cells).

States are written as text in every cell (the CLI's abbreviations in the grid), and coloured
by a CSS class per state whose colour is the CLI's (static/style.css; a test compares them).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.responses import HTMLResponse

from cronflow.states import STATE_CELLS
from cronflow.timeparse import duration_text, offset_text, short_moment


def zone_name(stamp: str | None, tz: ZoneInfo) -> str:
    if not stamp:
        return ""
    return datetime.fromisoformat(stamp).astimezone(tz).strftime("%Z")


def query(params: dict[str, Any]) -> str:
    """A query string of the non-empty values (lists repeat their key)."""
    pairs = [
        (key, item)
        for key, value in params.items()
        for item in (value if isinstance(value, list) else [value])
        if item
    ]
    return urlencode(pairs)


def cell(state: str | None) -> str:
    return STATE_CELLS.get(state or "", state or "")


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("cronflow.web", "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(duration=duration_text, cell=cell, offset_text=offset_text, query=query)
    env.globals.update(
        short_time=short_moment, zone_name=zone_name, state_cells_json=json.dumps(STATE_CELLS)
    )
    return env


ENV = _environment()


def page(name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(ENV.get_template(name).render(**context), status_code=status_code)

"""Templated task arguments: `{{ ds }}`, `{{ params.station }}`, `{{ var.api_url }}`. Pure.

Syntax: `{{ name }}` or `{{ name.key }}` with optional spaces inside the braces; `{{{{` stays
literal `{{`. Names: ds, ds_nodash, ts, ts_nodash, logical_date, data_interval_start,
data_interval_end, prev_ds, next_ds, run_id, flow_id, task_id, try_number, params.KEY, conf.KEY,
var.NAME. A name that does not exist is a TemplateError naming it and the known names.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from cronflow.errors import TemplateError

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_-]+)?)\s*\}\}")
_TOKEN = re.compile(r"\{\{\{\{|" + _PLACEHOLDER.pattern)  # the escape, or a placeholder


def date_context(
    logical_at: datetime,
    interval: tuple[datetime, datetime],
    tz: ZoneInfo,
    prev_at: datetime | None,
    next_at: datetime | None,
) -> dict[str, str]:
    """The execution-date values, in the flow's timezone (ds is the local date of the run)."""
    local = logical_at.astimezone(tz)
    # without a schedule: the neighbouring local days (wall-clock arithmetic, so a 23- or
    # 25-hour DST day does not give the same day or skip one)
    prev_local = prev_at.astimezone(tz) if prev_at else local - timedelta(days=1)
    next_local = next_at.astimezone(tz) if next_at else local + timedelta(days=1)
    return {
        "ds": local.strftime("%Y-%m-%d"),
        "ds_nodash": local.strftime("%Y%m%d"),
        "ts": local.isoformat(),
        "ts_nodash": local.strftime("%Y%m%dT%H%M%S"),
        "logical_date": local.isoformat(),
        "data_interval_start": interval[0].astimezone(tz).isoformat(),
        "data_interval_end": interval[1].astimezone(tz).isoformat(),
        "prev_ds": prev_local.strftime("%Y-%m-%d"),
        "next_ds": next_local.strftime("%Y-%m-%d"),
    }


def render(
    text: str,
    context: Mapping[str, Any],
    quote: Callable[[str], str] | None = None,
) -> str:
    """Replace every placeholder; `quote` (e.g. shlex.quote) wraps each value for a shell."""

    def replace(match: re.Match[str]) -> str:
        if match.group(1) is None:  # the escape {{{{
            return "{{"
        value = lookup(match.group(1), context)
        text_value = value if isinstance(value, str) else _as_text(value)
        return quote(text_value) if quote else text_value

    # one pass over the template only: a value is never read as a template or an escape
    return _TOKEN.sub(replace, text)


def lookup(name: str, context: Mapping[str, Any]) -> Any:
    head, _, key = name.partition(".")
    if head not in context:
        known = ", ".join(sorted(context))
        raise TemplateError(f"unknown template value '{{{{ {name} }}}}' (known: {known})")
    value = context[head]
    if not key:
        return value
    try:
        return value[key]
    except (KeyError, TypeError):
        raise TemplateError(
            f"template value '{{{{ {name} }}}}': no key '{key}' in {head}"
        ) from None


def _as_text(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def placeholders(text: str) -> list[str]:
    """The names a text refers to (for validation by `cronflow check`)."""
    return _PLACEHOLDER.findall(text.replace("{{{{", ""))

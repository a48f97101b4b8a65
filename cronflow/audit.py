"""Who changed what: the audit trail of changes made by hand (Airflow's audit log).

Every trigger, mark, replay, backfill, pause and unpause, and every change of a variable or a
connection is recorded by the library function that makes it (cronflow.control, repair,
variables, connections, Store.set_paused), in the same transaction as the change, so every face
(the CLI, a web view, a script) leaves the same trail and a change is never kept without its
record. An entry holds when, who, through which face, the action, the flow and what was touched
(dates, tasks, states, names), never a secret value: a variable's value is not recorded at all,
a connection's password only as "set".

Who: the Unix user running the command by default (the user who ran sudo, when it was sudo);
another face passes its own login as an `Actor`. The trail is listed newest first, a bounded
page at a time, by `cronflow audit`; `[retention] delete_audit_after_days` bounds its age.

A leaf module (no store import): the store records entries through it.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cronflow.errors import InvalidInputError
from cronflow.timeparse import parse_date_or_datetime, start_of_day, to_utc

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

    from cronflow.store import Store

ACTIONS = (
    "trigger",
    "mark",
    "replay",
    "backfill",
    "pause",
    "unpause",
    "var_set",
    "var_delete",
    "conn_set",
    "conn_delete",
)
DEFAULT_LIMIT = 50
MAX_LIMIT = 10_000
LISTED = 20  # dates or names kept in one entry's details; the rest are counted


@dataclass(frozen=True)
class Actor:
    """Who made a change, and through which face (`cli`, `web`, ...)."""

    user: str
    face: str = "cli"


def local_actor(face: str = "cli") -> Actor:
    """The Unix user running this process; with sudo, the user who ran sudo first."""
    try:
        name = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        name = str(os.geteuid())
    sudo_user = os.environ.get("SUDO_USER")
    if sudo_user and sudo_user != name:
        name = f"{sudo_user} (as {name})"
    return Actor(name, face)


def listed(values: Iterable[Any]) -> dict[str, Any]:
    """The first LISTED values and how many there are: an entry stays small."""
    items = list(values)
    return {"items": items[:LISTED], "count": len(items)}


def since_bound(text: str | None, tz: ZoneInfo | None = None) -> datetime | None:
    """--since: a day (its start, in the machine's timezone) or an ISO date-time."""
    if text is None:
        return None
    zone = tz or datetime.now().astimezone().tzinfo
    value = parse_date_or_datetime(text, zone)  # type: ignore[arg-type]
    if isinstance(value, datetime):
        return to_utc(value)
    return start_of_day(value, zone)  # type: ignore[arg-type]


def entries(
    store: Store,
    flow_id: str | None = None,
    since: str | None = None,
    limit: int = DEFAULT_LIMIT,
) -> list[dict[str, Any]]:
    """`cronflow audit`: entries newest first, at most `limit` (one indexed query)."""
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInputError(f"--limit must be between 1 and {MAX_LIMIT}, got {limit}")
    rows = store.audit_entries(flow_id, since_bound(since), limit)
    return [entry_row(row) for row in rows]


def entry_row(row: Mapping[str, Any]) -> dict[str, Any]:
    import json

    return {
        "at": row["at"],
        "user": row["user"],
        "face": row["face"],
        "action": row["action"],
        "flow_id": row["flow_id"],
        "summary": row["summary"],
        "details": json.loads(row["details"] or "{}"),
    }

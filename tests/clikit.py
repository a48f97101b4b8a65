"""Helpers for the CLI tests: the real Typer app in-process, flow sources, store setup."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner, Result

from cronflow.cli import app
from cronflow.states import RunState
from cronflow.store import Store
from cronflow.timeparse import iso

ENV = {"NO_COLOR": "1", "COLUMNS": "200", "CRONFLOW_HOME": None}

# a >> b >> c and a >> d; two retries each; daily at 02:30 Paris time.
DAILY = """
from cronflow import Flow, Shell
with Flow("daily", schedule="30 2 * * *", timezone="Europe/Paris", start_date="2024-03-01",
          defaults={"retries": 2}, doc="A daily flow."):
    a = Shell("a", "true")
    b = Shell("b", "true")
    c = Shell("c", "true")
    d = Shell("d", "true")
    a >> b >> c
    a >> d
"""

TWICE = """
from cronflow import Flow, Shell
with Flow("twice", schedule="0 6,18 * * *", timezone="UTC"):
    Shell("t", "true")
"""

MANUAL = """
from cronflow import Flow, Shell
with Flow("manual"):
    Shell("t", "true")
"""


def invoke(home: Path, *args: str, input: str | None = None) -> Result:
    """The real command line, in-process; an unexpected exception fails the test."""
    result = CliRunner().invoke(app, ["--home", str(home), *args], input=input, env=ENV)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def ok(home: Path, *args: str, input: str | None = None) -> Result:
    result = invoke(home, *args, input=input)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result


def rows(home: Path, *args: str) -> Any:
    return json.loads(ok(home, *args, "--json").stdout)


def error(home: Path, *args: str) -> str:
    """Bad input: exit 2 and one line `Error: ...` on stderr, nothing on stdout."""
    result = invoke(home, *args)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.stdout
    return lines[0].removeprefix("Error: ")


def store(home: Path) -> Store:
    return Store(home / "cronflow.db")


def set_tis(home: Path, run_id: int, **states: str | tuple[str, int]) -> None:
    """Put task instances of a run in a state (and try number), as if the daemon had run them;
    the run takes the outcome when every one is finished."""
    db = store(home)
    for task_id, value in states.items():
        state, tries = value if isinstance(value, tuple) else (value, 1)
        db.update_ti(run_id, task_id, state=state, try_number=tries, end_at=iso(_now()))
    finished = {"success", "failed", "upstream_failed", "skipped"}
    tis = db.tis_of_runs([run_id])
    if all(t["state"] in finished for t in tis):
        failed = any(t["state"] in ("failed", "upstream_failed") for t in tis)
        db.set_run_state(run_id, RunState.FAILED if failed else RunState.SUCCESS, _now())
    db.close()


def ti_states(home: Path, run_id: int) -> dict[str, str]:
    return {t["task_id"]: t["state"] for t in store(home).tis_of_runs([run_id])}


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)

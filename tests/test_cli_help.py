"""Every command documents itself, and `cronflow --help` stays quick (lazy imports)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from cronflow.cli import app


def _commands(group: object, prefix: str = "") -> list[tuple[str, object]]:
    found = []
    for name, command in sorted(group.commands.items()):  # type: ignore[attr-defined]
        found.append((prefix + name, command))
        if hasattr(command, "commands"):
            found += _commands(command, f"{prefix}{name} ")
    return found


COMMANDS = _commands(typer.main.get_command(app))


def test_the_commands_of_the_cli_issue_exist():
    names = {name for name, _ in COMMANDS}
    wanted = {"list", "show", "runs", "tasks", "trigger", "replay", "test", "backfill", "mark"}
    wanted |= {"logs", "pause", "unpause", "why", "status", "top"}
    assert wanted <= names


@pytest.mark.parametrize("name,command", COMMANDS, ids=[name for name, _ in COMMANDS])
def test_every_command_and_option_has_help(name, command):
    assert (command.help or "").strip(), f"`cronflow {name}` has no help text"
    for param in command.params:
        if param.name == "help":
            continue
        assert (getattr(param, "help", None) or "").strip(), f"`cronflow {name}`: {param.name}"


@pytest.mark.parametrize("name", [name for name, _ in COMMANDS])
def test_help_exits_0_and_shows_the_usage(name):
    result = CliRunner().invoke(app, [*name.split(), "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.stdout


def test_help_imports_no_heavy_module():
    code = (
        "import sys, cronflow.cli; "
        "print(' '.join(m for m in sys.modules if m.split('.')[0] in "
        "{'sqlite_utils', 'croniter', 'paramiko'} or m in "
        "{'cronflow.store', 'cronflow.catalog', 'cronflow.scheduler', 'rich.table'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""

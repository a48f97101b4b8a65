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


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["trigger"], "Error: Missing argument 'FLOW'. (see `cronflow trigger --help`)"),
        (["list", "--bogus"], "Error: No such option: --bogus (see `cronflow list --help`)"),
        (
            ["runs", "x", "--limit", "abc"],
            "Error: Invalid value for '--limit': 'abc' is not a valid int. "
            "(see `cronflow runs --help`)",
        ),
        (["nosuch"], "Error: No such command 'nosuch'. (see `cronflow --help`)"),
    ],
)
def test_a_usage_error_is_one_line_and_exit_2(tmp_path, args, message):
    result = subprocess.run(
        [sys.executable, "-m", "cronflow", "--home", str(tmp_path), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stderr, result.stdout) == (2, message + "\n", "")


def test_exit_codes_pass_through_the_executable(tmp_path):
    """A command's own exit code (status: 1 when no daemon runs) is the process's."""
    home = tmp_path / "home"
    subprocess.run([sys.executable, "-m", "cronflow", "--home", str(home), "init"], check=True)
    result = subprocess.run(
        [sys.executable, "-m", "cronflow", "--home", str(home), "status"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr

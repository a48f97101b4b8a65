"""The direction of imports (STYLE.md): pure modules stay pure, each third-party library has
one home, nothing imports the CLI."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "cronflow"

PURE = {
    "errors",
    "config",
    "timeparse",
    "timetable",
    "matchcount",
    "deps",
    "mapping",
    "flow",
    "templates",
    "macros",
    "states",
    "crontab",
    "limits",
    "processtext",
}
IO_AND_UP = {
    "store",
    "daemon",
    "scheduler",
    "executor",
    "forkserver",
    "zygote",
    "catalog",
    "loader",
    "cli",
    "worker",
    "context",
}
LIBRARY_HOMES = {
    "sqlite_utils": {"store"},
    "typer": {"cli"},
    "croniter": {"timetable"},
    "paramiko": {"ops"},
    "click": set(),
    # the web view's libraries: its subpackage only (cronflow[web]); jinja2 also renders the
    # task templates (cronflow/templates.py, sandboxed), a separate environment.
    "starlette": {"web"},
    "uvicorn": {"web"},
    "jinja2": {"web", "templates"},
    "prometheus_client": {"web"},
    "anyio": {"web"},
    "selenium": set(),
    # the Celery executor and worker (an extra): nothing outside cronflow/celery/ imports them
    "celery": {"celery"},
    "kombu": {"celery"},
    "redis": {"celery"},
}


def modules() -> dict[str, set[str]]:
    """Module dotted name (relative to cronflow) -> every module name it imports."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module)
        found[name] = imported
    return found


def top(name: str) -> str:
    return name.split(".")[0]


@pytest.mark.parametrize("module", sorted(PURE))
def test_pure_modules_do_no_io_imports(module):
    cronflow_imports = {
        top(m.removeprefix("cronflow.")) for m in modules()[module] if m.startswith("cronflow.")
    }
    assert not cronflow_imports & IO_AND_UP, cronflow_imports & IO_AND_UP


def test_each_third_party_library_is_imported_in_one_place():
    for module, imported in modules().items():
        for library, homes in LIBRARY_HOMES.items():
            if any(top(m) == library for m in imported):
                assert top(module) in homes, f"{module} imports {library}"


def test_listing_and_help_do_not_import_jinja(tmp_path):
    """Templates are rendered by the daemon and workers; `cronflow list` and `--help` never
    pay for Jinja."""
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from cronflow.cli import app\n"
        "for args in (['--help'], ['list'], ['list', '--json']):\n"
        "    result = CliRunner().invoke(app, ['--home', sys.argv[1], *args])\n"
        "    assert result.exit_code == 0, result.output\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'jinja2'))\n"
    )
    home = tmp_path / "home"
    subprocess.run([sys.executable, "-m", "cronflow", "--home", str(home), "init"], check=True)
    (home / "flows" / "t.py").write_text(
        "from cronflow import Flow, Shell\n"
        "with Flow('t', schedule='@daily'):\n"
        "    Shell('a', 'echo {{ ds }}')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(home)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_reading_commands_do_not_import_rich(tmp_path):
    """rich costs about 80 ms to import and more to render: the commands people run most print
    through cronflow.cli.tables instead (issue 18: every command within 200 ms)."""
    home = tmp_path / "home"
    subprocess.run([sys.executable, "-m", "cronflow", "--home", str(home), "init"], check=True)
    for args in (["list"], ["show", "example"], ["top", "--once"], ["status"], ["why", "example"]):
        result = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "cronflow", "--home", str(home), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.stdout, (args, result.stderr[-2000:])
        imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()}
        assert not {m for m in imported if m.split(".")[0] == "rich"}, args


def test_the_single_server_path_does_not_import_celery(tmp_path):
    """`--help`, the CLI and the daemon's modules never pay for Celery unless executor =
    "celery" asks for it."""
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from cronflow.cli import app\n"
        "import cronflow.daemon, cronflow.scheduler, cronflow.recovery\n"
        "result = CliRunner().invoke(app, ['--help'])\n"
        "assert result.exit_code == 0, result.output\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('celery', 'kombu', 'redis')"
        " or m.startswith('cronflow.celery')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_nothing_imports_the_cli():
    for module, imported in modules().items():
        if top(module) not in ("cli", "__main__"):
            assert not any(m.startswith("cronflow.cli") for m in imported), module


def test_the_web_view_talks_to_the_store_only_through_the_library():
    """cronflow/web has no SQL of its own: it never imports sqlite3 or the store's internals."""
    for module, imported in modules().items():
        if top(module) == "web":
            assert not {"sqlite3", "sqlite_utils"} & {top(m) for m in imported}, module
    for path in (PACKAGE / "web").rglob("*.py"):
        text = path.read_text()
        for word in ("SELECT ", "UPDATE ", "INSERT ", "DELETE FROM", ".conn", "._rows"):
            assert word not in text, f"{path.name} has {word!r}"

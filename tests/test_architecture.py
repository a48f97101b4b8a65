"""The direction of imports (STYLE.md): pure modules stay pure, each third-party library has
one home, nothing imports the CLI."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "cronflow"

PURE = {
    "errors",
    "config",
    "timeparse",
    "timetable",
    "deps",
    "flow",
    "templates",
    "states",
    "crontab",
}
IO_AND_UP = {
    "store",
    "daemon",
    "scheduler",
    "executor",
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
    # the web view's libraries: its subpackage only (cronflow[web]). jinja2 also renders task
    # templates in the core (cronflow/templates.py) if that module imports it.
    "starlette": {"web"},
    "uvicorn": {"web"},
    "jinja2": {"web", "templates"},
    "prometheus_client": {"web"},
    "anyio": {"web"},
    "selenium": set(),
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

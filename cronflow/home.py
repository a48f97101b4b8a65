"""Creating a home (cronflow.toml, the database, logs/ and flows/ with an example flow), and the
home the daemon starts on.

Only `cronflow init` creates a home; the daemon also sets one up in an existing, empty directory,
as systemd's StateDirectory makes. Anything else (a typo in CRONFLOW_HOME) is an error rather
than a new empty home that runs nothing. What a home holds is private to its owner: the config
may hold the SMTP password, the database connection secrets.
"""

from __future__ import annotations

import os
from pathlib import Path

from cronflow.config import (
    CONFIG_NAME,
    DEFAULT_CONFIG_TEXT,
    Settings,
    denied_text,
    is_home,
    load_settings,
)
from cronflow.errors import ConfigError, HomeAccessError, HomeNotFoundError
from cronflow.loader import flow_file_names
from cronflow.store import Store

EXAMPLE_FLOW = Path(__file__).parent / "examples" / "example.py"


def init_home(home: Path, example: bool = True, force: bool = False) -> Settings:
    """Create what is missing; an existing config and flows are kept (the example flow is
    rewritten only with `force`). The home, its config, flows and logs are private to their
    owner (0700 directories, a 0600 config)."""
    try:
        return _create(home, example, force)
    except PermissionError as exc:
        where = Path(exc.filename) if exc.filename else home
        raise HomeAccessError(where, denied_text(where)) from None


def _create(home: Path, example: bool, force: bool) -> Settings:
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o700)
    config = home / CONFIG_NAME
    if not config.exists():
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(DEFAULT_CONFIG_TEXT)
    settings = load_settings(home)
    if settings.flows_dir.exists() and not settings.flows_dir.is_dir():
        raise ConfigError(
            f"{config}: flows_dir {settings.flows_dir} is not a directory; fix flows_dir"
        )
    if not settings.flows_dir.exists():
        settings.flows_dir.mkdir(parents=True)
        settings.flows_dir.chmod(0o700)
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    settings.logs_dir.chmod(0o700)
    target = settings.flows_dir / "example.py"
    if example and (force or not target.exists()):
        target.write_text(EXAMPLE_FLOW.read_text(encoding="utf-8"), encoding="utf-8")
    Store(settings.db_path).close()
    return settings


def daemon_home(home: Path) -> Settings:
    """The home the daemon runs on: an existing home, or an existing empty directory, set up
    here (without the example flow). Its flows directory must exist: the daemon never creates
    one, which would hide a wrong flows_dir behind a daemon that runs nothing."""
    if not is_home(home):
        if not home.is_dir():
            raise HomeNotFoundError(home)
        try:
            holds_something = any(home.iterdir())
        except PermissionError:
            raise HomeAccessError(home, denied_text(home)) from None
        if holds_something:
            raise HomeNotFoundError(home, " (the directory holds no cronflow.toml nor cronflow.db)")
        return init_home(home, example=False)
    settings = load_settings(home)
    flow_file_names(settings.flows_dir)  # raises, saying what to do, if it is not a directory
    return settings

"""Creating a home: cronflow.toml, the database, logs/ and flows/ (with an example flow)."""

from __future__ import annotations

from pathlib import Path

from cronflow.config import CONFIG_NAME, DEFAULT_CONFIG_TEXT, Settings, load_settings
from cronflow.store import Store

EXAMPLE_FLOW = Path(__file__).parent / "examples" / "example.py"


def init_home(home: Path, example: bool = True, force: bool = False) -> Settings:
    """Create what is missing; an existing config and flows are kept (the example flow is
    rewritten only with `force`). The home and its logs are private to their owner."""
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o700)
    config = home / CONFIG_NAME
    if not config.exists():
        config.write_text(DEFAULT_CONFIG_TEXT, encoding="utf-8")
    settings = load_settings(home)
    settings.flows_dir.mkdir(parents=True, exist_ok=True)
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    settings.logs_dir.chmod(0o700)
    target = settings.flows_dir / "example.py"
    if example and (force or not target.exists()):
        target.write_text(EXAMPLE_FLOW.read_text(encoding="utf-8"), encoding="utf-8")
    Store(settings.db_path).close()
    return settings

"""The `cronflow` command. Each module of this package adds one group of commands to `app`."""

from __future__ import annotations

from cronflow.cli import (
    core,  # noqa: F401  (registers its commands)
    maintenance,  # noqa: F401
    service,  # noqa: F401
)
from cronflow.cli.app import app

__all__ = ["app", "main"]


def main() -> None:
    app()

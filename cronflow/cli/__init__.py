"""The `cronflow` command. Each module of this package adds one group of commands to `app`."""

from cronflow.cli import (
    audit,  # noqa: F401  (each registers its commands)
    connections,  # noqa: F401
    core,  # noqa: F401
    crontab,  # noqa: F401
    flows,  # noqa: F401
    logs,  # noqa: F401
    maintenance,  # noqa: F401
    runs,  # noqa: F401
    schedule,  # noqa: F401
    service,  # noqa: F401
    testrun,  # noqa: F401
    top,  # noqa: F401
    variables,  # noqa: F401
    web,  # noqa: F401
    xcom,  # noqa: F401
)
from cronflow.cli.app import app

__all__ = ["app", "main"]


def main() -> None:
    app()

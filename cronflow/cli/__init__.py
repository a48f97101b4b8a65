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
    """The `cronflow` executable. A usage error (a missing argument, an unknown option, a value
    of the wrong type) is one line saying what and where to read more, exit 2, as every other
    bad input; click would print the usage block around it."""
    import sys

    import typer
    from typer.main import get_command

    try:
        code = get_command(app).main(prog_name="cronflow", standalone_mode=False)
    except typer.Abort:
        print("Aborted!", file=sys.stderr)
        sys.exit(1)
    except typer.TyperException as exc:  # click's usage errors
        ctx = getattr(exc, "ctx", None)
        more = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        print(f"Error: {message}{more}", file=sys.stderr)
        sys.exit(getattr(exc, "exit_code", 2))
    sys.exit(code if isinstance(code, int) else 0)

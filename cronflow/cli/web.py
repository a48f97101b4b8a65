"""`cronflow web` (the web view) and `cronflow web-user` (who may act through it).

The web view's libraries (starlette, uvicorn, jinja2, prometheus-client) come with the `web`
extra and are imported only inside `cronflow web`, so no other command loads them.
"""

import sys
from pathlib import Path
from typing import Annotated

import typer

from cronflow.cli.app import app, handles_errors, settings_from_options

LOOPBACK = ("127.0.0.1", "::1", "localhost")

users_app = typer.Typer(help="Users who may log in to the web view to act (trigger, mark...).")
app.add_typer(users_app, name="web-user")


@app.command()
@handles_errors
def web(
    host: Annotated[
        str, typer.Option(help="Address to listen on (default: this machine only).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8787,
    read_only: Annotated[
        bool, typer.Option("--read-only", help="No login and no action: pages only.")
    ] = False,
    tls_cert: Annotated[
        Path | None, typer.Option(help="Serve over TLS with this certificate (PEM).")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option(help="The TLS certificate's key (PEM).")] = None,
) -> None:
    """Serve the web view: flows, grids of runs, task logs, status, /metrics and /healthz."""
    from cronflow.errors import InvalidInputError

    if (tls_cert is None) != (tls_key is None):
        raise InvalidInputError("--tls-cert and --tls-key go together")
    if not 1 <= port <= 65535:
        raise InvalidInputError(f"--port {port}: expected 1 to 65535")
    try:
        from cronflow.web.app import serve
    except ImportError as exc:
        raise InvalidInputError(
            f"the web view needs the web extra ({exc.name} is missing): pip install 'cronflow[web]'"
        ) from None
    settings = settings_from_options()
    scheme = "https" if tls_cert else "http"
    shown = f"[{host}]" if ":" in host else host
    typer.echo(
        f"cronflow web view of {settings.home} on {scheme}://{shown}:{port}/"
        + (" (read-only)" if read_only else ""),
        err=True,
    )
    if host not in LOOPBACK and tls_cert is None:
        typer.echo(
            f"warning: listening on {host} without TLS: passwords and session cookies cross "
            "the network in clear; give --tls-cert/--tls-key or put a TLS proxy in front",
            err=True,
        )
    serve(settings, host, port, read_only, tls_cert, tls_key)


@users_app.command("add")
@handles_errors
def add_user(
    name: Annotated[str, typer.Argument(help="The user's name.")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
) -> None:
    """Add a web user, or set a new password for one (asked twice, or read from stdin)."""
    from cronflow.webusers import check_name, set_user, users_path

    check_name(name)
    settings = settings_from_options()
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    new = set_user(settings.home, name, password)
    what = "added" if new else "password changed for"
    typer.echo(f"web user {what} {name} ({users_path(settings.home)})")


@users_app.command("list")
@handles_errors
def list_users() -> None:
    """The web users' names (their passwords are only stored as scrypt hashes)."""
    from cronflow.webusers import load_users

    for name, user in sorted(load_users(settings_from_options().home).items()):
        typer.echo(f"{name}  added {user.get('created_at', '-')}")


@users_app.command("delete")
@handles_errors
def delete_user(name: Annotated[str, typer.Argument(help="The user's name.")]) -> None:
    """Remove a web user; their open sessions can no longer act."""
    from cronflow.webusers import delete_user as delete

    delete(settings_from_options().home, name)
    typer.echo(f"web user {name} deleted")

"""`cronflow conn add|list|show|delete|test`: named connections to servers; passwords print as
***."""

from typing import Annotated

import typer

from cronflow.cli.app import (
    app,
    console,
    handles_errors,
    open_store,
    print_json,
    stdin_text,
)

conn_app = typer.Typer(
    help="Connections to servers (ssh, sftp, ftp, ftps, smtp, smtps, http, https); "
    "passwords always print as ***.",
    no_args_is_help=True,
)
app.add_typer(conn_app, name="conn")

ConnId = Annotated[str, typer.Argument(help="The connection's id, e.g. station.")]


@conn_app.command("add")
@handles_errors
def conn_add(
    conn_id: ConnId,
    uri: Annotated[
        str,
        typer.Argument(
            help="e.g. 'ssh://user@host:22?key_file=/path/key', 'smtp://user@mail:587', "
            "'https://host/api'."
        ),
    ],
    password_stdin: Annotated[
        bool,
        typer.Option("--password-stdin", help="Read the password from stdin instead of the URI."),
    ] = False,
    replace: Annotated[
        bool, typer.Option("--replace", help="Overwrite a connection with the same id.")
    ] = False,
) -> None:
    """Store a connection given as a URI (query parameters become its extras)."""
    from dataclasses import replace as with_fields

    from cronflow.connections import parse_uri, save_connection
    from cronflow.errors import InvalidInputError

    store = open_store()
    conn = parse_uri(conn_id, uri)
    if password_stdin:
        conn = with_fields(conn, password=stdin_text(f"the password of connection '{conn_id}'"))
    if store.connection(conn_id) is not None and not replace:
        raise InvalidInputError(
            f"connection '{conn_id}' already exists; add --replace to change it"
        )
    save_connection(store, conn)
    typer.echo(f"connection '{conn_id}' saved: {conn.redacted_uri()}")


@conn_app.command("list")
@handles_errors
def conn_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
) -> None:
    """Every connection, stored or from CRONFLOW_CONN_* variables."""
    from rich.table import Table

    from cronflow.connections import list_connections

    rows = [c.as_row() for c in list_connections(open_store())]
    if as_json:
        print_json(rows)
        return
    if not rows:
        typer.echo("no connections (add one with `cronflow conn add ID URI`)")
        return
    table = Table("ID", "TYPE", "HOST", "PORT", "LOGIN", "SOURCE", "URI", box=None, pad_edge=False)
    for r in rows:
        table.add_row(
            r["conn_id"], r["type"], r["host"] or "", str(r["port"]), r["login"] or "",
            r["source"], r["uri"],
        )  # fmt: skip
    console().print(table)


@conn_app.command("show")
@handles_errors
def conn_show(
    conn_id: ConnId,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON object.")] = False,
) -> None:
    """One connection's fields, the password as ***."""
    import json

    from cronflow.connections import get_connection

    row = get_connection(open_store(), conn_id).as_row()
    if as_json:
        typer.echo(json.dumps(row, indent=2))
        return
    for key in ("conn_id", "type", "host", "port", "login", "password", "source", "uri"):
        typer.echo(f"{key + ':':10} {row[key] if row[key] is not None else '-'}")
    for key, value in sorted(row["extra"].items()):
        typer.echo(f"{'extra:':10} {key}={value}")


@conn_app.command("delete")
@handles_errors
def conn_delete(conn_id: ConnId) -> None:
    """Delete a stored connection."""
    from cronflow.connections import delete_connection

    delete_connection(open_store(), conn_id)
    typer.echo(f"connection '{conn_id}' deleted")


@conn_app.command("test")
@handles_errors
def conn_test(conn_id: ConnId) -> None:
    """Reach the server and log in (no command is run, nothing is sent). Exit 1 if that fails."""
    from cronflow.connections import get_connection
    from cronflow.errors import CronflowError
    from cronflow.ops import check_connection

    conn = get_connection(open_store(), conn_id)
    try:
        message = check_connection(conn)
    except CronflowError as exc:
        from cronflow.masking import Masker, secret_values

        typer.echo(f"Error: {Masker(secret_values(open_store())).mask(str(exc))}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"ok: {message}")

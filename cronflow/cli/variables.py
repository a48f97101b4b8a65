"""`cronflow var get|set|list|delete`: the variables templates read as {{ var.NAME }}."""

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

var_app = typer.Typer(
    help="Variables for templates ({{ var.NAME }}); secret values always print as ***.",
    no_args_is_help=True,
)
app.add_typer(var_app, name="var")


@var_app.command("get")
@handles_errors
def var_get(name: Annotated[str, typer.Argument(help="The variable's name.")]) -> None:
    """Print a variable's value (*** for a secret; CRONFLOW_VAR_NAME wins over the store)."""
    from cronflow.variables import get_variable

    typer.echo(get_variable(open_store(), name).value_shown)


@var_app.command("set")
@handles_errors
def var_set(
    name: Annotated[str, typer.Argument(help="The variable's name.")],
    value: Annotated[
        str | None, typer.Argument(help="The value; leave it out with --stdin.")
    ] = None,
    secret: Annotated[
        bool | None,
        typer.Option(
            "--secret/--no-secret",
            help="Mask the value everywhere (default: keep what it was; new ones are not secret).",
        ),
    ] = None,
    stdin: Annotated[
        bool,
        typer.Option("--stdin", help="Read the value from stdin (keeps it out of shell history)."),
    ] = False,
) -> None:
    """Create or change a stored variable."""
    from cronflow.errors import InvalidInputError
    from cronflow.variables import set_variable

    if stdin == (value is not None):
        raise InvalidInputError("give the value as an argument or with --stdin (one of the two)")
    if stdin:
        value = stdin_text(f"the value of variable '{name}'")
    assert value is not None
    is_secret = set_variable(open_store(), name, value, secret)
    typer.echo(f"variable '{name}' set" + (" (secret)" if is_secret else ""))


@var_app.command("list")
@handles_errors
def var_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
) -> None:
    """Every variable, stored or from the environment; secret values as ***."""
    from rich.table import Table

    from cronflow.variables import list_variables

    rows = [v.as_row() for v in list_variables(open_store())]
    if as_json:
        print_json(rows)
        return
    if not rows:
        typer.echo("no variables (add one with `cronflow var set NAME VALUE`)")
        return
    table = Table("NAME", "VALUE", "SECRET", "SOURCE", box=None, pad_edge=False)
    for row in rows:
        table.add_row(
            str(row["name"]), str(row["value"]), "yes" if row["secret"] else "", str(row["source"])
        )
    console().print(table)


@var_app.command("delete")
@handles_errors
def var_delete(name: Annotated[str, typer.Argument(help="The variable's name.")]) -> None:
    """Delete a stored variable."""
    from cronflow.variables import delete_variable

    delete_variable(open_store(), name)
    typer.echo(f"variable '{name}' deleted")

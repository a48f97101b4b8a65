"""`cronflow install-service`: run the daemon under systemd."""

import shlex
from typing import Annotated

import typer

from cronflow.cli.app import _options, app, handles_errors, settings_from_options


@app.command("install-service")
@handles_errors
def install_service(
    user: Annotated[
        bool,
        typer.Option(
            "--user", help="Install a user unit (systemctl --user) instead of the system one."
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the unit and the commands; change nothing.")
    ] = False,
    web: Annotated[
        bool,
        typer.Option("--web", help="Install the web view's unit (cronflow-web.service) instead."),
    ] = False,
    worker: Annotated[
        str | None,
        typer.Option(
            "--worker",
            help="Install a Celery worker's unit instead, serving these queues: gpu,station.",
        ),
    ] = None,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, max=1024, help="With --worker: tries at once.")
    ] = 4,
) -> None:
    """Write the systemd unit for this cronflow, then daemon-reload and enable --now.

    The system unit runs as the dedicated user 'cronflow' with its home in /var/lib/cronflow
    (unless --home or CRONFLOW_HOME says otherwise); --user runs it as you, with your home.
    --web installs `cronflow web` (127.0.0.1:8787) as its own, more sandboxed unit.
    """
    from cronflow import service
    from cronflow.config import home_path

    explicit = _options["home"] is not None or "CRONFLOW_HOME" in __import__("os").environ
    home = home_path(_options["home"]) if (user or explicit) else service.STATE_HOME
    # The home may not exist yet: installing creates it.
    grace = (
        settings_from_options(home_required=False).grace_period_s if (user or explicit) else 30.0
    )
    spec: service.UnitSpec | service.WebUnitSpec
    if web and worker is not None:
        raise service.ServiceError("--web and --worker install different units: give one")
    if web:
        spec = service.WebUnitSpec(
            service.cronflow_executable(), home, None if user else service.SERVICE_USER
        )
    else:
        spec = service.UnitSpec(
            executable=service.cronflow_executable(),
            home=home,
            user=None if user else service.SERVICE_USER,
            grace_period_s=grace,
            worker=service.worker_arguments(worker, concurrency) if worker is not None else None,
        )
    commands = service.install_commands(user, spec.name)
    if not user:
        create = service.system_user_command(home)
        if create:
            commands.insert(0, create)
        blocked = service.unreadable_by_others(spec.executable)
        if blocked:
            typer.echo(
                f"warning: {blocked} is closed to other users, so the '{service.SERVICE_USER}' user "
                f"cannot run {spec.executable}; install cronflow in a venv under /opt",
                err=True,
            )
    if dry_run:
        typer.echo(f"# {service.unit_path(user, spec.name)}")
        typer.echo(spec.render())
        for command in commands:
            typer.echo(shlex.join(command))
        return
    path = service.install(spec, user)
    unit = spec.name.removesuffix(".service")
    typer.echo(f"installed {path} and started {spec.name} (home: {home})")
    status = f"systemctl --user status {unit}" if user else f"systemctl status {unit}"
    typer.echo(f"check it with: {status}   and: journalctl {'--user ' if user else ''}-u {unit} -f")

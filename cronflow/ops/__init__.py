"""Operators: ready-made task kinds. Each module holds one family.

`launch_for()` tells the executor how to start an attempt of any task kind: a shell task is
started directly (no Python start-up per attempt); every other kind runs in a worker process
(`python -m cronflow.worker`) that imports the flow file and calls the operator's `execute()`.
When the home has secrets, a shell command runs under a masking filter (cronflow.masking).

Families: shell, python, ssh (SSHCommand), sftp (SFTPGet/SFTPPut), ftp (FTPGet/FTPPut),
sensors (FileSensor), trigger (TriggerFlow, FlowSensor), mail (Email), http (Http). They are
imported where used (`from cronflow import SSHCommand`), so the daemon loads none of them.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from importlib import import_module
from typing import TYPE_CHECKING, Any

from cronflow.ops.python import Python
from cronflow.ops.shell import Shell, shell_launch
from cronflow.processtext import check_argument

if TYPE_CHECKING:
    from cronflow.connections import Connection

__all__ = ["Launch", "Python", "Shell", "check_connection", "launch_for"]

# connection type -> the op module whose check() `cronflow conn test` calls
_CHECKERS = {
    "ssh": "ssh",
    "sftp": "ssh",
    "ftp": "ftp",
    "ftps": "ftp",
    "smtp": "mail",
    "smtps": "mail",
    "http": "http",
    "https": "http",
}


@dataclass(frozen=True)
class Launch:
    """A process to start: argv, extra environment, working directory."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    stdin: str | None = None  # text for the process's standard input (else end-of-file)
    # A shell script that the executor writes to a private file, whose path ends argv: a
    # rendered command may hold secrets, and every user can read every command line.
    script: str | None = None
    keep_background: bool = False  # leave what the task started in the background running


def launch_for(kind: str, op: dict[str, Any], context: dict[str, Any]) -> Launch:
    """How to start one attempt of a task of this kind. TemplateError if an argument is bad,
    InvalidInputError if one is text no process can take."""
    if kind == Shell.kind:
        command, env, cwd = shell_launch(op, context)
        argv = [op["shell"]]
        if context.get("secrets"):  # any secret known: output goes through the masking filter
            argv = [sys.executable, "-m", "cronflow.masking", "--", *argv]
        stdin = op.get("stdin")
        if stdin is not None:
            check_argument(stdin, "the standard input text", nul_ok=True)
        return Launch(
            argv,
            env,
            cwd,
            stdin=stdin,
            script=command,
            keep_background=bool(op.get("keep_background")),
        )
    return Launch([sys.executable, "-m", "cronflow.worker"])


def check_connection(conn: Connection) -> str:
    """Reach the connection's server and log in; a line saying what worked, else an error."""
    return import_module(f"cronflow.ops.{_CHECKERS[conn.conn_type]}").check(conn)  # type: ignore[no-any-return]

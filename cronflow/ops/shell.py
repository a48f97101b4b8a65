"""Shell: run a command line with a shell; the exit code decides success.

Template values are shell-quoted when they need it (`shlex.quote`), so a parameter with a space
or a quote can never split or inject a command: write `cp {{ params.src }} /data`, not
`cp "{{ params.src }}" /data`.

`stdin="text"` gives the command that text on its standard input (as crontab's `%` does); it is
passed as is, not as a template. Without it the command reads end-of-file.

The rendered command never appears on a command line (`ps` shows every process's arguments to
every user): the shell reads it from the attempt's private file (see cronflow.supervisor).

When the command's main process ends, what it left running in the background (`sleep 300 &`)
is stopped, and the log says how many processes were. `keep_background=True` leaves them
running, for the rare job that means to start a daemon.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cronflow.errors import FlowDefinitionError, InvalidInputError
from cronflow.flow import Task
from cronflow.processtext import check_argument, check_env_name
from cronflow.templates import render

DEFAULT_SHELL = "/bin/bash" if Path("/bin/bash").exists() else "/bin/sh"


class Shell(Task):
    """`Shell("fetch", "fetch-station --day {{ ds }}", env={"TOKEN": "{{ var.token }}"})`."""

    kind = "shell"

    def __init__(
        self,
        task_id: str,
        command: str,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        shell: str = DEFAULT_SHELL,
        stdin: str | None = None,
        keep_background: bool = False,
        **task_args: Any,
    ) -> None:
        super().__init__(task_id, **task_args)
        self.command = command
        self.env = {str(k): str(v) for k, v in (env or {}).items()}
        self.cwd = cwd
        self.shell = shell
        self.stdin = None if stdin is None else str(stdin)
        self.keep_background = bool(keep_background)

    def op_spec(self) -> dict[str, Any]:
        try:  # what the flow file wrote; rendered values are checked again before each start
            _check(self.command, self.env, self.cwd, self.shell, rendered=False)
            if self.stdin is not None:
                check_argument(self.stdin, "the standard input text", nul_ok=True)
        except InvalidInputError as exc:
            raise FlowDefinitionError(f"task '{self.task_id}': {exc}") from None
        spec: dict[str, Any] = {
            "command": self.command,
            "env": self.env,
            "cwd": self.cwd,
            "shell": self.shell,
        }
        if self.stdin is not None:
            spec["stdin"] = self.stdin
        if self.keep_background:
            spec["keep_background"] = True
        return spec


def shell_launch(
    op: Mapping[str, Any], context: Mapping[str, Any]
) -> tuple[str, dict[str, str], str | None]:
    """The command (the shell's script), environment and cwd of one attempt, rendered;
    InvalidInputError if a rendered value is text no process can take (NUL, a lone surrogate:
    processtext)."""
    command = render(op["command"], context, quote=shlex.quote)
    env = {k: render(v, context) for k, v in op["env"].items()}
    cwd = render(op["cwd"], context) if op["cwd"] else None
    _check(command, env, cwd, op["shell"], rendered=True)
    return command, env, cwd


def _check(
    command: str, env: Mapping[str, str], cwd: str | None, shell: str, *, rendered: bool
) -> None:
    """InvalidInputError if a piece is text no process can take (NUL, a lone surrogate)."""
    check_argument(command, "the command", rendered=rendered)
    for name, value in env.items():
        check_argument(value, f"environment variable {check_env_name(name)}", rendered=rendered)
    if cwd:
        check_argument(cwd, "the working directory", rendered=rendered)
    check_argument(shell, "the shell")

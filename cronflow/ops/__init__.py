"""Operators: ready-made task kinds. Each module holds one family.

`launch_for()` tells the executor how to start an attempt of any task kind: a shell task is
started directly (no Python start-up per attempt); every other kind runs in a worker process
(`python -m cronflow.worker`) that imports the flow file and calls the operator's `execute()`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from cronflow.ops.python import Python
from cronflow.ops.shell import Shell, shell_launch

__all__ = ["Launch", "Python", "Shell", "launch_for"]


@dataclass(frozen=True)
class Launch:
    """A process to start: argv, extra environment, working directory."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None


def launch_for(kind: str, op: dict[str, Any], context: dict[str, Any]) -> Launch:
    """How to start one attempt of a task of this kind. TemplateError if an argument is bad."""
    if kind == Shell.kind:
        argv, env, cwd = shell_launch(op, context)
        return Launch(argv, env, cwd)
    return Launch([sys.executable, "-m", "cronflow.worker"])

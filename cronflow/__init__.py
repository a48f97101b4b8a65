"""cronflow: flows of tasks on one server, instead of crontab.

The public API for flow files:

    from cronflow import Flow, Shell, Python, FlowDependency

Names are loaded on first use (PEP 562), so `cronflow --help` does not pay for them.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Flow": "cronflow.flow",
    "FlowDependency": "cronflow.flow",
    "Task": "cronflow.flow",
    "Shell": "cronflow.ops.shell",
    "Python": "cronflow.ops.python",
    "TriggerRule": "cronflow.states",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # for type checkers and editors only
    from cronflow.flow import Flow, FlowDependency, Task  # noqa: F401
    from cronflow.ops.python import Python  # noqa: F401
    from cronflow.ops.shell import Shell  # noqa: F401
    from cronflow.states import TriggerRule  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'cronflow' has no attribute {name!r}")

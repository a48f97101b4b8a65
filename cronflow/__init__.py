"""cronflow: flows of tasks on one server, instead of crontab.

The public API for flow files:

    from cronflow import Flow, Shell, Python, FlowDependency
    from cronflow import SSHCommand, SFTPGet, FileSensor, Email, TriggerFlow, ...  # operators

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
    "Branch": "cronflow.ops.python",
    "ShortCircuit": "cronflow.ops.python",
    "TriggerRule": "cronflow.states",
    "SSHCommand": "cronflow.ops.ssh",
    "SFTPGet": "cronflow.ops.sftp",
    "SFTPPut": "cronflow.ops.sftp",
    "FTPGet": "cronflow.ops.ftp",
    "FTPPut": "cronflow.ops.ftp",
    "Sensor": "cronflow.ops.sensors",
    "FileSensor": "cronflow.ops.sensors",
    "FlowSensor": "cronflow.ops.trigger",
    "TriggerFlow": "cronflow.ops.trigger",
    "Email": "cronflow.ops.mail",
    "Http": "cronflow.ops.http",
    "SkipTask": "cronflow.outcomes",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # for type checkers and editors only
    from cronflow.flow import Flow, FlowDependency, Task  # noqa: F401
    from cronflow.ops.ftp import FTPGet, FTPPut  # noqa: F401
    from cronflow.ops.http import Http  # noqa: F401
    from cronflow.ops.mail import Email  # noqa: F401
    from cronflow.ops.python import Branch, Python, ShortCircuit  # noqa: F401
    from cronflow.ops.sensors import FileSensor, Sensor  # noqa: F401
    from cronflow.ops.sftp import SFTPGet, SFTPPut  # noqa: F401
    from cronflow.ops.shell import Shell  # noqa: F401
    from cronflow.ops.ssh import SSHCommand  # noqa: F401
    from cronflow.ops.trigger import FlowSensor, TriggerFlow  # noqa: F401
    from cronflow.outcomes import SkipTask  # noqa: F401
    from cronflow.states import TriggerRule  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'cronflow' has no attribute {name!r}")

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

if TYPE_CHECKING:  # for type checkers and editors; `X as X` re-exports X (mypy --strict)
    from cronflow.flow import Flow as Flow
    from cronflow.flow import FlowDependency as FlowDependency
    from cronflow.flow import Task as Task
    from cronflow.ops.ftp import FTPGet as FTPGet
    from cronflow.ops.ftp import FTPPut as FTPPut
    from cronflow.ops.http import Http as Http
    from cronflow.ops.mail import Email as Email
    from cronflow.ops.python import Branch as Branch
    from cronflow.ops.python import Python as Python
    from cronflow.ops.python import ShortCircuit as ShortCircuit
    from cronflow.ops.sensors import FileSensor as FileSensor
    from cronflow.ops.sensors import Sensor as Sensor
    from cronflow.ops.sftp import SFTPGet as SFTPGet
    from cronflow.ops.sftp import SFTPPut as SFTPPut
    from cronflow.ops.shell import Shell as Shell
    from cronflow.ops.ssh import SSHCommand as SSHCommand
    from cronflow.ops.trigger import FlowSensor as FlowSensor
    from cronflow.ops.trigger import TriggerFlow as TriggerFlow
    from cronflow.outcomes import SkipTask as SkipTask
    from cronflow.states import TriggerRule as TriggerRule


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'cronflow' has no attribute {name!r}")

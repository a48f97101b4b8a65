"""What file transfers share (SFTP, FTP): globs, temporary names, "nothing matched"."""

from __future__ import annotations

import glob
import logging
import os
import posixpath
from typing import Any

from cronflow.errors import CronflowError, InvalidInputError
from cronflow.flow import Task

log = logging.getLogger("cronflow.transfer")

WILDCARDS = "*?["


class TransferError(CronflowError):
    """Nothing matched a pattern, or a file could not be transferred."""


def has_wildcard(text: str) -> bool:
    return any(c in text for c in WILDCARDS)


def split_remote_pattern(pattern: str) -> tuple[str, str]:
    """(directory, file-name pattern); only the file name may hold wildcards."""
    directory, name = posixpath.split(pattern)
    if has_wildcard(directory):
        raise InvalidInputError(
            f"remote pattern {pattern!r}: only the file name may hold wildcards, not the directory"
        )
    return directory, name


def local_glob(pattern: str) -> list[str]:
    """Regular files matching a local pattern (Python's glob), sorted."""
    return sorted(p for p in glob.glob(os.path.expanduser(pattern)) if os.path.isfile(p))


def part_name(path: str) -> str:
    """`dir/.name.part`: where a file is written before it is renamed to `dir/name`."""
    directory, name = posixpath.split(path)
    return posixpath.join(directory, f".{name}.part")


def nothing_matched(pattern: str, where: str, allow_empty: bool) -> list[str]:
    """The result of a transfer whose pattern matched nothing: [] if allowed, else an error."""
    if allow_empty:
        log.info("nothing matches %s %s", pattern, where)
        return []
    raise TransferError(f"nothing matches {pattern} {where} (allow_empty=True accepts that)")


class Download(Task):
    """Base of FTPGet and SFTPGet: remote files (a path or a glob) into a local directory."""

    def __init__(
        self,
        task_id: str,
        *,
        conn_id: str,
        remote: str,
        local_dir: str,
        allow_empty: bool = False,
        **task_args: Any,
    ) -> None:
        super().__init__(task_id, **task_args)
        self.conn_id, self.remote, self.local_dir = conn_id, remote, local_dir
        self.allow_empty = allow_empty

    def op_spec(self) -> dict[str, Any]:
        return {"conn_id": self.conn_id, "remote": self.remote, "local_dir": self.local_dir}


class Upload(Task):
    """Base of FTPPut and SFTPPut: local files (a path or a glob) into a remote directory."""

    def __init__(
        self,
        task_id: str,
        *,
        conn_id: str,
        local: str,
        remote_dir: str,
        allow_empty: bool = False,
        **task_args: Any,
    ) -> None:
        super().__init__(task_id, **task_args)
        self.conn_id, self.local, self.remote_dir = conn_id, local, remote_dir
        self.allow_empty = allow_empty

    def op_spec(self) -> dict[str, Any]:
        return {"conn_id": self.conn_id, "local": self.local, "remote_dir": self.remote_dir}

"""What file transfers share (SFTP, FTP): globs, temporary names, "nothing matched", and
errors that name the file, the server and what went wrong ("cannot download ... : Permission
denied")."""

from __future__ import annotations

import glob
import logging
import os
import posixpath
from collections.abc import Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from cronflow.errors import CronflowError, InvalidInputError
from cronflow.flow import Task
from cronflow.ops.network import error_words
from cronflow.templates import render

if TYPE_CHECKING:
    from cronflow.connections import Connection

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


class RemoteFiles(Protocol):
    """A logged-in session on a file server (SFTP, FTP): what the transfer loops need of it."""

    def glob(self, pattern: str) -> list[str]:
        """Regular files matching a remote path whose file name may hold wildcards, sorted."""
        ...

    def download(self, remote: str, local: str) -> None: ...

    def upload(self, local: str, partial: str, final: str) -> None:
        """Store `local` as `partial` on the server, then rename it to `final`."""
        ...


class Transfer(Task):
    """Base of the transfer operators: each protocol gives its connection types, its logger
    and a session; the loops below are the same for all."""

    conn_types: tuple[str, ...] = ()
    log = log

    def session(self, conn: Connection) -> AbstractContextManager[RemoteFiles]:
        raise NotImplementedError


class Download(Transfer):
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

    def execute(self, context: Mapping[str, Any]) -> list[str]:
        conn = context["conn"].require(render(self.conn_id, context), self.conn_types)
        pattern = render(self.remote, context)
        target = Path(render(self.local_dir, context)).expanduser()
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TransferError(f"cannot create {target}: {error_words(exc)}") from None
        written = []
        with self.session(conn) as files:
            matches = files.glob(pattern)
            if not matches:
                return nothing_matched(pattern, f"on {conn.describe()}", self.allow_empty)
            for remote in matches:
                final = target / posixpath.basename(remote)
                partial = part_name(str(final))
                try:
                    files.download(remote, partial)
                    os.replace(partial, final)
                except OSError as exc:
                    raise TransferError(
                        f"cannot download {remote} from {conn.describe()} to {partial}: "
                        f"{error_words(exc)}"
                    ) from None
                self.log.info(
                    "got %s:%s -> %s (%s bytes)", conn.host, remote, final, final.stat().st_size
                )
                written.append(str(final))
        return written


class Upload(Transfer):
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

    def execute(self, context: Mapping[str, Any]) -> list[str]:
        conn = context["conn"].require(render(self.conn_id, context), self.conn_types)
        pattern = render(self.local, context)
        remote_dir = render(self.remote_dir, context)
        local_files = local_glob(pattern)
        if not local_files:
            return nothing_matched(pattern, "on this server", self.allow_empty)
        written = []
        with self.session(conn) as files:
            for local in local_files:
                final = posixpath.join(remote_dir, os.path.basename(local))
                try:
                    files.upload(local, part_name(final), final)
                except OSError as exc:
                    raise TransferError(
                        f"cannot upload {local} to {final} on {conn.describe()}: {error_words(exc)}"
                    ) from None
                self.log.info("put %s -> %s:%s", local, conn.host, final)
                written.append(final)
        return written

"""SFTP: download and upload files over an SSH connection, with globs.

    SFTPGet("download", conn_id="station", remote="/data/{{ ds_nodash }}/*.csv", local_dir="/srv/in")
    SFTPPut("publish", conn_id="web", local="/srv/out/{{ ds }}-*.png", remote_dir="/var/www/plots")

Only the file-name part of a remote path may hold wildcards (`*`, `?`, `[...]`); local patterns
follow Python's glob. Nothing is ever seen half-written: a download goes to `.NAME.part` next
to its target and is renamed when complete; an upload goes to `.NAME.part` on the server and is
renamed with OpenSSH's atomic posix-rename. Both return the list of files they wrote (the task's
XCom). A pattern that matches nothing is an error, unless `allow_empty=True`.

Connections, host-key checking and errors are those of cronflow.ops.ssh.
"""

from __future__ import annotations

import contextlib
import logging
import posixpath
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from fnmatch import fnmatchcase
from typing import Any

from cronflow.connections import Connection
from cronflow.ops.ssh import SSH_TYPES, open_client
from cronflow.ops.transfer import (
    Download,
    Upload,
    has_wildcard,
    split_remote_pattern,
)

log = logging.getLogger("cronflow.sftp")


def remote_glob(sftp: Any, pattern: str) -> list[str]:
    """Regular files matching a remote path whose file name may hold wildcards, sorted."""
    directory, name = split_remote_pattern(pattern)
    if not has_wildcard(name):
        try:
            attrs = sftp.stat(pattern)
        except FileNotFoundError:
            return []
        return [pattern] if stat.S_ISREG(attrs.st_mode or 0) else []
    try:
        entries = sftp.listdir_attr(directory or ".")
    except FileNotFoundError:
        return []
    return sorted(
        posixpath.join(directory, e.filename)
        for e in entries
        if fnmatchcase(e.filename, name) and stat.S_ISREG(e.st_mode or 0)
    )


class SFTPFiles:
    """An SFTP session as the transfer loops use it."""

    def __init__(self, sftp: Any) -> None:
        self.sftp = sftp

    def glob(self, pattern: str) -> list[str]:
        return remote_glob(self.sftp, pattern)

    def download(self, remote: str, local: str) -> None:
        self.sftp.get(remote, local)

    def upload(self, local: str, partial: str, final: str) -> None:
        self.sftp.put(local, partial, confirm=True)
        _rename(self.sftp, partial, final)


@contextmanager
def sftp_files(conn: Connection) -> Iterator[SFTPFiles]:
    with open_client(conn) as client, client.open_sftp() as sftp:
        yield SFTPFiles(sftp)


class SFTPGet(Download):
    """Download remote files (a path or a glob) into a local directory."""

    kind = "sftp_get"
    conn_types, log, session = SSH_TYPES, log, staticmethod(sftp_files)


class SFTPPut(Upload):
    """Upload local files (a path or a glob) into a remote directory."""

    kind = "sftp_put"
    conn_types, log, session = SSH_TYPES, log, staticmethod(sftp_files)


def _rename(sftp: Any, source: str, target: str) -> None:
    """Atomic replace where the server has posix-rename (OpenSSH), else delete then rename."""
    try:
        sftp.posix_rename(source, target)
    except OSError:
        with contextlib.suppress(FileNotFoundError):
            sftp.remove(target)
        sftp.rename(source, target)

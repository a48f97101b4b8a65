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
import os
import posixpath
import stat
from collections.abc import Mapping
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from cronflow.ops.ssh import SSH_TYPES, open_client
from cronflow.ops.transfer import (
    Download,
    Upload,
    has_wildcard,
    local_glob,
    nothing_matched,
    part_name,
    split_remote_pattern,
)
from cronflow.templates import render

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


class SFTPGet(Download):
    """Download remote files (a path or a glob) into a local directory."""

    kind = "sftp_get"

    def execute(self, context: Mapping[str, Any]) -> list[str]:
        conn = context["conn"].require(render(self.conn_id, context), SSH_TYPES)
        pattern = render(self.remote, context)
        target = Path(render(self.local_dir, context)).expanduser()
        target.mkdir(parents=True, exist_ok=True)
        written = []
        with open_client(conn) as client, client.open_sftp() as sftp:
            matches = remote_glob(sftp, pattern)
            if not matches:
                return nothing_matched(pattern, f"on {conn.describe()}", self.allow_empty)
            for remote in matches:
                final = target / posixpath.basename(remote)
                partial = part_name(str(final))
                sftp.get(remote, partial)
                os.replace(partial, final)
                log.info(
                    "got %s:%s -> %s (%s bytes)", conn.host, remote, final, final.stat().st_size
                )
                written.append(str(final))
        return written


class SFTPPut(Upload):
    """Upload local files (a path or a glob) into a remote directory."""

    kind = "sftp_put"

    def execute(self, context: Mapping[str, Any]) -> list[str]:
        conn = context["conn"].require(render(self.conn_id, context), SSH_TYPES)
        pattern = render(self.local, context)
        remote_dir = render(self.remote_dir, context)
        files = local_glob(pattern)
        if not files:
            return nothing_matched(pattern, "on this server", self.allow_empty)
        written = []
        with open_client(conn) as client, client.open_sftp() as sftp:
            for local in files:
                final = posixpath.join(remote_dir, os.path.basename(local))
                partial = part_name(final)
                sftp.put(local, partial, confirm=True)
                _rename(sftp, partial, final)
                log.info("put %s -> %s:%s", local, conn.host, final)
                written.append(final)
        return written


def _rename(sftp: Any, source: str, target: str) -> None:
    """Atomic replace where the server has posix-rename (OpenSSH), else delete then rename."""
    try:
        sftp.posix_rename(source, target)
    except OSError:
        with contextlib.suppress(FileNotFoundError):
            sftp.remove(target)
        sftp.rename(source, target)

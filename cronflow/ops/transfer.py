"""What file transfers share (SFTP, FTP): globs, temporary names, "nothing matched"."""

from __future__ import annotations

import glob
import logging
import os
import posixpath

from cronflow.errors import CronflowError, InvalidInputError

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

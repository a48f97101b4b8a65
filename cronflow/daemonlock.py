"""The home's daemon lock and wake-up socket: whether a daemon runs on a home, and how to poke it.

Apart from the daemon so that the commands which only ask (`status`, `top`, `logs -f`) or poke
(`trigger`, `mark`) do not import the daemon, its scheduler and everything under it: about
100 ms of a command's start-up.
"""

from __future__ import annotations

import fcntl
import os
import socket
from hashlib import sha256
from pathlib import Path
from typing import IO

from cronflow.errors import DaemonError


def wakeup_address(home: Path) -> bytes:
    """An abstract unix socket name for a home: no path length limit, no file to clean up."""
    return b"\0cronflow-" + sha256(str(home).encode()).hexdigest()[:32].encode()


def poke(home: Path) -> bool:
    """Tell a running daemon that the store changed (best effort; it re-reads within 5 s anyway)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto(b"!", wakeup_address(home))
        except OSError:
            return False
    return True


def acquire_lock(path: Path) -> IO[str]:
    """Hold the home's lock or raise DaemonError naming the daemon that holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the daemon's life
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        pid = handle.read().strip() or "?"
        handle.close()
        raise DaemonError(
            f"another cronflow daemon (pid {pid}) is already running on {path.parent}"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def running_daemon_pid(home: Path) -> int | None:
    """The pid of the daemon holding the home's lock, or None if no daemon runs."""
    path = home / "daemon.lock"
    if not path.exists():
        return None
    with open(path, encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = handle.read().strip()
            return int(text) if text.isdigit() else -1
        return None

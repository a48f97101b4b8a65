"""Telling "the server cannot be reached now" apart from errors that waiting will not fix.

A station that is offline answers with a refused connection, no answer at all, or a host name
that does not resolve: that is transient, and a sensor counts it as an unsuccessful poke until
its timeout (cronflow.ops.sensors). A refused login, an unknown host key or a bad certificate is
not transient: the task fails at once with that reason. Every client of a server (SSH/SFTP, FTP,
HTTP, SMTP) turns its connection errors into words here, so the reasons read the same everywhere
("connection refused by 127.0.0.1:2222").
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator

from cronflow.errors import CronflowError

_UNREACHABLE_ERRNOS = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN}


class UnreachableError(CronflowError, ConnectionError):
    """A server cannot be reached now (refused, no answer, unknown host name): transient."""


def unreachable_words(exc: BaseException, host: str, port: int, timeout_s: float) -> str | None:
    """What a connection error says if it means "cannot reach host:port now", else None (the
    error is something else: a refused login, a certificate, a protocol error)."""
    for cause in _causes(exc):
        if isinstance(cause, socket.gaierror):
            return f"cannot resolve the host name {host!r}: {cause.strerror or cause}"
        if isinstance(cause, ConnectionRefusedError):
            return f"connection refused by {host}:{port}"
        if isinstance(cause, TimeoutError):
            return f"no answer from {host}:{port} within {timeout_s:g}s"
        if isinstance(cause, OSError) and cause.errno in _UNREACHABLE_ERRNOS:
            return f"{host}:{port} is unreachable: {cause.strerror}"
    return None


def error_words(exc: BaseException) -> str:
    """An error as words for a message that already says what was being done: a certificate
    check's verdict, or an OSError's strerror (no '[Errno N]'), else the error's text."""
    verify = getattr(exc, "verify_message", None)
    if verify:
        return f"certificate verify failed: {verify}"
    strerror = getattr(exc, "strerror", None)
    return str(strerror) if isinstance(exc, OSError) and strerror else str(exc)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The error, what it wraps (urllib's `reason`) and what it was raised from or during: a
    library often reports a timeout as its own error raised while handling it."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException):
            yield reason
        current = current.__cause__ or current.__context__

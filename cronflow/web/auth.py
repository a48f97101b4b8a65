"""Logins, sessions and CSRF tokens of the web view.

Reading needs no login; every POST does (or is refused outright in read-only mode). A login
checks the name and password against the home's web users (cronflow.webusers, scrypt) and
opens a session kept in this process's memory: the browser holds only a random token, in a
cookie that is HttpOnly, SameSite=Strict, and Secure when the page came over TLS. Each session
has its own CSRF token that every form carries; the login form, before any session exists,
carries a token that must equal a cookie of its own (double submit).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.responses import Response

SESSION_COOKIE = "cronflow_session"
LOGIN_COOKIE = "cronflow_login"
SESSION_TTL_S = 8 * 3600
MAX_SESSIONS = 1000  # the oldest go first: memory stays bounded whatever clients do


@dataclass
class Session:
    user: str
    csrf: str
    expires_at: float
    flash: list[str] = field(default_factory=list)


class Sessions:
    """token -> Session, in memory: a restart of the web view logs everyone out."""

    def __init__(self) -> None:
        self._by_token: dict[str, Session] = {}

    def open(self, user: str) -> tuple[str, Session]:
        if len(self._by_token) >= MAX_SESSIONS:
            oldest = min(self._by_token, key=lambda t: self._by_token[t].expires_at)
            del self._by_token[oldest]
        token = secrets.token_urlsafe(32)
        session = Session(user, secrets.token_urlsafe(32), time.time() + SESSION_TTL_S)
        self._by_token[token] = session
        return token, session

    def of(self, request: Request) -> Session | None:
        token = request.cookies.get(SESSION_COOKIE)
        session = self._by_token.get(token) if token else None
        if session is not None and session.expires_at < time.time():
            del self._by_token[token]  # type: ignore[arg-type]
            return None
        return session

    def close(self, request: Request) -> None:
        token = request.cookies.get(SESSION_COOKIE)
        if token:
            self._by_token.pop(token, None)


def is_tls(request: Request) -> bool:
    """Served over TLS: by uvicorn itself, or by a trusted local proxy (X-Forwarded-Proto)."""
    return request.url.scheme == "https"


def set_cookie(response: Response, request: Request, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="strict",
        secure=is_tls(request),
    )


def csrf_ok(expected: str | None, given: str | None) -> bool:
    if not expected or not given:
        return False
    return secrets.compare_digest(expected.encode(), given.encode())


def same_origin(request: Request) -> bool:
    """A POST from another site is refused even before its token is looked at: browsers send
    Origin with every POST; a client that sends none (curl) still needs the token."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    host = request.headers.get("host", "")
    return origin.split("://", 1)[-1] == host

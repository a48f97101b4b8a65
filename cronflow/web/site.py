"""What every page and action shares: the web view's state (backend, sessions, mode) and the
context of the page layout (who is logged in, their CSRF token, messages, the daemon)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from cronflow.web.auth import Session, Sessions
from cronflow.web.backend import Backend, Context


@dataclass
class WebState:
    backend: Backend
    read_only: bool
    sessions: Sessions = field(default_factory=Sessions)


def web(request: Request) -> WebState:
    state: WebState = request.app.state.web
    return state


def session_of(request: Request) -> Session | None:
    return web(request).sessions.of(request)


def common(request: Request, ctx: Context) -> dict[str, Any]:
    """The layout's context: mode, user and CSRF token, messages (shown once), the daemon."""
    state = web(request)
    session = None if state.read_only else state.sessions.of(request)
    flash = []
    if session is not None:
        flash, session.flash = session.flash, []
    return {
        "read_only": state.read_only,
        "user": session.user if session else None,
        "csrf": session.csrf if session else None,
        "flash": flash,
        "daemon_pid": ctx.daemon_pid,
        "path": request.url.path,
        "here": request.url.path + (f"?{request.url.query}" if request.url.query else ""),
    }

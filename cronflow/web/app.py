"""The Starlette application of the web view, and `serve()` that runs it under uvicorn.

Every response carries a Content-Security-Policy that allows scripts, styles and connections
from this site only (no inline script or style anywhere), and headers that keep the pages out
of frames and caches of other sites. Errors the library raises (unknown flow, bad date...)
become a page with their one-line message, escaped like every other text.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cronflow.config import Settings
from cronflow.errors import CronflowError, InvalidInputError, NotFoundError
from cronflow.web import actions, metrics, pages
from cronflow.web.backend import Backend
from cronflow.web.render import page
from cronflow.web.site import WebState

STATIC = Path(__file__).parent / "static"
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
}


class SecurityHeaders:
    """Adds SECURITY_HEADERS to every response, static files and errors included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _error_page(request: Request, status: int, message: str) -> Response:
    state: WebState = request.app.state.web
    session = None if state.read_only else state.sessions.of(request)
    return page(
        "error.html",
        status_code=status,
        read_only=state.read_only,
        user=session.user if session else None,
        csrf=session.csrf if session else None,
        flash=[],
        daemon_pid=None,
        path=request.url.path,
        status=status,
        message=message,
    )


async def _cronflow_error(request: Request, exc: Exception) -> Response:
    status = 404 if isinstance(exc, NotFoundError) else 400
    if not isinstance(exc, (NotFoundError, InvalidInputError)):
        status = 409  # e.g. a run that already exists for that date
    return _error_page(request, status, str(exc))


async def _refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, actions.Refused)
    return _error_page(request, exc.status, str(exc))


async def _login_needed(request: Request, exc: Exception) -> Response:
    from urllib.parse import urlencode

    assert isinstance(exc, actions.LoginNeeded)
    return RedirectResponse("/login?" + urlencode({"next": exc.target}), status_code=303)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _error_page(request, exc.status_code, exc.detail or "error")


def routes() -> list[Route | Mount]:
    flow = "/flows/{flow_id}"
    ti = flow + "/runs/{run_id:int}/tasks/{task_id}"
    return [
        Route("/", pages.flows),
        Route(flow, pages.flow),
        Route(ti, pages.task_instance),
        Route(ti + "/log", pages.task_log),
        Route("/api/runs", pages.run_states),
        Route("/status", pages.status),
        Route("/metrics", metrics.metrics),
        Route("/healthz", metrics.healthz),
        Route("/login", actions.login_page, methods=["GET"]),
        Route("/login", actions.login, methods=["POST"]),
        Route("/logout", actions.logout, methods=["POST"]),
        Route(flow + "/pause", actions.set_paused, methods=["POST"]),
        Route(flow + "/unpause", actions.set_paused, methods=["POST"]),
        Route(flow + "/trigger", actions.trigger_page, methods=["GET"]),
        Route(flow + "/trigger", actions.trigger, methods=["POST"]),
        Route(flow + "/mark", actions.mark_confirm, methods=["GET"]),
        Route(flow + "/mark", actions.mark, methods=["POST"]),
        Route(flow + "/replay", actions.replay_confirm, methods=["GET"]),
        Route(flow + "/replay", actions.replay, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]


def _lifespan(backend: Backend) -> Any:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        backend.close()

    return lifespan


def create_app(settings: Settings, read_only: bool = False) -> Starlette:
    backend = Backend(settings)
    app = Starlette(
        routes=routes(),
        middleware=[Middleware(SecurityHeaders)],
        exception_handlers={
            CronflowError: _cronflow_error,
            actions.Refused: _refused,
            actions.LoginNeeded: _login_needed,
            HTTPException: _http_error,
        },
        lifespan=_lifespan(backend),
    )
    app.state.web = WebState(backend, read_only)
    return app


def serve(
    settings: Settings,
    host: str,
    port: int,
    read_only: bool = False,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
) -> None:
    """Run the web view until interrupted (SIGINT/SIGTERM stop it cleanly)."""
    import uvicorn

    uvicorn.run(
        create_app(settings, read_only),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
        server_header=False,
    )

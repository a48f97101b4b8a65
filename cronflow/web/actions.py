"""What the web view changes (every POST): log in and out, pause, trigger, mark, replay.

Every POST passes one gate first (`checked_form`): refused in read-only mode, from another
origin, without a session, or without that session's CSRF token. Mark and replay show a
confirmation page first that lists what they will touch (the library's plan_mark and
plan_replay), then do exactly what `cronflow mark` and `cronflow replay` do.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from cronflow import control, repair, webusers
from cronflow.audit import Actor
from cronflow.daemonlock import poke
from cronflow.web import auth
from cronflow.web.backend import Context
from cronflow.web.render import page
from cronflow.web.site import common, web

MAX_FORM_BYTES = 16 * 1024


class Refused(Exception):
    """A request the web view will not serve: its status and a message for the page."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class LoginNeeded(Exception):
    """A confirmation page asked for without a session: the login page, then back here."""

    def __init__(self, target: str) -> None:
        super().__init__(target)
        self.target = target


async def read_form(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise Refused(413, "the form is too large")
    return dict(parse_qsl(body.decode(errors="replace"), keep_blank_values=True))


async def checked_form(request: Request) -> tuple[dict[str, str], auth.Session]:
    """The form of a POST that may change something, after every check."""
    state = web(request)
    if state.read_only:
        raise Refused(403, "this web view is read-only: use the cronflow command to act")
    if not auth.same_origin(request):
        raise Refused(403, "refused: the form was not sent from this site")
    session = live_session(request)
    if session is None:
        raise Refused(403, "log in first: every action needs a login")
    form = await read_form(request)
    if not auth.csrf_ok(session.csrf, form.get("csrf")):
        raise Refused(403, "refused: the form's CSRF token is missing or not this session's")
    return form, session


def live_session(request: Request) -> auth.Session | None:
    """The request's session, while its user still exists (a deleted user acts no more)."""
    state = web(request)
    session = state.sessions.of(request)
    if session is not None and session.user not in webusers.load_users(state.backend.settings.home):
        state.sessions.close(request)
        return None
    return session


def local_target(text: str | None, default: str = "/") -> str:
    """Where to go after an action: a path on this site only (no scheme, no //host)."""
    if text and text.startswith("/") and not text.startswith("//") and "\\" not in text:
        return text
    return default


def back(target: str) -> RedirectResponse:
    return RedirectResponse(target, status_code=303)


# --- login -------------------------------------------------------------------------------------
async def login_page(request: Request) -> Response:
    if web(request).read_only:
        raise Refused(404, "this web view is read-only: there is nothing to log in to")
    return _login_form(request, request.query_params.get("next"), None, 200)


def _login_form(request: Request, target: str | None, error: str | None, status: int) -> Response:
    import secrets

    token = secrets.token_urlsafe(32)
    users = webusers.load_users(web(request).backend.settings.home)
    response = page(
        "login.html",
        status_code=status,
        read_only=False,
        user=None,
        csrf=None,
        flash=[],
        daemon_pid=None,
        path="/login",
        login_csrf=token,
        next=local_target(target),
        error=error,
        no_users=not users,
    )
    auth.set_cookie(response, request, auth.LOGIN_COOKIE, token, 3600)
    return response


async def login(request: Request) -> Response:
    state = web(request)
    if state.read_only:
        raise Refused(403, "this web view is read-only: there is nothing to log in to")
    if not auth.same_origin(request):
        raise Refused(403, "refused: the form was not sent from this site")
    form = await read_form(request)
    if not auth.csrf_ok(request.cookies.get(auth.LOGIN_COOKIE), form.get("csrf")):
        raise Refused(403, "refused: the login form's CSRF token is missing or stale; reload it")
    name, password = form.get("user", ""), form.get("password", "")
    home = state.backend.settings.home
    if not await anyio.to_thread.run_sync(webusers.verify, home, name, password):
        return _login_form(request, form.get("next"), "wrong user name or password", 401)
    token, session = state.sessions.open(name)
    session.flash.append(f"logged in as {name}")
    response = back(local_target(form.get("next")))
    auth.set_cookie(response, request, auth.SESSION_COOKIE, token, auth.SESSION_TTL_S)
    response.delete_cookie(auth.LOGIN_COOKIE, path="/")
    return response


async def logout(request: Request) -> Response:
    await checked_form(request)
    web(request).sessions.close(request)
    response = back("/")
    response.delete_cookie(auth.SESSION_COOKIE, path="/")
    return response


# --- flows: pause, trigger -----------------------------------------------------------------------
async def set_paused(request: Request) -> Response:
    form, session = await checked_form(request)
    flow_id = request.path_params["flow_id"]
    paused = request.url.path.endswith("/pause")

    def act(ctx: Context) -> None:
        ctx.cat.get(flow_id)
        ctx.store.set_paused(flow_id, paused, _actor(session))
        poke(ctx.settings.home)

    await web(request).backend.run(act)
    session.flash.append(f"flow {flow_id} {'paused' if paused else 'unpaused'}")
    return back(local_target(form.get("back"), f"/flows/{flow_id}"))


async def trigger_page(request: Request) -> Response:
    flow_id = request.path_params["flow_id"]
    _need_login(request)

    def build(ctx: Context) -> Response:
        spec = ctx.cat.get(flow_id)
        return page("trigger.html", **common(request, ctx), flow_id=flow_id, tz=spec.tz)

    return await web(request).backend.run(build)


async def trigger(request: Request) -> Response:
    form, session = await checked_form(request)
    flow_id = request.path_params["flow_id"]

    def act(ctx: Context) -> list[str]:
        spec = ctx.cat.get(flow_id)
        conf = control.parse_conf(form.get("conf") or None)
        run_id, logical_at = control.trigger_manual(
            ctx.store, spec, form.get("date") or None, ctx.now, conf, _actor(session)
        )
        poke(ctx.settings.home)
        said = [
            f"run {run_id} of {flow_id} for {logical_at.astimezone(spec.tz).isoformat()} queued"
        ]
        if ctx.daemon_pid is None:
            said.append("note: no daemon is running; start `cronflow daemon` to run it")
        return said

    session.flash.extend(await web(request).backend.run(act))
    return back(local_target(form.get("back"), f"/flows/{flow_id}"))


# --- mark and replay: confirm, then act ----------------------------------------------------------
MARK_FIELDS = ("task", "date", "state", "downstream", "back")
REPLAY_FIELDS = ("task", "date", "to", "downstream", "only_failed", "back")


def _actor(session: auth.Session) -> Actor:
    """The audit trail's `who` for an action taken on a page: the web login."""
    return Actor(session.user, "web")


def _need_login(request: Request) -> None:
    state = web(request)
    if state.read_only:
        raise Refused(403, "this web view is read-only: use the cronflow command to act")
    if live_session(request) is None:
        raise LoginNeeded(request.url.path + (f"?{request.url.query}" if request.url.query else ""))


async def mark_confirm(request: Request) -> Response:
    _need_login(request)
    flow_id = request.path_params["flow_id"]
    fields = {k: request.query_params.get(k, "") for k in MARK_FIELDS}

    def build(ctx: Context) -> Response:
        spec = ctx.cat.get(flow_id)
        plan = repair.plan_mark(
            ctx.store,
            spec,
            fields["task"] or None,
            fields["date"],
            fields["state"],
            fields["downstream"] == "1",
        )
        return page(
            "confirm_mark.html",
            **common(request, ctx),
            flow_id=flow_id,
            tz=spec.tz,
            plan=plan,
            fields=fields,
        )

    return await web(request).backend.run(build)


async def mark(request: Request) -> Response:
    form, session = await checked_form(request)
    flow_id = request.path_params["flow_id"]

    def act(ctx: Context) -> str:
        spec = ctx.cat.get(flow_id)
        result = repair.mark(
            ctx.store,
            spec,
            form.get("task") or None,
            form.get("date", ""),
            form.get("state", ""),
            form.get("downstream") == "1",
            ctx.now,
            _actor(session),
        )
        poke(ctx.settings.home)
        what = ", ".join(result.task_ids) if form.get("task") else "every task"
        return (
            f"marked {what} {form.get('state')} ({result.changed} changed); "
            f"run: {result.run['state']}"
        )

    session.flash.append(await web(request).backend.run(act))
    return back(local_target(form.get("back"), f"/flows/{flow_id}"))


async def replay_confirm(request: Request) -> Response:
    _need_login(request)
    flow_id = request.path_params["flow_id"]
    fields = {k: request.query_params.get(k, "") for k in REPLAY_FIELDS}

    def build(ctx: Context) -> Response:
        spec = ctx.cat.get(flow_id)
        plan = _plan_replay(ctx, spec, fields)
        return page(
            "confirm_replay.html",
            **common(request, ctx),
            flow_id=flow_id,
            tz=spec.tz,
            plan=plan,
            fields=fields,
        )

    return await web(request).backend.run(build)


def _plan_replay(ctx: Context, spec: Any, fields: dict[str, str]) -> repair.ReplayPlan:
    return repair.plan_replay(
        ctx.store,
        spec,
        fields["date"],
        fields["to"] or None,
        [fields["task"]] if fields["task"] else [],
        downstream=fields["downstream"] == "1",
        only_failed=fields["only_failed"] == "1",
    )


async def replay(request: Request) -> Response:
    form, session = await checked_form(request)
    flow_id = request.path_params["flow_id"]
    fields = {k: form.get(k, "") for k in REPLAY_FIELDS}

    def act(ctx: Context) -> str:
        spec = ctx.cat.get(flow_id)
        plan = _plan_replay(ctx, spec, fields)
        if not plan.count:
            return "nothing to replay: no task instance matches"
        cleared = repair.replay(ctx.store, plan, ctx.now, _actor(session))
        poke(ctx.settings.home)
        return f"cleared {cleared} task instance(s) in {len(plan.runs)} run(s) of {flow_id}"

    session.flash.append(await web(request).backend.run(act))
    return back(local_target(fields["back"], f"/flows/{flow_id}"))

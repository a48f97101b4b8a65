"""The pages (GET): flows, a flow and its grid, a task instance and its log, status.

Each handler asks the library for exactly what its page shows (bounded, indexed: a page of the
grid, the tail of a log) and renders it on the server. The live parts fetch only what changes:
the states of the unfinished runs a page shows, and a running try's log from the last offset.
"""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from cronflow import attempts, monitoring, overview
from cronflow.reasons import Explainer
from cronflow.states import RunState, TaskState
from cronflow.web.backend import Context
from cronflow.web.graph import layout
from cronflow.web.render import page
from cronflow.web.site import common, web

GRID_RUNS = 25  # runs per page of the grid
LOG_TAIL = 64 * 1024  # a page shows at most the log's last 64 KiB; the rest is a link away
LOG_CHUNK = 256 * 1024  # a live log fetch returns at most this much
MAX_POLLED_RUNS = 200


async def flows(request: Request) -> Response:
    def build(ctx: Context) -> Response:
        rows = overview.flow_rows(ctx.store, ctx.cat, ctx.now, recent_counts=False)
        return page(
            "flows.html",
            **common(request, ctx),
            rows=rows,
            squares=overview.recent_run_squares(ctx.store),
            zones={r["flow_id"]: ctx.cat.timezone(r["flow_id"]) for r in rows if r["flow_id"]},
        )

    return await web(request).backend.run(build)


async def flow(request: Request) -> Response:
    flow_id = request.path_params["flow_id"]
    query = request.query_params
    states = [s for s in query.getlist("state") if s]
    since = query.get("since") or None
    before = query.get("before") or None

    def build(ctx: Context) -> Response:
        spec = ctx.cat.get(flow_id)
        detail = overview.flow_detail(ctx.store, ctx.cat, spec, ctx.now, 1)
        grid = overview.run_grid(ctx.store, spec, states, since, before, GRID_RUNS)
        latest = detail["runs"][-1] if detail["runs"] else None
        return page(
            "flow.html",
            **common(request, ctx),
            flow=detail,
            tz=spec.tz,
            graph=layout(detail["tasks"], latest["task_states"] if latest else {}),
            latest=latest,
            grid=grid,
            filters={"state": states, "since": since or "", "before": before},
            run_states=[s.value for s in RunState],
        )

    return await web(request).backend.run(build)


async def task_instance(request: Request) -> Response:
    flow_id, run_id, task_id = _ti_key(request)
    try_text = request.query_params.get("try")

    def build(ctx: Context) -> Response:
        spec, run, ti = _find_ti(ctx, flow_id, run_id, task_id)
        try_number = _try_number(try_text)
        attempt = attempts.find_attempt(
            ctx.settings, ctx.store, spec, task_id, run["logical_date"], try_number
        )
        size = attempts.log_size(attempt)
        start = max(0, size - LOG_TAIL)
        text, end = attempts.read_attempt_from(attempt, start, LOG_TAIL)
        why: list[str] = []
        if not TaskState(ti["state"]).is_finished:
            explainer = Explainer(
                ctx.settings, ctx.store, ctx.cat, spec, ctx.now, ctx.daemon_pid is not None
            )
            why = explainer.explain(run["logical_date"], task_id)
        return page(
            "task.html",
            **common(request, ctx),
            flow_id=flow_id,
            run=run,
            ti=ti,
            tz=spec.tz,
            tries=attempts.tries(ctx.settings, spec, ti),
            shown_try=attempt.try_number,
            log_text=text.decode(errors="replace"),
            log_start=start,
            log_end=end,
            live=not TaskState(ti["state"]).is_finished and attempt.try_number == ti["try_number"],
            why=why,
            has_downstream=bool(spec.downstream.get(task_id)),
        )

    return await web(request).backend.run(build)


async def task_log(request: Request) -> Response:
    """A try's log from an offset, as bytes; headers say where to go on from and whether the
    try has ended (then the page reloads to show its final state)."""
    flow_id, run_id, task_id = _ti_key(request)
    try_number = _try_number(request.query_params.get("try"))
    offset = _int(request.query_params.get("offset", "0"), "offset")

    def build(ctx: Context) -> Response:
        spec, run, ti = _find_ti(ctx, flow_id, run_id, task_id)
        attempt = attempts.find_attempt(
            ctx.settings, ctx.store, spec, task_id, run["logical_date"], try_number
        )
        data, end = attempts.read_attempt_from(attempt, offset, LOG_CHUNK)
        active = TaskState(ti["state"]) in (TaskState.RUNNING, TaskState.QUEUED)
        current = attempt.try_number == ti["try_number"]
        done = not (current and active) and end >= attempts.log_size(attempt)
        return Response(
            data,
            media_type="application/octet-stream",
            headers={
                "X-Next-Offset": str(end),
                "X-Done": "1" if done else "0",
                "X-State": ti["state"],
                "X-Try": str(ti["try_number"]),
                "Cache-Control": "no-store",
            },
        )

    return await web(request).backend.run(build)


async def run_states(request: Request) -> Response:
    """{run id: {state, tasks: {task: state}}} for the unfinished runs a page shows."""
    ids = []
    for part in request.query_params.get("ids", "").split(",")[:MAX_POLLED_RUNS]:
        if part.strip():
            ids.append(_int(part, "ids"))

    def build(ctx: Context) -> Response:
        found = overview.run_states(ctx.store, ids)
        return JSONResponse(found, headers={"Cache-Control": "no-store"})

    return await web(request).backend.run(build)


async def status(request: Request) -> Response:
    def build(ctx: Context) -> Response:
        live = overview.live_tasks(ctx.store, ctx.now, 20)
        figures = monitoring.figures(ctx.settings, ctx.store, ctx.cat, ctx.daemon_pid, ctx.now)
        return page(
            "status.html",
            **common(request, ctx),
            health=figures.daemon,
            live=live,
            pools=figures.pools,
            zones={f: ctx.cat.timezone(f) for f in ctx.cat.rows},
            utc=ZoneInfo("UTC"),
            broken=ctx.cat.errors,
        )

    return await web(request).backend.run(build)


# --- helpers ----------------------------------------------------------------------------------
def _ti_key(request: Request) -> tuple[str, int, str]:
    params = request.path_params
    return params["flow_id"], params["run_id"], params["task_id"]


def _find_ti(ctx: Context, flow_id: str, run_id: int, task_id: str) -> tuple[Any, Any, Any]:
    """The flow, the run and the task instance of a URL, each checked against the store: a
    log path is built only from ids the store knows, never from the URL's text."""
    from cronflow.errors import NotFoundError

    spec = ctx.cat.get(flow_id)
    run = ctx.store.run(run_id)
    if run["flow_id"] != flow_id:
        raise NotFoundError(f"flow '{flow_id}' has no run with id {run_id}")
    ti = ctx.store.ti(run_id, task_id)
    if ti is None:
        attempts.check_mapped(ctx.store, spec, run, task_id)  # names its instances
        raise NotFoundError(f"run {run_id} of '{flow_id}' has no task '{task_id}'")
    return spec, run, ti


def _try_number(text: str | None) -> int | None:
    return None if not text else _int(text, "try")


def _int(text: str, name: str) -> int:
    from cronflow.errors import InvalidInputError

    try:
        value = int(text)
    except ValueError:
        raise InvalidInputError(f"bad {name} '{text}': expected a whole number") from None
    if value < 0:
        raise InvalidInputError(f"bad {name} '{text}': expected a whole number")
    return value

"""HTTP: one request whose response status must be the expected one (urllib).

    Http("notify", url="https://api.example.com/ready/{{ ds }}", method="POST", json={"day": "{{ ds }}"})
    Http("ping", conn_id="portal", endpoint="/health", expected_status=[200, 204])

With `conn_id`, the URL is the connection's base (`https://user:pass@host:8443/api`) plus
`endpoint`, and its login and password are sent as basic auth. Certificates are checked (system
CAs or the connection's `ca_file`). The status decides success: any status outside
`expected_status` fails the task, with the start of the response body in the message. With
`response_to_xcom=True` the body (parsed when it is JSON) becomes the task's XCom.
"""

from __future__ import annotations

import base64
import json as jsonlib
import logging
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from typing import Any

from cronflow.connections import Connection, tls_context
from cronflow.errors import CronflowError
from cronflow.flow import Task
from cronflow.ops.network import UnreachableError, error_words, unreachable_words
from cronflow.templates import render
from cronflow.timeparse import parse_duration

log = logging.getLogger("cronflow.http")

HTTP_TYPES = ("http", "https")
PREVIEW_BYTES = 300


class HttpError(CronflowError):
    """The server could not be reached or answered with an unexpected status."""


def base_url(conn: Connection) -> str:
    port = f":{conn.port}" if conn.port else ""
    return f"{conn.conn_type}://{conn.host}{port}{conn.extra.get('path', '')}"


def request(
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    conn: Connection | None = None,
    timeout_s: float = 60.0,
) -> tuple[int, str, bytes]:
    """(status, reason, body) of one request; UnreachableError when the server cannot be
    reached now, HttpError when nothing came back for another reason."""
    all_headers = dict(headers or {})
    if conn is not None and conn.login:
        token = base64.b64encode(f"{conn.login}:{conn.password or ''}".encode()).decode()
        all_headers.setdefault("Authorization", f"Basic {token}")
    req = urllib.request.Request(url, data=body, headers=all_headers, method=method)
    context = conn.tls_context() if conn is not None else tls_context(None)
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context))
    try:
        with opener.open(req, timeout=timeout_s) as response:
            return response.status, response.reason, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, str(exc.reason), exc.read()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        words = unreachable_words(exc, *_host_and_port(url), timeout_s)
        if words is not None:
            raise UnreachableError(f"{method} {url}: {words}") from None
        reason = getattr(exc, "reason", exc)
        raise HttpError(f"{method} {url}: cannot reach the server: {error_words(reason)}") from None


def _host_and_port(url: str) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port
    except ValueError:  # not a number: the request failed on that already
        port = None
    return parts.hostname or "", port or (443 if parts.scheme == "https" else 80)


class Http(Task):
    """Send one HTTP request and check its status."""

    kind = "http"

    def __init__(
        self,
        task_id: str,
        url: str | None = None,
        *,
        conn_id: str | None = None,
        endpoint: str = "",
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
        data: str | None = None,
        json: Any = None,
        expected_status: int | Iterable[int] = 200,
        request_timeout: float | str = 60.0,
        response_to_xcom: bool = False,
        **task_args: Any,
    ) -> None:
        super().__init__(task_id, **task_args)
        if (url is None) == (conn_id is None):  # reported with the other bad options by spec()
            self.bad_options.append("give either url or conn_id (+ endpoint)")
        if data is not None and json is not None:
            self.bad_options.append("give data or json, not both")
        self.url, self.conn_id, self.endpoint = url, conn_id, endpoint
        self.method = method.upper()
        self.headers = {str(k): str(v) for k, v in (headers or {}).items()}
        self.data, self.json = data, json
        statuses = [expected_status] if isinstance(expected_status, int) else expected_status
        self.expected_status = sorted(int(s) for s in statuses)
        try:
            self.request_timeout_s = parse_duration(request_timeout, "request_timeout")
        except CronflowError as exc:
            self.bad_options.append(str(exc))
            self.request_timeout_s = 60.0
        self.response_to_xcom = response_to_xcom

    def op_spec(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "url": self.url,
            "conn_id": self.conn_id,
            "endpoint": self.endpoint,
            "expected_status": self.expected_status,
        }

    def execute(self, context: Mapping[str, Any]) -> Any:
        conn = None
        if self.conn_id:
            conn = context["conn"].require(render(self.conn_id, context), HTTP_TYPES)
            url = base_url(conn) + render(self.endpoint, context)
        else:
            url = render(self.url or "", context)
        headers = {k: render(v, context) for k, v in self.headers.items()}
        body = None
        if self.json is not None:
            body = jsonlib.dumps(_render_json(self.json, context)).encode()
            headers.setdefault("Content-Type", "application/json")
        elif self.data is not None:
            body = render(self.data, context).encode()
        status, reason, content = request(
            self.method,
            url,
            headers=headers,
            body=body,
            conn=conn,
            timeout_s=self.request_timeout_s,
        )
        log.info("%s %s -> %s %s (%s bytes)", self.method, url, status, reason, len(content))
        if status not in self.expected_status:
            preview = content[:PREVIEW_BYTES].decode(errors="replace")
            expected = ", ".join(map(str, self.expected_status))
            raise HttpError(
                f"{self.method} {url} returned {status} {reason}, expected {expected}; "
                f"the body starts with: {preview!r}"
            )
        if not self.response_to_xcom:
            return None
        text = content.decode(errors="replace")
        try:
            return jsonlib.loads(text)
        except ValueError:
            return text


def _render_json(value: Any, context: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        return render(value, context)
    if isinstance(value, dict):
        return {k: _render_json(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [_render_json(v, context) for v in value]
    return value


def check(conn: Connection) -> str:
    """`cronflow conn test` for http:// and https://: a GET of the base URL."""
    url = base_url(conn)
    status, reason, _ = request("GET", url, conn=conn, timeout_s=30.0)
    return f"GET {url} -> {status} {reason}"

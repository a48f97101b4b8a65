"""Helpers for the web view's tests: the real `cronflow web` as a process on a free port, and a
small HTTP client with its own cookies that never follows redirects (tests look at them)."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import ssl
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from conftest import wait_for
from servers import free_port


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


class WebProcess:
    """`python -m cronflow web` on 127.0.0.1:<free port> for a home, until stop()."""

    def __init__(self, home: Path, *extra: str, tls: Any = None) -> None:
        self.home, self.port, self.tls = home, free_port(), tls
        args = [sys.executable, "-m", "cronflow", "web", "--port", str(self.port), *extra]
        if tls is not None:
            args += ["--tls-cert", str(tls.cert), "--tls-key", str(tls.key)]
        self.log_path = home.parent / f"web-{self.port}.out"
        env = {**os.environ, "CRONFLOW_HOME": str(home)}
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
        wait_for(self._answers, what=f"the web view on port {self.port}")

    @property
    def base(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def _answers(self) -> bool:
        assert self.proc.poll() is None, self.log_path.read_text()
        try:
            return self.client().get("/healthz").status == 200
        except OSError:
            return False

    def client(self) -> Client:
        return Client(self.port, self.tls is not None)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class Client:
    port: int
    tls: bool = False
    cookies: dict[str, str] = field(default_factory=dict)
    set_cookie_lines: list[str] = field(default_factory=list)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        if self.tls:
            context = ssl.create_default_context()
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                "127.0.0.1", self.port, timeout=30, context=context
            )
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        sent = dict(headers or {})
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        try:
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            reply = Reply(response.status, response.headers, response.read())
        finally:
            conn.close()
        for line in reply.headers.get_all("set-cookie") or []:
            self.set_cookie_lines.append(line)
            name, _, rest = line.partition("=")
            value = rest.split(";", 1)[0].strip('"')
            if "max-age=0" in line.lower() or "expires=thu, 01 jan 1970" in line.lower():
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        return reply

    def get(self, path: str) -> Reply:
        return self.request("GET", path)

    def post(self, path: str, form: dict[str, str], origin: str | None = "self") -> Reply:
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if origin == "self":
            headers["Origin"] = f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"
        elif origin is not None:
            headers["Origin"] = origin
        return self.request("POST", path, urlencode(form).encode(), headers)

    def login(self, user: str, password: str) -> Reply:
        page = self.get("/login")
        assert page.status == 200, page.text
        return self.post(
            "/login",
            {"csrf": form_csrf(page.text), "user": user, "password": password, "next": "/"},
        )


def form_csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def add_user(home: Path, name: str, password: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cronflow", "web-user", "add", name, "--password-stdin"],
        input=password + "\n",
        capture_output=True,
        text=True,
        env={**os.environ, "CRONFLOW_HOME": str(home)},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr

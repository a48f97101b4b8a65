"""The web view over real HTTP: a `cronflow web` process on a temp home, asked by a client
with its own cookies. Security rules first (login, CSRF, origin, escaping, traversal, secrets,
headers, read-only), then what each page and endpoint answers."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from clikit import DAILY, invoke, ok, rows, set_tis, store
from webkit import Client, WebProcess, add_user, form_csrf

PASSWORD = "correct horse battery"
SECRET_VAR = "s3cret-variable-value"
SECRET_PW = "s3cret-connection-pw"

HTML_DOC = """
from cronflow import Flow, Shell
with Flow("htmldoc", schedule=None, doc="<script>alert('doc')</script> & <b>bold</b>"):
    Shell("t", "true")
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebProcess]:
    home = tmp_path_factory.mktemp("web") / "home"
    (home / "flows").mkdir(parents=True)
    (home / "cronflow.toml").write_text("[pools]\nstation = 1\n")
    (home / "flows" / "daily.py").write_text(DAILY)
    (home / "flows" / "htmldoc.py").write_text(HTML_DOC)
    (home / "flows" / "broken.py").write_text(
        "raise RuntimeError('<img src=x onerror=alert(1)>')\n"
    )
    ok(home, "trigger", "daily", "--date", "2024-03-05")
    ok(home, "var", "set", "token", SECRET_VAR, "--secret")
    ok(home, "conn", "add", "station", f"sftp://meteo:{SECRET_PW}@127.0.0.1:22")
    add_user(home, "alice", PASSWORD)
    add_user(home, "bob", PASSWORD + "!")
    process = WebProcess(home)
    yield process
    process.stop()


def logged_in(site: WebProcess, user: str = "alice") -> Client:
    client = site.client()
    reply = client.login(user, PASSWORD if user == "alice" else PASSWORD + "!")
    assert reply.status == 303, reply.text
    return client


def csrf_of(client: Client) -> str:
    return form_csrf(client.get("/flows/daily").text)


def paused(site: WebProcess, flow_id: str = "daily") -> bool:
    return any(r["flow_id"] == flow_id and r["paused"] for r in store(site.home).flow_states())


# --- logins and every POST's gate ---------------------------------------------------------------
def test_post_without_login_is_refused_and_changes_nothing(site):
    reply = site.client().post("/flows/daily/pause", {"csrf": "anything"})
    assert reply.status == 403
    assert "log in first" in reply.text
    assert not paused(site)


def test_post_without_csrf_token_is_refused(site):
    client = logged_in(site)
    assert client.post("/flows/daily/pause", {}).status == 403
    assert client.post("/flows/daily/pause", {"csrf": ""}).status == 403
    assert not paused(site)


def test_post_with_another_sessions_token_is_refused(site):
    alice, bob = logged_in(site, "alice"), logged_in(site, "bob")
    reply = alice.post("/flows/daily/pause", {"csrf": csrf_of(bob)})
    assert reply.status == 403 and "CSRF" in reply.text
    assert not paused(site)


def test_post_from_another_origin_is_refused(site):
    client = logged_in(site)
    reply = client.post(
        "/flows/daily/pause", {"csrf": csrf_of(client)}, origin="https://evil.example"
    )
    assert reply.status == 403
    assert not paused(site)


def test_pause_and_unpause_with_login_and_token(site):
    client = logged_in(site)
    token = csrf_of(client)
    reply = client.post("/flows/daily/pause", {"csrf": token, "back": "/flows/daily"})
    assert reply.status == 303 and reply.header("location") == "/flows/daily"
    assert paused(site)
    page = client.get("/flows/daily").text
    assert "flow daily paused" in page  # the message, shown once
    assert "flow daily paused" not in client.get("/flows/daily").text
    assert client.post("/flows/daily/unpause", {"csrf": token}).status == 303
    assert not paused(site)


def test_login_needs_its_own_csrf_token_and_the_right_password(site):
    client = site.client()
    token = form_csrf(client.get("/login").text)
    assert client.post("/login", {"user": "alice", "password": PASSWORD}).status == 403
    wrong = client.post("/login", {"csrf": token, "user": "alice", "password": "nope-nope"})
    assert wrong.status == 401 and "wrong user name or password" in wrong.text
    token = form_csrf(wrong.text)
    unknown = client.post("/login", {"csrf": token, "user": "mallory", "password": PASSWORD})
    assert unknown.status == 401
    assert "cronflow_session" not in client.cookies


def test_session_cookie_is_httponly_strict_and_not_secure_over_plain_http(site):
    client = logged_in(site)
    line = next(x for x in client.set_cookie_lines if x.startswith("cronflow_session="))
    flags = [part.strip().lower() for part in line.split(";")]
    assert "httponly" in flags and "samesite=strict" in flags
    assert "secure" not in flags


def test_session_cookie_is_secure_over_tls(tmp_path, tls_cert):
    home = tmp_path / "home"
    (home / "flows").mkdir(parents=True)
    (home / "cronflow.toml").write_text("")
    add_user(home, "alice", PASSWORD)
    process = WebProcess(home, tls=tls_cert)
    try:
        client = process.client()
        assert client.login("alice", PASSWORD).status == 303
        line = next(x for x in client.set_cookie_lines if x.startswith("cronflow_session="))
        flags = [part.strip().lower() for part in line.split(";")]
        assert {"secure", "httponly", "samesite=strict"} <= set(flags)
    finally:
        process.stop()


def test_logout_ends_the_session(site):
    client = logged_in(site)
    token = csrf_of(client)
    session = client.cookies["cronflow_session"]
    assert client.post("/logout", {"csrf": token}).status == 303
    client.cookies["cronflow_session"] = session  # a stolen cookie is worth nothing now
    assert client.post("/flows/daily/pause", {"csrf": token}).status == 403
    assert not paused(site)


def test_a_deleted_user_can_no_longer_act(site):
    add_user(site.home, "carol", PASSWORD)
    client = site.client()
    assert client.login("carol", PASSWORD).status == 303
    token = csrf_of(client)
    ok(site.home, "web-user", "delete", "carol")
    assert client.post("/flows/daily/pause", {"csrf": token}).status == 403


def test_confirmation_pages_ask_for_a_login_first(site):
    reply = site.client().get("/flows/daily/mark?task=a&date=2024-03-05&state=failed")
    assert reply.status == 303
    assert reply.header("location").startswith("/login?next=%2Fflows%2Fdaily%2Fmark")


# --- escaping, traversal, secrets, headers --------------------------------------------------------
def test_html_in_a_flow_id_or_a_task_id_is_escaped(site):
    evil = "%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E"
    for path in (f"/flows/{evil}", f"/flows/daily/runs/1/tasks/{evil}", f"/flows/{evil}/mark"):
        reply = logged_in(site).get(path)
        assert reply.status == 404, path
        assert "<img" not in reply.text
        assert "&lt;img src=x onerror=alert(1)&gt;" in reply.text


def test_html_in_a_doc_and_in_a_broken_files_error_is_escaped(site):
    flow = site.client().get("/flows/htmldoc").text
    assert "<script>alert('doc')" not in flow and "<b>bold</b>" not in flow
    assert "&lt;script&gt;alert(&#39;doc&#39;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in flow
    flows = site.client().get("/").text
    assert "<img src=x" not in flows and "&lt;img src=x onerror=alert(1)&gt;" in flows


def test_a_path_traversal_in_a_log_url_reads_nothing(site):
    secret_file = site.home / "cronflow.toml"
    for path in (
        "/flows/daily/runs/1/tasks/..%2F..%2F..%2Fcronflow.toml/log",
        "/flows/..%2F..%2Fcronflow.toml/runs/1/tasks/a/log",
        "/flows/daily/runs/1/tasks/a/log?try=..%2F..%2Fcronflow.toml",
        "/flows/daily/runs/1/tasks/../../../../cronflow.toml/log",
        "/static/..%2F..%2F..%2Fcronflow.toml",
        "/static/../../cronflow.toml",
    ):
        reply = site.client().get(path)
        assert reply.status in (400, 404), (path, reply.status)
        assert b"pools" not in reply.body and secret_file.read_bytes() not in reply.body


def test_no_secret_is_ever_rendered(site):
    client = logged_in(site)
    pages = ["/", "/flows/daily", "/flows/htmldoc", "/status", "/metrics", "/healthz", "/login"]
    pages += ["/flows/daily/runs/1/tasks/a", "/flows/daily/trigger"]
    for path in pages:
        body = client.get(path).text
        assert SECRET_VAR not in body and SECRET_PW not in body, path


def test_every_page_has_a_strict_csp_and_no_inline_script_or_style(site):
    client = logged_in(site)
    for path in (
        "/",
        "/flows/daily",
        "/flows/daily/runs/1/tasks/a",
        "/status",
        "/login",
        "/flows/daily/trigger",
        "/flows/nope",
    ):
        reply = client.get(path)
        csp = reply.header("content-security-policy")
        assert csp and "script-src 'self'" in csp and "unsafe-inline" not in csp, path
        assert "frame-ancestors 'none'" in csp
        assert reply.header("x-content-type-options") == "nosniff"
        html = reply.text
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), path  # no inline script
        assert not re.search(r"<[^>]*\son[a-z]+\s*=", html), path  # no inline handlers
        assert not re.search(r"<[^>]*\sstyle\s*=", html), path  # no inline styles either
        assert "<style" not in html, path


def test_listens_on_loopback_by_default(site):
    out = subprocess.run(
        [sys.executable, "-m", "cronflow", "web", "--help"], capture_output=True, text=True
    ).stdout
    assert "127.0.0.1" in out
    log = site.log_path.read_text()
    assert f"http://127.0.0.1:{site.port}/" in log


# --- read-only mode -------------------------------------------------------------------------------
def test_read_only_mode_has_no_login_and_refuses_every_post(tmp_path):
    home = tmp_path / "home"
    (home / "flows").mkdir(parents=True)
    (home / "cronflow.toml").write_text("")
    (home / "flows" / "daily.py").write_text(DAILY)
    add_user(home, "alice", PASSWORD)
    process = WebProcess(home, "--read-only")
    try:
        client = process.client()
        flows = client.get("/")
        assert flows.status == 200 and "read-only" in flows.text
        assert "log in" not in flows.text and 'name="csrf"' not in flows.text
        assert client.get("/login").status == 404
        for path in ("/login", "/flows/daily/pause", "/flows/daily/trigger"):
            assert client.post(path, {"user": "alice", "password": PASSWORD}).status == 403
        assert client.get("/flows/daily/mark?date=2024-03-05&state=failed").status == 403
        assert not any(r["paused"] for r in store(home).flow_states())
    finally:
        process.stop()


# --- pages and endpoints ----------------------------------------------------------------------
def test_flows_page_lists_broken_files_first_then_flows(site):
    html = site.client().get("/").text
    assert html.index("BROKEN") < html.index('id="flow-daily"') < html.index('id="flow-htmldoc"')
    row = html[html.index('id="flow-daily"') :].split("</tr>")[0]
    assert "at 02:30" in row  # the schedule in words
    assert 'class="state s-queued"' in row and ">queued<" in row


def test_flow_page_filters_the_grid_by_state_and_date(site):
    home = site.home
    for day in ("2024-03-06", "2024-03-07"):
        ok(home, "trigger", "daily", "--date", day)
    run_ids = {r["logical_date"][:10]: r["run_id"] for r in store(home).runs_of_flow("daily")}
    set_tis(home, run_ids["2024-03-06"], a="success", b="success", c="success", d="success")
    client = site.client()
    everything = client.get("/flows/daily").text
    assert "03-05" in everything and "03-06" in everything and "03-07" in everything
    done = client.get("/flows/daily?state=success").text
    assert "03-06" in done and "03-05" not in done.split('id="grid"')[1]
    recent = client.get("/flows/daily?since=2024-03-07").text.split('id="grid"')[1]
    assert "03-07" in recent and "03-06" not in recent
    bad = client.get("/flows/daily?state=bogus")
    assert bad.status == 400 and "bad run state &#39;bogus&#39;" in bad.text


def test_trigger_with_date_and_conf(site):
    client = logged_in(site)
    token = form_csrf(client.get("/flows/daily/trigger").text)
    reply = client.post(
        "/flows/daily/trigger", {"csrf": token, "date": "2024-04-01", "conf": '{"k": 1}'}
    )
    assert reply.status == 303
    run = next(
        r
        for r in store(site.home).runs_of_flow("daily")
        if r["logical_date"].startswith("2024-04-01")
    )
    assert run["conf"] == '{"k": 1}' and run["run_type"] == "manual"
    bad = client.post("/flows/daily/trigger", {"csrf": token, "conf": "[1]"})
    assert bad.status == 400 and "--conf must be a JSON object" in bad.text


def test_mark_confirmation_lists_what_it_touches_then_marks(site):
    home = site.home
    ok(home, "trigger", "daily", "--date", "2024-05-01")
    run_id = next(
        r["run_id"]
        for r in store(home).runs_of_flow("daily")
        if r["logical_date"].startswith("2024-05-01")
    )
    client = logged_in(site)
    date = store(home).run(run_id)["logical_date"]
    page = client.get(
        f"/flows/daily/mark?task=b&date={date.replace('+', '%2B')}&state=failed&downstream=1"
    )
    assert page.status == 200
    touched = re.findall(r"<tr><td>(\w)</td>", page.text)
    assert touched == ["b", "c"]  # b and its downstream task, nothing else
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', page.text))
    assert client.post("/flows/daily/mark", fields).status == 303
    states = {t["task_id"]: t["state"] for t in store(home).tis_of_runs([run_id])}
    assert states == {"a": "none", "b": "failed", "c": "failed", "d": "none"}


def test_replay_confirmation_then_clear_only_failed(site):
    home = site.home
    ok(home, "trigger", "daily", "--date", "2024-06-01")
    run_id = next(
        r["run_id"]
        for r in store(home).runs_of_flow("daily")
        if r["logical_date"].startswith("2024-06-01")
    )
    set_tis(home, run_id, a="success", b="failed", c="upstream_failed", d="success")
    client = logged_in(site)
    page = client.get("/flows/daily/replay?date=2024-06-01&only_failed=1")
    assert re.findall(r"<td>2024-06-01 [\d:]+</td><td>(\w)</td>", page.text) == ["b", "c"]
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', page.text))
    assert client.post("/flows/daily/replay", fields).status == 303
    states = {t["task_id"]: t["state"] for t in store(home).tis_of_runs([run_id])}
    assert states == {"a": "success", "b": "none", "c": "none", "d": "success"}
    assert store(home).run(run_id)["state"] == "queued"


def test_actions_on_pages_are_audited_under_the_web_login(site):
    """A change made on a page is in `cronflow audit` as the login who made it, via the web."""
    client = logged_in(site, "bob")
    token = csrf_of(client)
    assert client.post("/flows/htmldoc/pause", {"csrf": token}).status == 303
    assert client.post("/flows/htmldoc/unpause", {"csrf": token}).status == 303
    reply = client.post("/flows/htmldoc/trigger", {"csrf": token, "date": "2024-07-01"})
    assert reply.status == 303
    page = client.get("/flows/htmldoc/mark?task=t&date=2024-07-01&state=success")
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', page.text))
    assert client.post("/flows/htmldoc/mark", fields).status == 303
    page = client.get("/flows/htmldoc/replay?date=2024-07-01&task=t")
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', page.text))
    assert client.post("/flows/htmldoc/replay", fields).status == 303
    entries = rows(site.home, "audit", "--flow", "htmldoc")
    assert [(e["action"], e["user"], e["face"]) for e in reversed(entries)] == [
        ("pause", "bob", "web"),
        ("unpause", "bob", "web"),
        ("trigger", "bob", "web"),
        ("mark", "bob", "web"),
        ("replay", "bob", "web"),
    ]


def test_run_states_endpoint_answers_only_the_runs_asked(site):
    ids = [r["run_id"] for r in store(site.home).runs_of_flow("daily")][:2]
    found = site.client().get("/api/runs?ids=" + ",".join(map(str, ids)) + ",999999").json()
    assert sorted(found) == sorted(map(str, ids))
    assert set(found[str(ids[0])]["tasks"]) == {"a", "b", "c", "d"}
    assert site.client().get("/api/runs?ids=1,x").status == 400


def test_metrics_in_prometheus_text_format(site):
    reply = site.client().get("/metrics")
    assert reply.status == 200 and reply.header("content-type").startswith("text/plain")
    text = reply.text
    assert 'cronflow_runs{flow="daily",state="queued"}' in text
    assert 'cronflow_task_instances{flow="daily",state="none"}' in text
    assert "cronflow_broken_flow_files 1.0" in text
    assert "cronflow_daemon_up 0.0" in text
    assert 'cronflow_pool_slots{pool="station"} 1.0' in text
    assert "# TYPE cronflow_task_duration_seconds histogram" in text
    assert "# TYPE cronflow_run_start_latency_seconds histogram" in text


def test_healthz(site):
    reply = site.client().get("/healthz")
    assert reply.status == 200 and reply.json()["daemon"] == "down"
    assert site.client().get("/healthz?daemon=1").status == 503


# --- the CLI around it ----------------------------------------------------------------------------
def test_other_commands_never_import_the_web_libraries(tmp_path):
    code = (
        "import sys\nfrom cronflow.cli import app\n"
        "try:\n    app(['--home', sys.argv[1], 'list'])\nexcept SystemExit:\n    pass\n"
        "loaded = {'starlette', 'uvicorn', 'jinja2', 'prometheus_client', 'cronflow.web'}"
        " & set(sys.modules)\n"
        "print(sorted(loaded))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "home")], capture_output=True, text=True
    )
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout + result.stderr


def test_web_user_add_stores_a_scrypt_hash_never_the_password(tmp_path):
    home = tmp_path / "home"
    ok(home, "init")
    add_user(home, "alice", PASSWORD)
    stored = (home / "web-users.json").read_text()
    assert PASSWORD not in stored and "scrypt$" in stored
    assert (home / "web-users.json").stat().st_mode & 0o777 == 0o600
    assert "alice" in ok(home, "web-user", "list").stdout
    short = invoke(home, "web-user", "add", "bob", "--password-stdin", input="short\n")
    assert short.exit_code == 2 and "at least 8 characters" in short.stderr
    bad = invoke(home, "web-user", "add", "<b>", "--password-stdin", input=PASSWORD + "\n")
    assert bad.exit_code == 2 and "bad user name" in bad.stderr
    missing = invoke(home, "web-user", "delete", "zed")
    assert missing.exit_code == 2 and "no web user 'zed'" in missing.stderr


def test_web_command_errors_are_one_line(tmp_path):
    home = tmp_path / "home"
    ok(home, "init")
    result = invoke(home, "web", "--tls-cert", str(tmp_path / "c.pem"))
    assert result.exit_code == 2 and "--tls-cert and --tls-key go together" in result.stderr
    assert invoke(home, "web", "--port", "0").exit_code == 2


def test_readme_and_cli_colours_are_the_css_colours():
    """Each state's colour in the page is the CLI's, as rich renders it."""
    from rich.color import Color

    from cronflow.cli.app import STATE_STYLES
    from cronflow.cli.flows import STATE_CELLS
    from cronflow.web.render import STATE_CELLS as WEB_CELLS

    css = (Path(__file__).parent.parent / "cronflow/web/static/style.css").read_text()
    for state, style in STATE_STYLES.items():
        if style == "default":
            continue
        found = re.search(rf"\.s-{state} {{ --c: (#[0-9a-f]{{6}});", css)
        assert found, state
        red, green, blue = Color.parse(style).get_truecolor()
        assert found.group(1) == f"#{red:02x}{green:02x}{blue:02x}", state
    assert WEB_CELLS == STATE_CELLS

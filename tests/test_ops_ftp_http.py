"""FTPGet/FTPPut against a real FTP and FTPS server (pyftpdlib on 127.0.0.1, FTPS requiring TLS
on both channels), and Http against a real HTTP server (http.server)."""

from __future__ import annotations

import json

from clikit import invoke
from opskit import Runner

from cronflow.store import Store

FTP_FLOW = """
from cronflow import Flow, FTPGet, FTPPut
with Flow("ftp"):
    FTPGet("get", conn_id="archive", remote="/out/{{{{ ds_nodash }}}}_*.csv",
           local_dir="{local}/in")
    FTPPut("put", conn_id="archive", local="{local}/out/*.txt", remote_dir="/in")
    FTPGet("missing", conn_id="archive", remote="/out/*.zip", local_dir="{local}/in")
"""


def _ftp_files(server, tmp_path):  # type: ignore[no-untyped-def]
    (server.root / "out").mkdir()
    (server.root / "in").mkdir()
    (server.root / "out" / "20240301_north.csv").write_text("north\n")
    (server.root / "out" / "20240301_south.csv").write_text("south\n")
    (server.root / "out" / "20240302_north.csv").write_text("tomorrow\n")
    (server.root / "in" / "report.txt").write_text("old version")
    local = tmp_path / "local"
    (local / "out").mkdir(parents=True)
    (local / "out" / "report.txt").write_text("new version")
    (local / "out" / "notes.txt").write_text("notes")
    return local


def _check_transfers(r: Runner, run_id: int, server, local) -> None:  # type: ignore[no-untyped-def]
    assert r.states(run_id) == {"get": "success", "put": "success", "missing": "failed"}
    assert sorted(p.name for p in (local / "in").iterdir()) == [
        "20240301_north.csv",
        "20240301_south.csv",
    ]
    assert (local / "in" / "20240301_south.csv").read_text() == "south\n"
    assert r.xcom(run_id, "put") == ["/in/notes.txt", "/in/report.txt"]
    assert (server.root / "in" / "report.txt").read_text() == "new version"  # replaced
    assert sorted(p.name for p in (server.root / "in").iterdir()) == ["notes.txt", "report.txt"]
    # each upload was stored under a temporary name, then renamed
    uploads = [(c, a) for c, a in server.commands if c in ("STOR", "RNFR", "RNTO")]
    assert ("STOR", "/in/.report.txt.part") in uploads
    assert uploads.index(("RNFR", "/in/.report.txt.part")) < uploads.index(
        ("RNTO", "/in/report.txt")
    )
    assert "cronflow: nothing matches /out/*.zip on archive@127.0.0.1" in r.log(run_id, "missing")


def test_ftp_get_and_put_with_globs(home, write_flow, ftp_server, tmp_path, monkeypatch):
    local = _ftp_files(ftp_server, tmp_path)
    monkeypatch.setenv(
        "CRONFLOW_CONN_ARCHIVE",
        f"ftp://{ftp_server.user}:{ftp_server.password}@127.0.0.1:{ftp_server.port}",
    )
    write_flow("ftp", FTP_FLOW.format(local=local))
    r = Runner(home)
    run_id = r.run("ftp")
    _check_transfers(r, run_id, ftp_server, local)
    assert ("AUTH", "TLS") not in ftp_server.commands
    assert ftp_server.password not in r.log(run_id, "get")


def test_ftps_get_and_put_with_a_checked_certificate(
    home, write_flow, ftps_server, tls_cert, tmp_path
):
    local = _ftp_files(ftps_server, tmp_path)
    Store(home / "cronflow.db").set_connection(
        "archive",
        "ftps",
        "127.0.0.1",
        ftps_server.port,
        ftps_server.user,
        ftps_server.password,
        {"ca_file": str(tls_cert.cert)},
    )
    write_flow("ftp", FTP_FLOW.format(local=local))
    r = Runner(home)
    run_id = r.run("ftp")
    _check_transfers(r, run_id, ftps_server, local)
    commands = [c for c, _ in ftps_server.commands]
    assert commands.index("AUTH") < commands.index("USER")  # TLS before the password
    assert "PROT" in commands


def test_ftps_refuses_an_unknown_certificate_and_a_bad_password(
    home, write_flow, ftps_server, ftp_server, tmp_path
):
    store = Store(home / "cronflow.db")
    store.set_connection(
        "archive", "ftps", "127.0.0.1", ftps_server.port, "archive", "pw", {}
    )  # no ca_file: the self-signed certificate is not trusted
    store.set_connection(
        "plain", "ftp", "127.0.0.1", ftp_server.port, ftp_server.user, "wrong-password", {}
    )
    write_flow(
        "bad",
        f"""
        from cronflow import Flow, FTPGet
        with Flow("bad"):
            FTPGet("untrusted", conn_id="archive", remote="/x", local_dir="{tmp_path}")
            FTPGet("password", conn_id="plain", remote="/x", local_dir="{tmp_path}")
        """,
    )
    r = Runner(home)
    run_id = r.run("bad")
    assert r.states(run_id) == {"untrusted": "failed", "password": "failed"}
    assert (
        f"cronflow: connection 'archive': cannot connect to archive@127.0.0.1:{ftps_server.port}: "
        "certificate verify failed: self-signed certificate\n" in r.log(run_id, "untrusted")
    )
    assert (
        f"cronflow: connection 'plain': archive@127.0.0.1:{ftp_server.port} refused the login: "
        "530" in r.log(run_id, "password")
    )


def test_conn_test_for_ftp(home, ftp_server):
    uri = f"ftp://{ftp_server.user}:{ftp_server.password}@127.0.0.1:{ftp_server.port}"
    assert invoke(home, "conn", "add", "archive", uri).exit_code == 0
    result = invoke(home, "conn", "test", "archive")
    assert result.stdout == f"ok: logged in to archive@127.0.0.1:{ftp_server.port} (directory /)\n"


HTTP_FLOW = """
from cronflow import Flow, Http
with Flow("web"):
    Http("ok", url="{url}/status/200")
    Http("server_error", url="{url}/status/503")
    Http("expected_404", url="{url}/status/404", expected_status=[404, 410])
    Http("post", url="{url}/echo/{{{{ ds }}}}", method="POST",
         json={{"day": "{{{{ ds }}}}", "rows": 3}}, headers={{"X-Run": "{{{{ run_id }}}}"}},
         response_to_xcom=True)
    Http("auth", conn_id="portal", endpoint="/auth/check", response_to_xcom=True)
    Http("no_auth", url="{url}/auth/check")
    Http("unreachable", url="http://127.0.0.1:1/nothing")
"""


def test_http_requests_and_expected_status(home, write_flow, http_server, monkeypatch):
    monkeypatch.setenv("CRONFLOW_CONN_PORTAL", f"http://web:pw-1234@127.0.0.1:{http_server.port}")
    write_flow("web", HTTP_FLOW.format(url=http_server.url))
    r = Runner(home)
    run_id = r.run("web")
    assert r.states(run_id) == {
        "ok": "success",
        "server_error": "failed",
        "expected_404": "success",
        "post": "success",
        "auth": "success",
        "no_auth": "failed",
        "unreachable": "failed",
    }
    assert f"GET {http_server.url}/status/200 -> 200 OK" in r.log(run_id, "ok")
    assert (
        f"cronflow: GET {http_server.url}/status/503 returned 503 Service Unavailable, expected "
        "200; the body starts with: 'status 503 body'" in r.log(run_id, "server_error")
    )
    echoed = r.xcom(run_id, "post")
    assert echoed["method"] == "POST" and echoed["path"] == "/echo/2024-03-01"
    assert json.loads(echoed["body"]) == {"day": "2024-03-01", "rows": 3}
    assert echoed["headers"]["X-Run"] == str(run_id)
    assert echoed["headers"]["Content-Type"] == "application/json"
    assert r.xcom(run_id, "auth")["path"] == "/auth/check"
    assert "returned 401 Unauthorized" in r.log(run_id, "no_auth")
    assert "cronflow: GET http://127.0.0.1:1/nothing: connection refused by 127.0.0.1:1\n" in r.log(
        run_id, "unreachable"
    )
    assert "pw-1234" not in r.log(run_id, "auth")

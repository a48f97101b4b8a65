"""`cronflow var ...` and `cronflow conn ...`: secrets always print as ***, errors are one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from clikit import error, invoke, ok

from cronflow.store import Store


def test_var_set_get_list_delete(home):
    assert (
        ok(home, "var", "set", "api_url", "https://api.example").stdout
        == "variable 'api_url' set\n"
    )
    assert ok(home, "var", "get", "api_url").stdout == "https://api.example\n"
    result = ok(home, "var", "set", "token", "--secret", "--stdin", input="t0ken-value-1\n")
    assert result.stdout == "variable 'token' set (secret)\n"
    assert ok(home, "var", "get", "token").stdout == "***\n"
    ok(home, "var", "set", "token", "changed-value-2")  # stays secret
    assert Store(home / "cronflow.db").variables()["token"] == "changed-value-2"
    assert ok(home, "var", "get", "token").stdout == "***\n"
    rows = json.loads(ok(home, "var", "list", "--json").stdout)
    assert [(r["name"], r["value"], r["secret"], r["source"]) for r in rows] == [
        ("api_url", "https://api.example", False, "store"),
        ("token", "***", True, "store"),
    ]
    table = ok(home, "var", "list").stdout
    assert "api_url" in table and "changed-value-2" not in table and "***" in table
    assert ok(home, "var", "delete", "token").stdout == "variable 'token' deleted\n"
    assert error(home, "var", "get", "token") == (
        "unknown variable 'token' (known: api_url); set it with `cronflow var set token VALUE` "
        "or CRONFLOW_VAR_token"
    )
    assert error(home, "var", "delete", "token") == "no stored variable 'token'"
    assert error(home, "var", "set", "bad name", "x").startswith("bad variable name 'bad name'")
    assert error(home, "var", "set", "x") == (
        "give the value as an argument or with --stdin (one of the two)"
    )


def test_environment_variables_and_connections_show_as_secret(home):
    """Through the real command in a subprocess, with secrets in its environment."""
    env = {
        "CRONFLOW_VAR_deploy_key": "from-the-env-123",
        "CRONFLOW_CONN_STATION": "sftp://meteo:st4tion-pw@station.example:2222?key_file=/k",
    }
    run_env = {**os.environ, **env, "CRONFLOW_HOME": str(home), "COLUMNS": "200", "NO_COLOR": "1"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cronflow", *args], capture_output=True, text=True, env=run_env
        )

    listing = run("var", "list")
    assert "deploy_key" in listing.stdout and "from-the-env-123" not in listing.stdout
    assert run("var", "get", "deploy_key").stdout == "***\n"
    shown = run("conn", "show", "station")
    assert shown.returncode == 0, shown.stderr
    assert "st4tion-pw" not in shown.stdout
    assert "password:  ***" in shown.stdout and "source:    env" in shown.stdout
    assert "uri:       sftp://meteo:***@station.example:2222?key_file=/k" in shown.stdout
    deleted = run("conn", "delete", "station")
    assert deleted.returncode == 2
    assert deleted.stderr == (
        "Error: no stored connection 'station'; it comes from the environment "
        "(CRONFLOW_CONN_STATION)\n"
    )


def test_conn_add_list_show_delete(home):
    result = ok(
        home, "conn", "add", "web", "https://bot:pa55-word@portal.example:8443/api?verify=true"
    )
    assert result.stdout == (
        "connection 'web' saved: https://bot:***@portal.example:8443/api?verify=true\n"
    )
    assert error(home, "conn", "add", "web", "https://x") == (
        "connection 'web' already exists; add --replace to change it"
    )
    ok(home, "conn", "add", "mail", "smtp://relay:25?starttls=false")
    ok(home, "conn", "add", "box", "ftps://u@files", "--password-stdin", input="stdin-pw-99\n")
    rows = {r["conn_id"]: r for r in json.loads(ok(home, "conn", "list", "--json").stdout)}
    assert set(rows) == {"web", "mail", "box"}
    assert rows["web"]["password"] == "***" and rows["box"]["password"] == "***"
    assert rows["mail"]["password"] is None and rows["mail"]["port"] == 25
    assert rows["box"]["port"] == 21
    everything = json.dumps(rows) + ok(home, "conn", "list").stdout
    assert "pa55-word" not in everything and "stdin-pw-99" not in everything
    assert Store(home / "cronflow.db").connection("box")["password"] == "stdin-pw-99"
    shown = json.loads(ok(home, "conn", "show", "web", "--json").stdout)
    assert shown["extra"] == {"path": "/api", "verify": "true"}
    assert shown["password"] == "***"
    assert ok(home, "conn", "delete", "web").stdout == "connection 'web' deleted\n"
    assert error(home, "conn", "show", "web").startswith(
        "unknown connection 'web' (known: box, mail)"
    )
    assert error(home, "conn", "add", "x", "telnet://h").startswith(
        "connection 'x': unknown type 'telnet'"
    )
    assert error(home, "conn", "add", "bad id", "ssh://h").startswith("bad connection id 'bad id'")


def test_conn_test_of_an_unreachable_server_exits_1(home):
    ok(home, "conn", "add", "nowhere", "http://127.0.0.1:1/")
    result = invoke(home, "conn", "test", "nowhere")
    assert result.exit_code == 1
    assert result.stderr == "Error: GET http://127.0.0.1:1: connection refused by 127.0.0.1:1\n"

"""The pieces under the operators, without servers: masking, connection URIs, variables,
[smtp] configuration, alert settings, reasons as one line, where third-party libraries are
imported."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from cronflow.config import load_settings
from cronflow.connections import (
    Connection,
    env_name,
    get_connection,
    list_connections,
    parse_uri,
)
from cronflow.errors import ConfigError, FlowDefinitionError, InvalidInputError, NotFoundError
from cronflow.logs import TAIL_BYTES, last_line, last_output_line
from cronflow.masking import Masker, secret_values
from cronflow.outcomes import one_line
from cronflow.store import Store
from cronflow.variables import get_variable, list_variables, set_variable

PACKAGE = Path(__file__).resolve().parent.parent / "cronflow"


# --- masking ----------------------------------------------------------------------------------
def feed_all(masker: Masker, chunks: list[bytes]) -> bytes:
    return b"".join(masker.feed(c) for c in chunks) + masker.flush()


@pytest.mark.parametrize(
    "chunks,expected",
    [
        ([b"token=hunter2-pw done\n"], b"token=*** done\n"),
        ([b"token=hun", b"ter2-pw done\n"], b"token=*** done\n"),
        ([b"h", b"u", b"n", b"t", b"e", b"r", b"2", b"-", b"p", b"w"], b"***"),
        ([b"hunter2-p"], b"hunter2-p"),  # a prefix that never completes is written at the end
        ([b"hunter2-pwhunter2-pw"], b"******"),
        ([b"x" * 100_000, b"hunter2-pw"], b"x" * 100_000 + b"***"),
        ([b"abc-longer-secret and hunter2-pw"], b"*** and ***"),
        ([b"abc-longer-secr", b"et"], b"***"),
    ],
)
def test_masker_streams_across_chunk_boundaries(chunks, expected):
    masker = Masker(["hunter2-pw", "abc-longer-secret", "abc"])  # "abc" is too short to mask
    assert feed_all(masker, chunks) == expected


def test_masker_holds_back_only_what_may_start_a_secret():
    masker = Masker(["hunter2-pw"])
    assert masker.feed(b"line one\nhun") == b"line one\n"
    assert masker.feed(b"gry\n") == b"hungry\n"
    assert masker.flush() == b""


@pytest.mark.parametrize("chunks", [[b"<abcd-1234-wxyz>"], [b"<abcd-12", b"34-wxyz>"]])
def test_masker_overlapping_secrets_are_never_half_shown(chunks):
    masker = Masker(["abcd-1234", "1234-wxyz"])
    assert feed_all(masker, chunks) == b"<***>"
    assert masker.mask("<abcd-1234-wxyz>") == "<***>"


def test_masker_masks_text_and_is_a_no_op_without_secrets():
    assert Masker(["s3cr3t!"]).mask("a s3cr3t! b") == "a *** b"
    empty = Masker([])
    assert not empty and empty.feed(b"abc") == b"abc" and empty.mask("x") == "x"


def test_secret_values_come_from_the_store_the_environment_and_smtp(tmp_path, monkeypatch):
    store = Store(tmp_path / "cronflow.db")
    store.set_variable("token", "stored-token", is_secret=True)
    store.set_variable("plain", "not-a-secret")
    store.set_connection("db", "ssh", "h", None, "u", "conn-password", {})
    home = tmp_path
    (home / "cronflow.toml").write_text(
        '[smtp]\nhost = "mail"\nuser = "u"\npassword_env = "MAIL_PW"\n'
    )
    environ = {
        "CRONFLOW_VAR_API": "env-api-key",
        "CRONFLOW_CONN_WEB": "https://me:env-conn-pw@web.example/api",
        "MAIL_PW": "mail-password",
        "CRONFLOW_VAR_X": "ab",  # too short to mask
    }
    monkeypatch.setattr("os.environ", environ)
    values = secret_values(store, load_settings(home), environ)
    assert set(values) == {
        "stored-token",
        "conn-password",
        "env-api-key",
        "env-conn-pw",
        "mail-password",
    }


# --- connections ------------------------------------------------------------------------------
def test_connection_uris_are_shown_without_needless_percent_encoding():
    conn = parse_uri("c", "sftp://meteo:pw@station:22?key_file=%2Fetc%2Fcronflow%2Fst.key")
    assert conn.redacted_uri() == "sftp://meteo:***@station:22?key_file=/etc/cronflow/st.key"
    # what would change how it reads back stays encoded
    tricky = parse_uri("c", "sftp://me%40corp@h?q=a%26b%2Bc&path2=/x y")
    assert tricky.redacted_uri() == "sftp://me%40corp@h?path2=/x y&q=a%26b%2Bc"
    assert parse_uri("c", tricky.redacted_uri()) == tricky


@pytest.mark.parametrize(
    "uri,fields",
    [
        (
            "ssh://meteo:p%40ss@station.example:2222?key_file=/k/id&host_key_check=false",
            ("ssh", "station.example", 2222, "meteo", "p@ss", {"key_file": "/k/id", "host_key_check": "false"}),
        ),
        ("sftp://u@h", ("sftp", "h", None, "u", None, {})),
        ("ftps://u:pw@files:990?passive=false", ("ftps", "files", 990, "u", "pw", {"passive": "false"})),
        ("smtp://relay:25?starttls=false", ("smtp", "relay", 25, None, None, {"starttls": "false"})),
        ("https://api.example/v1/base", ("https", "api.example", None, None, None, {"path": "/v1/base"})),
        (
            "sftp://me%40corp:a%3Ab%25c%2F@h?key_file=/etc/k%20k&q=a%26b%3Dc%2Bd%23e",
            ("sftp", "h", None, "me@corp", "a:b%c/", {"key_file": "/etc/k k", "q": "a&b=c+d#e"}),
        ),
    ],
)  # fmt: skip
def test_connection_uris(uri, fields):
    conn = parse_uri("c", uri)
    assert (conn.conn_type, conn.host, conn.port, conn.login, conn.password, conn.extra) == fields
    assert parse_uri("c", conn.uri(reveal=True)) == conn
    if conn.password:
        assert conn.password not in conn.redacted_uri() and ":***@" in conn.redacted_uri()
        assert conn.password not in repr(conn) and conn.password not in str(conn)


@pytest.mark.parametrize(
    "uri,message",
    [
        ("gopher://h", "connection 'c': unknown type 'gopher' (known: ssh, sftp, ftp, ftps"),
        ("ssh://", "connection 'c': the URI has no host, e.g. ssh://user@host"),
        ("ssh://h:99999", "connection 'c': cannot read the URI: Port out of range"),
    ],
)
def test_bad_connection_uris_say_what_is_wrong(uri, message):
    with pytest.raises(InvalidInputError) as caught:
        parse_uri("c", uri)
    assert str(caught.value).startswith(message)


def test_flags_and_defaults():
    conn = parse_uri("c", "ssh://h?host_key_check=no&verify=maybe")
    assert conn.port_or_default == 22 and conn.flag("host_key_check", True) is False
    assert conn.flag("missing", True) is True
    with pytest.raises(InvalidInputError, match=r"verify='maybe' is not a yes/no value"):
        conn.flag("verify", True)


def test_environment_connections_win_over_the_store(tmp_path):
    store = Store(tmp_path / "cronflow.db")
    store.set_connection("station-north", "ssh", "stored", 22, "u", "pw1", {})
    store.set_connection("other", "ftp", "files", None, None, None, {})
    environ = {env_name("station-north"): "ssh://env-user:pw2@env-host:2200"}
    assert env_name("station-north") == "CRONFLOW_CONN_STATION_NORTH"
    conn = get_connection(store, "station-north", environ)
    assert (conn.host, conn.login, conn.password, conn.source) == (
        "env-host",
        "env-user",
        "pw2",
        "env",
    )
    assert get_connection(store, "other", environ).source == "store"
    listed = {c.conn_id: c.source for c in list_connections(store, environ)}
    assert listed == {"station-north": "env", "other": "store"}
    with pytest.raises(NotFoundError) as caught:
        get_connection(store, "nope", environ)
    assert str(caught.value) == (
        "unknown connection 'nope' (known: other, station-north, station_north); add it with "
        "`cronflow conn add nope URI` or set CRONFLOW_CONN_NOPE"
    )


def test_connection_rows_never_show_the_password():
    row = Connection("c", "ssh", "h", 22, "u", "pw-secret", {"key_file": "/k"}).as_row()
    assert row["password"] == "***" and "pw-secret" not in json.dumps(row)


# --- variables --------------------------------------------------------------------------------
def test_variables_from_store_and_environment(tmp_path):
    store = Store(tmp_path / "cronflow.db")
    assert set_variable(store, "api", "https://x", None) is False
    assert set_variable(store, "token", "t0k3n-value", True) is True
    assert set_variable(store, "token", "new-value", None) is True  # stays secret
    environ = {"CRONFLOW_VAR_api": "from-env", "CRONFLOW_VAR_extra": "e-value"}
    rows = [v.as_row() for v in list_variables(store, environ)]
    assert [(r["name"], r["value"], r["secret"], r["source"]) for r in rows] == [
        ("api", "***", True, "env"),
        ("extra", "***", True, "env"),
        ("token", "***", True, "store"),
    ]
    assert get_variable(store, "token", {}).value == "new-value"
    with pytest.raises(InvalidInputError, match="bad variable name 'a b'"):
        set_variable(store, "a b", "x")


# --- configuration: [smtp] --------------------------------------------------------------------
def test_smtp_section_defaults_and_ports(tmp_path):
    (tmp_path / "cronflow.toml").write_text('[smtp]\nhost = "mail.example"\nfrom = "cf@x"\n')
    smtp = load_settings(tmp_path).smtp
    assert smtp is not None
    assert (smtp.host, smtp.port, smtp.security, smtp.sender) == (
        "mail.example",
        587,
        "starttls",
        "cf@x",
    )
    (tmp_path / "cronflow.toml").write_text('[smtp]\nhost = "m"\nssl = true\nstarttls = false\n')
    assert (load_settings(tmp_path).smtp.port, load_settings(tmp_path).smtp.security) == (
        465,
        "ssl",
    )
    (tmp_path / "cronflow.toml").write_text('[smtp]\nhost = "m"\nstarttls = false\n')
    assert load_settings(tmp_path).smtp.security == "none"
    (tmp_path / "cronflow.toml").write_text("")
    assert load_settings(tmp_path).smtp is None
    assert load_settings(tmp_path).xcom_max_bytes == 65536


@pytest.mark.parametrize(
    "text,message",
    [
        ('host = "m"\npasword = "x"', "unknown key 'smtp.pasword' (known: host, port, starttls"),
        ("port = 25", '[smtp] needs host = "mail.example.com"'),
        ('host = "m"\nport = "25"', "smtp.port must be int, got '25'"),
        ('host = "m"\nstarttls = "yes"', "smtp.starttls must be bool, got 'yes'"),
        ('host = "m"\nssl = true\nstarttls = true', "smtp.ssl and smtp.starttls exclude each"),
        ('host = "m"\npassword = "a"\npassword_env = "B"', "smtp.password and smtp.password_env"),
        ('host = "m"\nport = 0', "smtp.port must be between 1 and 65535, got 0"),
    ],
)
def test_smtp_section_errors_name_the_file_and_key(tmp_path, text, message):
    path = tmp_path / "cronflow.toml"
    path.write_text(f"[smtp]\n{text}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path)
    assert str(caught.value).startswith(f"{path}: {message}")


def test_xcom_max_bytes_must_be_positive(tmp_path):
    (tmp_path / "cronflow.toml").write_text("xcom_max_bytes = 0\n")
    with pytest.raises(ConfigError, match="xcom_max_bytes must be between 1 and 16,777,216, got 0"):
        load_settings(tmp_path)


# --- alerts in flow files ---------------------------------------------------------------------
def _notify(context):  # type: ignore[no-untyped-def]
    pass


def test_alerts_are_task_settings_with_flow_defaults():
    from cronflow import Flow, Shell

    with Flow("alerts", on_failure=_notify, email_on_failure="ops@example.com") as flow:
        Shell("a", "true")
        Shell("b", "true", on_failure=_notify, on_retry=_notify, email_on_failure=["me@x.org"])
        Shell("c", "true", email_on_failure=[])
    tasks = {t["task_id"]: t for t in flow.spec()["tasks"]}
    name = f"{__name__}._notify"
    assert tasks["a"]["callbacks"] == {"on_failure": name}
    assert tasks["a"]["email_on_failure"] == ["ops@example.com"]
    assert tasks["b"]["callbacks"] == {"on_failure": name, "on_retry": name}
    assert tasks["b"]["email_on_failure"] == ["me@x.org"]
    assert "email_on_failure" not in tasks["c"]  # an empty list turns the flow's off


def test_alert_defaults_and_bad_values():
    from cronflow import Flow, Shell

    with Flow("d", defaults={"email_on_failure": ["a@b.c"], "retries": 1}) as flow:
        Shell("t", "true")
    assert flow.spec()["tasks"][0]["email_on_failure"] == ["a@b.c"]
    with Flow("bad") as flow:
        Shell("t", "true", on_failure="not callable")  # type: ignore[arg-type]
    with pytest.raises(FlowDefinitionError, match="on_failure must be a function"):
        flow.spec()
    with Flow("bad2") as flow:
        Shell("t", "true", email_on_failure=["nobody"])
    with pytest.raises(FlowDefinitionError, match="email_on_failure needs e-mail addresses"):
        flow.spec()


# --- reasons -----------------------------------------------------------------------------------
def test_a_reason_is_one_line_cut_at_a_word():
    assert one_line("bad rows:\n  row 3\n\trow 7\n") == "bad rows: row 3 row 7"
    long = "word " * 100
    cut = one_line(long, limit=50)
    assert cut == "word " * 9 + "word…" and len(cut) <= 50
    assert one_line("x" * 60, limit=50) == "x" * 49 + "…"  # no word to cut at


@pytest.mark.parametrize(
    ("output", "last"),
    [
        (b"loading\nno such table: readings\n\n", "no such table: readings"),
        (b"done\n[2024-03-01T00:00:00.000+00:00] cronflow: try 1 ended\n", "done"),
        (b"  10%\r  55%\r 100%\r", "100%"),  # a progress bar: its last state
        (b"\x1b[31merror: disk full\x1b[0m\n", "error: disk full"),
        (b"[2024-03-01T00:00:00.000+00:00] cronflow: flow.t for ..., try 1 of 1\n", ""),
    ],
)
def test_the_last_line_a_task_wrote(output, last):
    assert last_line(output) == last


def test_the_last_line_is_read_from_the_end_of_a_big_log(tmp_path):
    log = tmp_path / "try-1.log"
    log.write_bytes(b"early line\n" * 10_000 + b"x" * (TAIL_BYTES - 10) + b"\nthe end\n")
    assert last_output_line(log) == "the end"
    log.write_bytes(b"y" * (3 * TAIL_BYTES))  # one line longer than what is read: not a line
    assert last_output_line(log) == ""
    assert last_output_line(tmp_path / "missing.log") == ""


# --- where libraries are imported -------------------------------------------------------------
HOMES = {"paramiko": {"ops/ssh.py"}, "ftplib": {"ops/ftp.py"}, "smtplib": {"ops/mail.py"}}


def test_each_protocol_library_is_imported_by_one_op_module():
    for path in PACKAGE.rglob("*.py"):
        rel = str(path.relative_to(PACKAGE))
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module.split(".")[0]]
            for library, homes in HOMES.items():
                if library in names:
                    assert rel in homes, f"{rel} imports {library}"


def test_the_daemon_side_loads_no_protocol_library():
    import subprocess
    import sys

    code = (
        "import sys, cronflow.scheduler, cronflow.worker, cronflow.callbacks; "
        "print(' '.join(m for m in ('paramiko', 'ftplib', 'smtplib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_the_worked_example_flow_loads():
    from cronflow.loader import describe_file

    path = Path(__file__).resolve().parent.parent / "flows" / "station_day.py"
    result = describe_file(path)
    assert result.error is None
    flows = {spec["flow_id"]: spec for spec in result.specs}
    assert set(flows) == {"station_day", "station_publish"}
    kinds = [t["kind"] for t in flows["station_day"]["tasks"]]
    assert kinds == ["file_sensor", "sftp_get", "shell", "python", "email", "trigger_flow"]

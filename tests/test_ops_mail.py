"""Email and failure alerts against a real SMTP server (aiosmtpd on 127.0.0.1) that requires
STARTTLS (or TLS from the first byte) and a login, and receives and parses every message."""

from __future__ import annotations

import shlex
import subprocess
import sys

from clikit import invoke
from opskit import Runner

from cronflow.store import Store

REPORT_FLOW = """
from cronflow import Email, Flow, Python

def count():
    return 1440

with Flow("report", timezone="Europe/Paris"):
    c = Python("count", count)
    c >> Email("send", conn_id="{conn}", to=["team@example.com", "{{{{ params.boss }}}}"],
               cc="audit@example.com", bcc=["archive@example.com"],
               subject="Readings for {{{{ ds }}}}: {{{{ xcom.count }}}} rows",
               body="Hello,\\n{{{{ xcom.count }}}} readings of {{{{ ds }}}} are loaded.\\n",
               attachments=["{files}/summary-{{{{ ds }}}}.csv", "{files}/*.png"],
               params={{"boss": "boss@example.com"}})
"""


def _files(tmp_path):  # type: ignore[no-untyped-def]
    files = tmp_path / "files"
    files.mkdir()
    (files / "summary-2024-03-01.csv").write_text("station,rows\nnorth,1440\n")
    (files / "plot.png").write_bytes(b"\x89PNG\r\n")
    return files


def test_email_over_starttls_with_login_and_attachments(
    home, write_flow, smtp_server, tls_cert, tmp_path
):
    files = _files(tmp_path)
    store = Store(home / "cronflow.db")
    extra = {"ca_file": str(tls_cert.cert), "from": "cronflow@meteo.example"}
    store.set_connection(
        "mail", "smtp", "127.0.0.1", smtp_server.port, smtp_server.user, smtp_server.password, extra
    )
    write_flow("report", REPORT_FLOW.format(conn="mail", files=files))
    r = Runner(home)
    run_id = r.run("report")
    assert r.states(run_id) == {"count": "success", "send": "success"}
    ((sender, recipients, message),) = smtp_server.box.wait()
    assert smtp_server.box.logins == ["reporter"]
    assert sender == "cronflow@meteo.example"
    assert recipients == [
        "team@example.com",
        "boss@example.com",
        "audit@example.com",
        "archive@example.com",
    ]
    assert message["To"] == "team@example.com, boss@example.com"
    assert message["Cc"] == "audit@example.com" and message["Bcc"] is None
    assert message["Subject"] == "Readings for 2024-03-01: 1440 rows"
    assert message.get_body().get_content() == "Hello,\n1440 readings of 2024-03-01 are loaded.\n"
    attachments = {a.get_filename(): a.get_content() for a in message.iter_attachments()}
    assert attachments == {
        "summary-2024-03-01.csv": "station,rows\nnorth,1440\n",
        "plot.png": b"\x89PNG\r\n",
    }
    log = r.log(run_id, "send")
    assert "sent 'Readings for 2024-03-01: 1440 rows' to team@example.com" in log
    assert smtp_server.password not in log


def test_email_over_smtps_from_an_environment_connection(
    home, write_flow, smtps_server, tls_cert, tmp_path, monkeypatch
):
    files = _files(tmp_path)
    monkeypatch.setenv(
        "CRONFLOW_CONN_OUTMAIL",
        f"smtps://{smtps_server.user}:{smtps_server.password}@127.0.0.1:{smtps_server.port}"
        f"?ca_file={tls_cert.cert}",
    )
    write_flow("report", REPORT_FLOW.format(conn="outmail", files=files))
    r = Runner(home)
    run_id = r.run("report")
    assert r.state(run_id, "send") == "success", r.log(run_id, "send")
    ((sender, _, message),) = smtps_server.box.wait()
    assert sender == "reporter"  # no from=: the login
    assert message["Subject"] == "Readings for 2024-03-01: 1440 rows"


def test_email_without_connection_uses_the_smtp_section(
    home, write_flow, smtp_server, tls_cert, tmp_path, monkeypatch
):
    files = _files(tmp_path)
    monkeypatch.setenv("TEST_MAIL_PASSWORD", smtp_server.password)
    (home / "cronflow.toml").write_text(
        f'[smtp]\nhost = "127.0.0.1"\nport = {smtp_server.port}\nuser = "{smtp_server.user}"\n'
        f'password_env = "TEST_MAIL_PASSWORD"\nfrom = "alerts@meteo.example"\n'
        f'ca_file = "{tls_cert.cert}"\n'
    )
    write_flow("report", REPORT_FLOW.format(conn="", files=files).replace('conn_id="",', ""))
    r = Runner(home)
    run_id = r.run("report")
    assert r.state(run_id, "send") == "success", r.log(run_id, "send")
    ((sender, _, _),) = smtp_server.box.wait()
    assert sender == "alerts@meteo.example"


def test_mail_errors_are_clear(home, write_flow, smtp_server, tls_cert, tmp_path):
    files = _files(tmp_path)
    store = Store(home / "cronflow.db")
    ca = {"ca_file": str(tls_cert.cert)}
    store.set_connection(
        "mail", "smtp", "127.0.0.1", smtp_server.port, "reporter", "wrong-pass", ca
    )
    write_flow("report", REPORT_FLOW.format(conn="mail", files=files))
    write_flow(
        "nossl", REPORT_FLOW.format(conn="plain", files=files).replace('"report"', '"nossl"')
    )
    store.set_connection(
        "plain", "smtp", "127.0.0.1", smtp_server.port, "reporter", "x", {"starttls": "false"}
    )
    write_flow(
        "noconf",
        REPORT_FLOW.format(conn="", files=files)
        .replace('conn_id="",', "")
        .replace('"report"', '"noconf"'),
    )
    r = Runner(home)
    run_id = r.run("report")
    log = r.log(run_id, "send")
    assert (
        f"cronflow: mail server 127.0.0.1:{smtp_server.port} (starttls) refused the login of reporter: 535"
        in log
    )
    assert "wrong-pass" not in log
    nossl = r.run("nossl")
    assert (
        f"cronflow: mail server 127.0.0.1:{smtp_server.port} (none): SMTP AUTH extension not supported"
        in r.log(nossl, "send")
    )
    noconf = r.run("noconf")
    assert (
        "cronflow: task 'send': no conn_id, and cronflow.toml has no [smtp] section; add one "
        "(host, port, starttls, user, password_env, from) or pass conn_id"
    ) in r.log(noconf, "send")
    assert smtp_server.box.messages == []


ALERT_FLOW = """
from cronflow import Flow, Shell
with Flow("nightly", email_on_failure=["oncall@example.com"], defaults={"retry_delay": 0}):
    Shell("load", "echo loading with {{ var.db_password }}; for i in $(seq 1 300); do echo line $i; done; echo boom with {{ var.db_password }} >&2; exit 4",
          retries=1)
    Shell("quiet", "exit 1", email_on_failure=[])
"""


def test_failure_mail_from_cronflow_toml_with_the_log_tail(home, write_flow, smtp_server, tls_cert):
    (home / "cronflow.toml").write_text(
        f'[smtp]\nhost = "127.0.0.1"\nport = {smtp_server.port}\nuser = "{smtp_server.user}"\n'
        f'password = "{smtp_server.password}"\nfrom = "cronflow@server.example"\n'
        f'ca_file = "{tls_cert.cert}"\n'
    )
    Store(home / "cronflow.db").set_variable("db_password", "db-secret-4242", is_secret=True)
    write_flow("nightly", ALERT_FLOW)
    r = Runner(home)
    run_id = r.run("nightly")
    r.wait_callbacks()
    assert r.states(run_id) == {"load": "failed", "quiet": "failed"}
    ((sender, recipients, message),) = smtp_server.box.wait()  # one mail: the last try only
    assert (sender, recipients) == ("cronflow@server.example", ["oncall@example.com"])
    assert message["Subject"] == (
        "[cronflow] nightly.load failed for 2024-03-01T00:00:00+00:00 (try 2 of 2)"
    )
    body = message.get_body().get_content()
    assert "Reason:       exit code 4: boom with ***\n" in body  # the last line, masked
    # The command the mail gives works as written: the whole log of that very try.
    (command,) = [line.split(": ", 1)[1] for line in body.splitlines() if "See it all" in line]
    argv = shlex.split(command)
    assert argv[0] == "cronflow"
    assert argv[1:] == [
        "--home",
        str(home),
        "logs",
        "nightly.load",
        "--date",
        "2024-03-01T00:00:00+00:00",
        "--try",
        "2",
    ]
    shown = subprocess.run(
        [sys.executable, "-m", "cronflow", *argv[1:]], capture_output=True, text=True, cwd="/"
    )
    assert shown.returncode == 0, shown.stderr
    assert (
        "line 1\n" in shown.stdout and "line 50\n" in shown.stdout and "try 2 ended" in shown.stdout
    )
    assert "db-secret-4242" not in shown.stdout
    (attachment,) = message.iter_attachments()
    assert attachment.get_filename() == "nightly.load.try-2.log.txt"
    tail = attachment.get_content()
    assert "boom" in tail and "line 300" in tail
    assert "line 50\n" not in tail  # only the tail
    assert "try 2 ended" in tail
    assert "db-secret-4242" not in message.as_string() and "boom with ***" in tail
    assert "failure mail sent to oncall@example.com" in r.log(run_id, "load")


def test_conn_test_for_smtp(home, smtp_server, tls_cert):
    uri = f"smtp://{smtp_server.user}@127.0.0.1:{smtp_server.port}?ca_file={tls_cert.cert}"
    assert (
        invoke(
            home, "conn", "add", "mail", uri, "--password-stdin", input=smtp_server.password + "\n"
        ).exit_code
        == 0
    )
    result = invoke(home, "conn", "test", "mail")
    assert result.exit_code == 0, result.stderr
    assert (
        result.stdout
        == f"ok: mail server 127.0.0.1:{smtp_server.port} (starttls) ready, logged in as reporter\n"
    )
    shown = invoke(home, "conn", "show", "mail").stdout
    assert "password:  ***" in shown and smtp_server.password not in shown

"""Failures say why, everywhere: for each operator family run against the real servers, the
reason of a failed task is the error in words (masked, one line), and the same words are in the
store, `cronflow tasks --json`, `cronflow why`, the `event=task_ended` line and the failure mail.
Shell tasks say "exit code N" and the last line they wrote."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from clikit import invoke, rows
from conftest import cli, wait_for
from opskit import Runner
from servers import REJECTED_DOMAIN

from cronflow.store import Store


class Starts(str):
    """An expected reason known only by its beginning."""


@dataclass
class Family:
    """One operator family: its flow's tasks (source lines in a `with Flow(...)` block, given
    the test's places) and the reason each of them fails with."""

    imports: str
    tasks: Callable[[dict[str, object]], str]
    reasons: Callable[[dict[str, object]], dict[str, str]]
    servers: tuple[str, ...] = ()


FAMILIES = {
    "sftp": Family(
        "SFTPGet, FileSensor",
        lambda p: (
            f"""
    SFTPGet("offline", conn_id="offline", remote="/outbox/x.obs", local_dir="{p["tmp"]}")
    SFTPGet("typo", conn_id="statoin", remote="/outbox/x.obs", local_dir="{p["tmp"]}")
    SFTPGet("nothing", conn_id="station", remote="{p["tmp"]}/*.obs", local_dir="{p["tmp"]}")
    FileSensor("sensor", "{p["tmp"]}/rinex/2026120310.obs", conn_id="station", timeout=0)
"""
        ),
        lambda p: {
            "offline": f"connection 'offline': connection refused by 127.0.0.1:{p['refused']}",
            "typo": Starts("unknown connection 'statoin' (known: "),
            "nothing": f"nothing matches {p['tmp']}/*.obs on {p['station']} "
            "(allow_empty=True accepts that)",
            "sensor": Starts(
                f"no file matches {p['tmp']}/rinex/2026120310.obs on {p['station']}; gave up after "
            ),
        },
    ),
    "ssh": Family(
        "SSHCommand",
        lambda p: (
            """
    SSHCommand("remote", "echo working; echo 'bad header in day.obs' >&2; exit 3",
               conn_id="station")
"""
        ),
        lambda p: {"remote": "remote exit code 3: bad header in day.obs"},
    ),
    "ftp": Family(
        "FTPGet",
        lambda p: (
            f"""
    FTPGet("login", conn_id="archive", remote="/x", local_dir="{p["tmp"]}")
"""
        ),
        lambda p: {
            "login": Starts(
                f"connection 'archive': archive@127.0.0.1:{p['ftp']} refused the login: 530 "
            )
        },
        ("ftp_server",),
    ),
    "python": Family(
        "Python",
        lambda p: (
            """
    Python("header", bad_header)
    Python("secret", leaks_a_secret)
    Python("lines", many_lines)
"""
        ),
        lambda p: {
            "header": "RuntimeError: bad header",
            "secret": "ValueError: cannot log in to the database with *** (as loader)",
            "lines": Starts("RuntimeError: line one line two xxxxxxxxxx"),  # cut, see below
        },
    ),
    "email": Family(
        "Email",
        lambda p: (
            f"""
    Email("mail", to="nobody@{REJECTED_DOMAIN}", subject="day {{{{ ds }}}}", conn_id="mail")
"""
        ),
        lambda p: {
            "mail": f"mail server 127.0.0.1:{p['smtp']} (starttls) did not take the message: "
            f"SMTP 550 5.1.1 <nobody@{REJECTED_DOMAIN}>: no such mailbox for nobody@{REJECTED_DOMAIN}"
        },
    ),
    "http": Family(
        "Http",
        lambda p: (
            f"""
    Http("status", url="{p["http"]}/status/500")
    Http("down", url="http://127.0.0.1:{p["refused"]}/ready")
"""
        ),
        lambda p: {
            "status": f"GET {p['http']}/status/500 returned 500 Internal Server Error, expected "
            "200; the body starts with: 'status 500 body'",
            "down": f"GET http://127.0.0.1:{p['refused']}/ready: connection refused by "
            f"127.0.0.1:{p['refused']}",
        },
        ("http_server",),
    ),
    "trigger": Family(
        "TriggerFlow",
        lambda p: (
            """
    TriggerFlow("next", "broken_next", wait=True, poke_interval=10, mode="reschedule")
"""
        ),
        lambda p: {"next": "run 2 of broken_next for 2024-03-01T00:00:00+00:00 is failed"},
    ),
    "shell": Family(
        "Shell",
        lambda p: (
            """
    Shell("load", "echo loading; echo 'no such table: readings' >&2; exit 4")
    Shell("leak", "echo connecting with {{ var.db_password }}; exit 2")
"""
        ),
        lambda p: {
            "load": "exit code 4: no such table: readings",
            "leak": "exit code 2: connecting with ***",
        },
    ),
}

HELPERS = """
from cronflow import Flow, Email, FileSensor, FTPGet, Http, Python, SFTPGet, Shell, SSHCommand
from cronflow import TriggerFlow

def bad_header():
    raise RuntimeError("bad header")

def leaks_a_secret(context):
    raise ValueError(f"cannot log in to the database with {context['var']['db_password']} (as loader)")

def many_lines():
    raise RuntimeError("line one\\n  line two\\n" + "x" * 500)

with Flow("broken_next"):
    Shell("work", "exit 3")
"""


@pytest.fixture
def places(home, sshd, smtp_server, tls_cert, refused_port, tmp_path):  # type: ignore[no-untyped-def]
    """A home whose failures are mailed through the test SMTP server, with connections to the
    test servers; what the flows and the expected reasons need to know."""
    (home / "cronflow.toml").write_text(
        f'parallelism = 4\n[smtp]\nhost = "127.0.0.1"\nport = {smtp_server.port}\n'
        f'user = "{smtp_server.user}"\npassword = "{smtp_server.password}"\n'
        f'from = "cronflow@server.example"\nca_file = "{tls_cert.cert}"\n'
    )
    store = Store(home / "cronflow.db")
    store.set_variable("db_password", "db-secret-4242", is_secret=True)
    ssh = {"key_file": str(sshd.key_file), "known_hosts": str(sshd.known_hosts), "timeout": "2"}
    store.set_connection("station", "sftp", "127.0.0.1", sshd.port, sshd.user, None, ssh)
    store.set_connection("offline", "sftp", "127.0.0.1", refused_port, sshd.user, None, ssh)
    store.set_connection(
        "mail",
        "smtp",
        "127.0.0.1",
        smtp_server.port,
        smtp_server.user,
        smtp_server.password,
        {"ca_file": str(tls_cert.cert)},
    )
    return {
        "tmp": tmp_path,
        "refused": refused_port,
        "station": f"{sshd.user}@127.0.0.1:{sshd.port}",
        "smtp": smtp_server.port,
        "mailbox": smtp_server.box,
        "store": store,
    }


def _reason_in_mail(mailbox, flow_id: str, task_id: str) -> str:  # type: ignore[no-untyped-def]
    subject = f"[cronflow] {flow_id}.{task_id} failed for "
    mails = [m for _, _, m in mailbox.messages if m["Subject"].startswith(subject)]
    assert len(mails) == 1, [m["Subject"] for _, _, m in mailbox.messages]
    body = mails[0].get_body().get_content()
    (line,) = [li for li in body.splitlines() if li.startswith("Reason:")]
    return line.removeprefix("Reason:").strip()


def _matches(reason: str, expected: str) -> bool:
    if isinstance(expected, Starts):
        return reason.startswith(expected)
    return reason == expected


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_failed_task_says_why_everywhere(home, write_flow, places, family, request, caplog):
    spec = FAMILIES[family]
    for name in spec.servers:
        server = request.getfixturevalue(name)
        if name == "ftp_server":
            places["ftp"] = server.port
            places["store"].set_connection(
                "archive", "ftp", "127.0.0.1", server.port, server.user, "wrong-password", {}
            )
        if name == "http_server":
            places["http"] = server.url
    flow_id = f"family_{family}"
    source = (
        HELPERS
        + f'\nwith Flow("{flow_id}", email_on_failure=["oncall@example.com"]):'
        + spec.tasks(places)
    )
    write_flow(flow_id, source)
    expected = spec.reasons(places)
    r = Runner(home)
    caplog.set_level("INFO", logger="cronflow")
    run_id = r.run(flow_id)
    if family == "trigger":  # the triggered run has failed since: the next poke says so
        r.advance(10)
    r.wait_callbacks()
    listed = {row["task"]: row for row in rows(home, "tasks", flow_id, "--date", "2024-03-01")}
    why = invoke(home, "why", flow_id, "--date", "2024-03-01").stdout
    mailbox = places["mailbox"]
    wait_for(lambda: len(mailbox.messages) >= len(expected), what="the failure mails")
    for task_id, want in expected.items():
        ti = r.ti(run_id, task_id)
        reason = ti["reason"]
        assert ti["state"] == "failed", (task_id, ti["state"], reason)
        assert _matches(reason, want), (task_id, reason)
        assert "\n" not in reason and "db-secret-4242" not in reason
        assert len(reason) <= 400 and (len(reason) < 400 or reason.endswith("…"))
        assert listed[task_id]["reason"] == reason
        assert f"- {task_id}: finished failed: {reason}\n" in why
        event = (
            f"event=task_ended flow={flow_id} task={task_id} run={run_id} try=1 state=failed "
            f"reason={reason!r}"
        )
        assert event in caplog.messages, (task_id, [m for m in caplog.messages if "ended" in m])
        assert _reason_in_mail(mailbox, flow_id, task_id) == reason


DAEMON_FLOW = """
from cronflow import Flow, Python, SFTPGet, Shell

def parse(context):
    raise RuntimeError("bad header in " + context["ds"])

with Flow("station_day", email_on_failure=["oncall@example.com"]):
    SFTPGet("get", conn_id="offline", remote="/outbox/x.obs", local_dir="{tmp}")
    Python("parse", parse)
    Shell("load", "echo loading; echo 'no such table: readings' >&2; exit 4")
"""


def test_the_daemon_says_why_in_its_events_top_and_mails(home, write_flow, places, daemon):
    write_flow("station_day", DAEMON_FLOW.format(tmp=places["tmp"]))
    process = daemon()
    result = cli(home, "trigger", "station_day", "--date", "2024-03-01", "--wait")
    assert result.returncode == 1, result.stderr
    expected = {
        "get": f"connection 'offline': connection refused by 127.0.0.1:{places['refused']}",
        "parse": "RuntimeError: bad header in 2024-03-01",
        "load": "exit code 4: no such table: readings",
    }
    listed = cli(home, "tasks", "station_day", "--date", "2024-03-01", "--json")
    assert {r["task"]: r["reason"] for r in json.loads(listed.stdout)} == expected
    failures = json.loads(cli(home, "top", "--json").stdout)["failures"]
    assert {r["task_id"]: r["reason"] for r in failures} == expected
    mailbox = places["mailbox"]
    wait_for(lambda: len(mailbox.messages) >= 3, what="the failure mails")
    for task_id, reason in expected.items():
        assert f"task={task_id} run=1 try=1 state=failed reason={reason!r}" in process.output()
        assert _reason_in_mail(mailbox, "station_day", task_id) == reason
    assert "exit code 1" not in process.output()

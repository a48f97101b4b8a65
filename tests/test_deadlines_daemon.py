"""Deadlines end to end: the real daemon, back after a stop, finds the fire times that passed
without a run, sends one failure mail (to a real SMTP server) and calls the flow's on_failure
once, even after another restart; `list`, `why` and `top` (the real command) show the miss."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from conftest import cli, wait_for

from cronflow.store import Store

FLOWS = """
from cronflow import Flow, Shell

def page(context):
    with open("{home}/pages", "a") as out:
        out.write(context["event"] + " " + context["reason"] + "\\n")

with Flow("meteo_ingest"):
    Shell("load", "true")

# it stops firing before the deadline of its last fire time comes: no new deadline falls due
# while the test runs
with Flow("meteo_daily", schedule="*/10 * * * *", start_date="{start}", end_date="{end}",
          deadline="5m",
          wait_for=["meteo_ingest"], email_on_failure=["oncall@example.com"], on_failure=page):
    Shell("report", "true")
"""


def heartbeats_after(home, moment: str) -> bool:
    record = Store(home / "cronflow.db").daemon_record()
    return record is not None and record["heartbeat_at"] > moment


def test_fire_times_missed_while_the_daemon_was_down_alert_once(
    home, write_flow, daemon, smtp_server, tls_cert
):
    (home / "cronflow.toml").write_text(
        f'[smtp]\nhost = "127.0.0.1"\nport = {smtp_server.port}\nuser = "{smtp_server.user}"\n'
        f'password = "{smtp_server.password}"\nfrom = "cronflow@server.example"\n'
        f'ca_file = "{tls_cert.cert}"\n'
    )
    now = datetime.now(UTC)
    start, end = (now - timedelta(days=1)).date(), (now - timedelta(minutes=6)).isoformat()
    write_flow("meteo", FLOWS.format(home=home, start=start, end=end))
    # The daemon last checked this flow's deadlines an hour ago, then stopped.
    Store(home / "cronflow.db").record_deadline_checks(
        {("meteo_daily", ""): now - timedelta(hours=1)}
    )
    first = daemon()
    ((sender, recipients, message),) = smtp_server.box.wait()
    assert (sender, recipients) == ("cronflow@server.example", ["oncall@example.com"])
    assert message["Subject"].startswith("[cronflow] meteo_daily missed its deadline for ")
    body = message.get_body().get_content()
    assert "missed deadline: meteo_daily " in body
    assert "not done 5m after" in body and "(no run: the daemon was not running at " in body
    assert "more fire times missed" in body  # one mail for the whole stop
    assert "cronflow why meteo_daily --date " in body
    wait_for(lambda: (home / "pages").exists(), what="the on_failure callback")
    (page,) = (home / "pages").read_text().splitlines()
    assert page.startswith("deadline_missed missed deadline: meteo_daily ")
    assert "event=deadline_missed flow=meteo_daily" in first.output()
    assert "callback=deadline_missed" in first.output()

    listed = json.loads(cli(home, "list", "--json").stdout)
    (daily,) = [row for row in listed if row["flow_id"] == "meteo_daily"]
    miss = daily["missed_deadline"]
    assert miss is not None and miss["message"].startswith("missed deadline: meteo_daily ")
    why = cli(home, "why", "meteo_daily", "--date", miss["fire_at"])
    assert why.returncode == 0, why.stderr
    assert miss["message"] in why.stdout
    top = json.loads(cli(home, "top", "--json").stdout)
    assert miss["fire_at"] in {m["fire_at"] for m in top["missed_deadlines"]}

    # another restart: the misses were alerted, nothing is sent again
    first.stop()
    second = daemon()
    started = Store(home / "cronflow.db").daemon_record()["heartbeat_at"]
    wait_for(lambda: heartbeats_after(home, started), what="the second daemon's ticks")
    assert "callback=deadline_missed" not in second.output()
    assert len(smtp_server.box.messages) == 1
    assert len((home / "pages").read_text().splitlines()) == 1

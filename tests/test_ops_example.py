"""The worked example (flows/station_day.py) end to end, under the real daemon: the station is
the test sshd, the mail server the test aiosmtpd."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from conftest import cli, wait_for

from cronflow.store import Store

pytestmark = pytest.mark.slow

REPO_FLOWS = Path(__file__).resolve().parent.parent / "flows"


def test_station_day_from_outbox_to_report_and_next_flow(
    home, daemon, sshd, smtp_server, tls_cert, tmp_path, monkeypatch
):
    shutil.copy(REPO_FLOWS / "station_day.py", home / "flows")
    shutil.copytree(REPO_FLOWS / "station_tools", home / "flows" / "station_tools")
    (home / "cronflow.toml").write_text(
        "parallelism = 4\ngrace_period_s = 5\n"
        f'[smtp]\nhost = "127.0.0.1"\nport = {smtp_server.port}\nuser = "{smtp_server.user}"\n'
        f'password_env = "METEO_SMTP_PASSWORD"\nfrom = "cronflow@meteo.example"\n'
        f'ca_file = "{tls_cert.cert}"\n'
    )
    outbox, data = tmp_path / "outbox", tmp_path / "data"
    outbox.mkdir()
    readings = ["time,temp_c,humidity_pct"]
    readings += [f"2024-06-03T{h:02d}:00,{12 + h / 2:.1f},{60 + h}" for h in range(24)]
    readings.append("2024-06-03T24:00,99.0,50")  # the QC drops this one
    (outbox / "readings-20240603.csv").write_text("\n".join(readings) + "\n")
    store = Store(home / "cronflow.db")
    store.set_variable("station_outbox", str(outbox))
    store.set_variable("station_data", str(data))
    store.set_variable("report_to", "meteo-team@example.com")
    monkeypatch.setenv("CRONFLOW_CONN_STATION", sshd.uri().replace("ssh://", "sftp://"))
    monkeypatch.setenv("METEO_SMTP_PASSWORD", smtp_server.password)
    daemon()

    result = cli(home, "trigger", "station_day", "--date", "2024-06-03", "--wait", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    tasks = json.loads(cli(home, "tasks", "station_day", "--date", "2024-06-03", "--json").stdout)
    assert {t["task"]: t["state"] for t in tasks} == {
        "wait_readings": "success",
        "download": "success",
        "quality_check": "success",
        "load": "success",
        "report": "success",
        "publish": "success",
    }
    with sqlite3.connect(data / "meteo.db") as db:
        assert db.execute("SELECT COUNT(*), MAX(temp_c) FROM readings").fetchone() == (24, 23.5)
    qc_log = next((home / "logs" / "station_day" / "quality_check").rglob("try-1.log")).read_text()
    assert "qc-readings: 25 readings, 24 kept, 1 rejected (temperature out of range: 1)" in qc_log

    ((sender, recipients, message),) = smtp_server.box.wait()
    assert (sender, recipients) == ("cronflow@meteo.example", ["meteo-team@example.com"])
    assert message["Subject"] == (
        "Station 12, 2024-06-03: 24 readings, 12.0 to 23.5 degC, mean 17.8 degC"
    )
    (attachment,) = message.iter_attachments()
    assert attachment.get_filename() == "readings-20240603.csv"
    assert attachment.get_content().count("\n") == 25

    def published() -> list[dict]:
        out = cli(home, "tasks", "station_publish", "--date", "2024-06-03", "--json")
        rows = json.loads(out.stdout) if out.returncode == 0 else []
        return [r for r in rows if r["state"] == "success"]

    wait_for(published, what="the triggered station_publish run")
    run = store.runs_between("station_publish", *_day(2024, 6, 3))[0]
    assert store.pull_xcom(run["run_id"], "export") == {
        "day": "2024-06-03",
        "readings": 24,
        "min_c": 12.0,
        "max_c": 23.5,
    }


def _day(year: int, month: int, day: int):  # type: ignore[no-untyped-def]
    from conftest import utc

    return utc(year, month, day - 1), utc(year, month, day + 1)

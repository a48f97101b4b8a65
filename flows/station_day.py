"""A data team's day: last night's readings from weather station 12, from its outbox to a report.

Every morning at 06:15 (Paris):

1. wait_readings  waits until the station has written the day's file in its outbox, looking
                  over SFTP every 10 minutes without holding a slot (reschedule mode), 8 h at most;
2. download       fetches it (SFTP) into the staging area;
3. quality_check  runs the vendor's QC program (station_tools/qc-readings) on it, which drops
                  impossible values and refuses a file with too many;
4. load           loads the clean readings into the team's SQLite database (the day is replaced,
                  so a replay is safe) and returns a one-line summary;
5. report         e-mails that summary with the clean file attached;
6. publish        starts the `station_publish` flow for the same day.

Set up once on the server:

    cronflow conn add station 'sftp://meteo@station-12.example:22?key_file=/etc/cronflow/station.key'
    cronflow var set station_outbox /srv/outbox          # where the station writes, on the station
    cronflow var set station_data /var/lib/meteo         # staging area and database, here
    cronflow var set report_to meteo-team@example.com
    # and an [smtp] section in cronflow.toml for the report and the failure mails

The station's host key must be in ~/.ssh/known_hosts of the daemon's user (or in the file the
connection's `known_hosts` names): check its fingerprint once, then `ssh-keyscan`.
"""

import shlex
import sqlite3
import sys
from pathlib import Path

from cronflow import Email, FileSensor, Flow, Python, SFTPGet, Shell, TriggerFlow

QC_PROGRAM = Path(__file__).resolve().parent / "station_tools" / "qc-readings"
DAY_FILE = "readings-{{ ds_nodash }}.csv"


def load_readings(clean_csv: str, database: str, day: str) -> str:
    """Replace the day's rows in the readings table; a summary line for the report."""
    import csv

    with open(clean_csv, newline="", encoding="utf-8") as handle:
        rows = [
            (day, r["time"], float(r["temp_c"]), float(r["humidity_pct"]))
            for r in csv.DictReader(handle)
        ]
    Path(database).parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(database) as db:
        db.execute(
            """CREATE TABLE IF NOT EXISTS readings (day TEXT NOT NULL, time TEXT NOT NULL,
               temp_c REAL NOT NULL, humidity_pct REAL NOT NULL, PRIMARY KEY (day, time))"""
        )
        db.execute("DELETE FROM readings WHERE day = ?", [day])
        db.executemany("INSERT INTO readings VALUES (?, ?, ?, ?)", rows)
    if not rows:
        return "no readings"
    temps = [r[2] for r in rows]
    print(f"loaded {len(rows)} readings of {day} into {database}")
    return (
        f"{len(rows)} readings, {min(temps):.1f} to {max(temps):.1f} degC, "
        f"mean {sum(temps) / len(temps):.1f} degC"
    )


def export_day(database: str, day: str) -> dict:
    """station_publish: the day's figures, e.g. for the website (here, returned as XCom)."""
    with sqlite3.connect(database) as db:
        count, low, high = db.execute(
            "SELECT COUNT(*), MIN(temp_c), MAX(temp_c) FROM readings WHERE day = ?", [day]
        ).fetchone()
    print(f"publishing {day}: {count} readings, {low}..{high} degC")
    return {"day": day, "readings": count, "min_c": low, "max_c": high}


STAGED = "{{ var.station_data }}/in/{{ ds }}/" + DAY_FILE
CLEAN = "{{ var.station_data }}/clean/" + DAY_FILE
DATABASE = "{{ var.station_data }}/meteo.db"

with Flow(
    "station_day",
    schedule="15 6 * * *",
    timezone="Europe/Paris",
    start_date="2024-01-01",
    catchup=False,
    max_active_runs=3,  # a replay of an earlier day need not wait for today's file
    tags=["meteo", "station-12"],
    doc="Station 12: wait for the night's readings, check, load, report, publish.",
    defaults={"retries": 2, "retry_delay": "10m"},
    email_on_failure=["meteo-oncall@example.com"],
):
    wait = FileSensor(
        "wait_readings",
        "{{ var.station_outbox }}/" + DAY_FILE,
        conn_id="station",
        poke_interval="10m",
        timeout="8h",
        mode="reschedule",
    )
    download = SFTPGet(
        "download",
        conn_id="station",
        remote="{{ var.station_outbox }}/" + DAY_FILE,
        local_dir="{{ var.station_data }}/in/{{ ds }}",
    )
    check = Shell(
        "quality_check",
        f"mkdir -p {{{{ var.station_data }}}}/clean && "
        f"{shlex.quote(sys.executable)} {shlex.quote(str(QC_PROGRAM))} {STAGED} {CLEAN}",
        retries=0,  # a file the QC refuses needs a human, not another try
    )
    load = Python("load", load_readings, args=[CLEAN, DATABASE, "{{ ds }}"])
    report = Email(
        "report",
        to="{{ var.report_to }}",
        subject="Station 12, {{ ds }}: {{ xcom.load }}",
        body=(
            "Readings of {{ ds }} (Europe/Paris) are in {{ var.station_data }}/meteo.db:\n"
            "{{ xcom.load }}.\n\nThe checked readings are attached.\n"
        ),
        attachments=[CLEAN],
    )
    publish = TriggerFlow("publish", "station_publish", conf={"database": DATABASE})
    wait >> download >> check >> load >> report >> publish


with Flow(
    "station_publish", timezone="Europe/Paris", doc="Publish a day of station 12 (triggered)."
):
    Python("export", export_day, args=["{{ conf.database }}", "{{ ds }}"])

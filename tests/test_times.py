"""Times a person reads are in the flow's timezone with their offset (task log lines, `logs`
messages, `top`'s clock); file names stay in UTC."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from zoneinfo import ZoneInfo

from clikit import error
from opskit import Runner

from cronflow.cli.top import clock_text
from cronflow.logs import note_stamp, write_note

KOLKATA = ZoneInfo("Asia/Kolkata")  # +05:30 all year: no DST to make a test depend on the day

TIMED = """
import logging
from cronflow import Flow, Python, Shell

def talk():
    logging.getLogger("meteo").info("hello from python")
    raise RuntimeError("boom")

def page(context):
    logging.getLogger("pager").info("paging")

with Flow("timed", timezone="Asia/Kolkata"):
    Shell("shell", "echo shell ran")
    Python("py", talk, on_failure=page)
"""

STAMP = r"\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+05:30\]"


def test_write_note_stamps_in_the_zone_given() -> None:
    at = datetime(2024, 3, 1, 1, 30, tzinfo=UTC)
    assert note_stamp(at, ZoneInfo("Europe/Paris")) == "2024-03-01T02:30:00.000+01:00"
    assert note_stamp(at, UTC) == "2024-03-01T01:30:00.000+00:00"


def test_write_note_default_is_utc(tmp_path: Path) -> None:
    log = tmp_path / "a" / "try-1.log"
    write_note(log, datetime(2024, 3, 1, 1, 30, tzinfo=UTC), "hello")
    write_note(log, datetime(2024, 3, 1, 1, 30, tzinfo=UTC), "local", KOLKATA)
    assert log.read_text().splitlines() == [
        "[2024-03-01T01:30:00.000+00:00] cronflow: hello",
        "[2024-03-01T07:00:00.000+05:30] cronflow: local",
    ]


def test_task_log_lines_are_in_the_flows_zone_and_names_in_utc(home, write_flow) -> None:
    write_flow("timed", TIMED)
    r = Runner(home)  # the fake clock says 2024-03-02 12:00 UTC
    run_id = r.run("timed", "2024-03-01")  # midnight in Kolkata: 2024-02-29T18:30Z
    r.wait_callbacks()
    assert r.states(run_id) == {"shell": "success", "py": "failed"}
    shell_log = r.ti(run_id, "shell")["log_path"]
    assert shell_log.endswith("/logs/timed/shell/20240229T183000Z/try-1.log")  # UTC name
    lines = Path(shell_log).read_text().splitlines()
    assert lines[0].startswith(
        "[2024-03-02T17:30:00.000+05:30] cronflow: timed.shell for 2024-03-01T00:00:00+05:30, try 1"
    )
    assert lines[1] == "shell ran"
    assert lines[2].startswith("[2024-03-02T17:30:00.000+05:30] cronflow: try 1 ended")
    py_log = r.log(run_id, "py")
    # the worker's and the callback's own lines: the real clock, in the flow's zone too
    assert re.search(STAMP + " INFO meteo: hello from python", py_log), py_log
    assert re.search(STAMP + " cronflow on_failure callback .* done", py_log), py_log
    assert re.search(STAMP + " cronflow paging", py_log), py_log


def test_logs_messages_show_the_logical_date_in_the_flows_zone(home, write_flow) -> None:
    write_flow("timed", TIMED)
    r = Runner(home)
    r.trigger("timed", "2024-03-01")  # the run waits: nothing ticks
    message = error(home, "logs", "timed.py", "--date", "2024-03-01")
    assert message.startswith("timed.py has not run yet in the run of 2024-03-01T00:00:00+05:30")


def test_top_clock_has_its_offset_in_the_flows_shared_zone() -> None:
    now = datetime(2024, 7, 1, 12, 0, 5, tzinfo=UTC)

    def catalog(*zones: str) -> SimpleNamespace:
        rows = {f"f{i}": ZoneInfo(z) for i, z in enumerate(zones)}
        return SimpleNamespace(flows=rows, timezone=rows.__getitem__)

    assert clock_text(catalog("Europe/Paris", "Europe/Paris"), now) == "14:00:05 +02:00"
    assert clock_text(catalog("Asia/Kolkata"), now) == "17:30:05 +05:30"
    mixed = clock_text(catalog("Europe/Paris", "Asia/Kolkata"), now)  # the system's zone
    assert re.fullmatch(r"\d\d:\d\d:05 [+-]\d\d:\d\d", mixed)
    local = now.astimezone()
    assert mixed == f"{local:%H:%M:%S} {local.isoformat()[-6:]}"

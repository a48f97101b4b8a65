"""Faults, each against the real daemon: crashes, full disks, stuck readers, broken inputs."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
from datetime import datetime
from pathlib import Path

import pytest
from conftest import cli, wait_for

from cronflow.store import BUSY_TIMEOUT_S

pytestmark = pytest.mark.slow


def tis(home: Path, flow: str) -> dict[str, dict]:
    result = cli(home, "tasks", flow, "--json")
    assert result.returncode == 0, result.stderr
    return {row["task"]: row for row in json.loads(result.stdout)}


def marked_processes(home: Path) -> dict[int, str]:
    """pid -> CRONFLOW_ATTEMPT marker, for every process of an attempt of this home."""
    needle = f"CRONFLOW_ATTEMPT={home}|".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for value in environ:
            if value.startswith(needle):
                found[int(entry.name)] = value.decode().split("=", 1)[1]
    return found


TWENTY = """
from cronflow import Flow, Shell
# a*: finish while the daemon is down (a5 fails); b*: still run at the restart; c*: killed
# with their supervisor while the daemon is down, so really lost (their second try runs at once)
CODES = {{f"a{{i}}": 3 if i == 5 else 0 for i in range(6)}}
with Flow("twenty", defaults={{"retries": 1, "retry_delay": 0}}):
    for name in [f"a{{i}}" for i in range(6)] + [f"b{{i}}" for i in range(7)] + [f"c{{i}}" for i in range(7)]:
        Shell(
            name,
            "echo $CRONFLOW_TRY_NUMBER >> {runs}/$CRONFLOW_TASK_ID; "
            "[ $CRONFLOW_TRY_NUMBER -gt 1 ] || "
            "while [ ! -e {gates}/{{group}} ]; do sleep 0.2; done; exit {{code}}".format(
                group=name[0], code=CODES.get(name, 0)
            ),
            retries=0 if name == "a5" else 1,
        )
"""


def test_kill_9_with_20_running_tasks_loses_nothing_and_runs_nothing_twice(
    home, daemon, write_flow
):
    (home / "cronflow.toml").write_text("parallelism = 20\n")
    runs, gates = home / "runs", home / "gates"
    runs.mkdir()
    gates.mkdir()
    write_flow("twenty", TWENTY.format(runs=runs, gates=gates))
    first = daemon()
    assert cli(home, "trigger", "twenty").returncode == 0
    wait_for(lambda: len(list(runs.iterdir())) == 20, what="20 running tasks")
    # the tick that started them has recorded them (it commits once they all exist)
    wait_for(
        lambda: all(r["state"] == "running" for r in tis(home, "twenty").values()),
        what="the 20 tries recorded as running",
    )
    first.signal(signal.SIGKILL)
    first.wait()
    logs = home / "logs" / "twenty"

    (gates / "a").touch()  # the a* tasks end while no daemon runs
    records = [next((logs / f"a{i}").iterdir()) / "try-1.status" for i in range(6)]
    wait_for(lambda: all(r.exists() and r.read_text() for r in records), what="a* to end")

    def kill_c() -> bool:
        """c* die with no exit status: supervisor and all, stopped first so none can react."""
        lost = {pid for pid, marker in marked_processes(home).items() if "|c" in marker}
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            for pid in lost:
                with contextlib.suppress(ProcessLookupError):  # a `sleep 0.2` may just end
                    os.kill(pid, sig)
        return not lost

    wait_for(kill_c, what="c* gone")

    second = daemon()
    wait_for(
        lambda: "event=attempts_recovered attempts=20 still_running=7" in second.output(),
        what="the restarted daemon to take the 20 tasks over",
    )
    wait_for(
        lambda: all(
            r["state"] == ("running" if name[0] == "b" else "failed" if name == "a5" else "success")
            for name, r in tis(home, "twenty").items()
        ),
        what="a* settled from their records, c* lost and tried again, b* still running",
    )
    (gates / "b").touch()
    wait_for(
        lambda: all(r["state"] in ("success", "failed") for r in tis(home, "twenty").values()),
        what="b* to end",
    )
    rows = tis(home, "twenty")
    for name, row in rows.items():
        tries = (runs / name).read_text().split()
        if name[0] == "c":
            assert (row["state"], row["try_number"], tries) == ("success", 2, ["1", "2"]), name
            first_try = (next((logs / name).iterdir()) / "try-1.log").read_text()
            assert "lost: the daemon stopped and the task left no exit status" in first_try
        elif name == "a5":
            assert (row["state"], row["try_number"], tries) == ("failed", 1, ["1"])
            assert row["reason"] == "exit code 3"
        else:
            assert (row["state"], row["try_number"], tries) == ("success", 1, ["1"]), name
    wait_for(lambda: not marked_processes(home), what="no process left behind")
    assert not [p for p in logs.rglob("*") if p.suffix in (".status", ".cmd")]
    status = json.loads(cli(home, "status", "--json").stdout)
    assert status["running_tasks"] == 0


def test_no_secret_in_any_command_line_while_tasks_run(home, daemon, write_flow):
    from cronflow.store import Store

    secret = "Sup3r-s3cret-token"
    Store(home / "cronflow.db").set_variable("token", secret, is_secret=True)
    started = home / "started"
    started.mkdir()
    write_flow(
        "argv",
        f"""
        from cronflow import Flow, Python, Shell

        def wait(context):
            import time
            open("{started}/python", "w").close()
            while not __import__("os").path.exists("{home}/release"):
                time.sleep(0.1)

        with Flow("argv"):
            Shell("shell", "echo {{{{ var.token }}}} > /dev/null; touch {started}/shell; "
                           "while [ ! -e {home}/release ]; do sleep 0.1; done",
                  env={{"TOKEN": "{{{{ var.token }}}}"}})
            Shell("sub", "sleep 30 & touch {started}/sub; echo {{{{ var.token }}}} | cat; "
                         "while [ ! -e {home}/release ]; do sleep 0.1; done")
            Python("python", wait)
    """,
    )
    daemon()
    assert cli(home, "trigger", "argv").returncode == 0
    wait_for(lambda: len(list(started.iterdir())) == 3, what="the three tasks to run")
    attempts = marked_processes(home)
    assert len(attempts) >= 6  # supervisors, masking filters, shells, the worker, children
    seen = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        seen.append(cmdline)
        assert secret.encode() not in cmdline, (entry.name, cmdline)
    assert any(b"cronflow.masking" in c for c in seen)  # the filter ran, and was looked at
    (home / "release").touch()
    wait_for(
        lambda: all(r["state"] == "success" for r in tis(home, "argv").values()),
        what="the tasks to end",
    )
    assert not [p for p in (home / "logs").rglob("*") if p.suffix in (".status", ".cmd")]


def test_a_long_cli_read_transaction_does_not_stall_the_daemon(home, daemon, write_flow):
    write_flow(
        "quick",
        """
        from cronflow import Flow, Shell
        with Flow("quick"):
            a = Shell("a", "true")
            b = Shell("b", "true")
            a >> b
    """,
    )
    daemon()
    reader = sqlite3.connect(home / "cronflow.db")
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM task_instances").fetchall()  # holds a read snapshot
    try:
        result = cli(home, "trigger", "quick", "--wait")
        assert result.returncode == 0, result.stderr
        with sqlite3.connect(home / "cronflow.db") as db:
            created, a_start, a_end, b_start = db.execute(
                """SELECT r.created_at, a.start_at, a.end_at, b.start_at FROM runs r
                   JOIN task_instances a ON a.run_id = r.run_id AND a.task_id = 'a'
                   JOIN task_instances b ON b.run_id = r.run_id AND b.task_id = 'b'"""
            ).fetchone()
    finally:
        reader.rollback()
        reader.close()
    # The stall is seen, not only survived: a writer blocked by the reader waits out the busy
    # timeout (30 s) at each write, while the daemon's own steps take milliseconds; the bound
    # tells those apart, it measures no speed (half the busy timeout: room for a loaded machine).
    stamps = [datetime.fromisoformat(t) for t in (created, a_start, a_end, b_start)]
    steps = {
        "run created -> a started": stamps[1] - stamps[0],
        "a ended -> b started": stamps[3] - stamps[2],
    }
    assert all(step.total_seconds() < BUSY_TIMEOUT_S / 2 for step in steps.values()), steps


def test_a_full_disk_for_one_log_fails_that_task_not_the_daemon(home, daemon, write_flow):
    write_flow(
        "full",
        """
        from cronflow import Flow, Shell
        with Flow("full"):
            Shell("t", "echo hello")
    """,
    )
    write_flow(
        "fine",
        """
        from cronflow import Flow, Shell
        with Flow("fine"):
            Shell("t", "echo fine")
    """,
    )
    process = daemon()
    # The first try's log is /dev/full: every write to it fails with ENOSPC, as on a full disk.
    log_dir = home / "logs" / "full" / "t" / "20240301T000000Z"
    log_dir.mkdir(parents=True)
    (log_dir / "try-1.log").symlink_to("/dev/full")
    assert (
        cli(home, "trigger", "full", "--date", "2024-03-01T00:00:00+00:00", "--wait").returncode
        == 1
    )
    row = tis(home, "full")["t"]
    assert row["state"] == "failed"
    assert row["reason"] == (
        f"cannot start: cannot write the task log {log_dir / 'try-1.log'}: No space left on device"
    )
    assert process.proc.poll() is None
    assert "event=log_write_failed" in process.output()
    assert cli(home, "trigger", "fine", "--wait").returncode == 0


def test_broken_flow_files_are_isolated(home, daemon, write_flow):
    (home / "cronflow.toml").write_text("import_timeout_s = 2\n")
    write_flow("syntax", "from cronflow import Flow\nFlow('syntax'\n")
    write_flow("hangs", "import time\ntime.sleep(3600)\n")
    write_flow(
        "chatty",
        "import sys\nsys.stdout.write('x' * 5_000_000)\nprint('y' * 1000, file=sys.stderr)\n"
        "from cronflow import Flow, Shell\nwith Flow('chatty'):\n    Shell('t', 'true')\n",
    )
    write_flow(
        "good",
        """
        from cronflow import Flow, Shell
        with Flow("good"):
            Shell("t", "true")
    """,
    )
    daemon()
    assert cli(home, "trigger", "good", "--wait").returncode == 0
    assert cli(home, "trigger", "chatty", "--wait").returncode == 0
    listing = json.loads(cli(home, "list", "--json").stdout)
    errors = {Path(r["path"]).name: r["error"] for r in listing if r.get("error")}
    assert set(errors) == {"syntax.py", "hangs.py"}
    assert "syntax.py: line 2: SyntaxError" in errors["syntax.py"]
    assert "did not finish within 2s" in errors["hangs.py"]


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ("parallelism = [", "cronflow.toml: invalid TOML"),
        ("parallelism = 'four'", "cronflow.toml: parallelism must be int"),
        (None, "cronflow.toml: cannot read"),  # a directory where the file should be
    ],
)
def test_a_corrupt_or_unreadable_config_stops_the_daemon_with_one_line(home, config, expected):
    path = home / "cronflow.toml"
    path.unlink()
    if config is None:
        path.mkdir()
    else:
        path.write_text(config)
    result = cli(home, "daemon", timeout=30)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and expected in lines[0]


def test_files_are_private_and_secrets_stay_out_of_the_daemon_log(home, daemon, write_flow):
    from cronflow.store import Store

    Store(home / "cronflow.db").set_variable("token", "s3cr3t-value", is_secret=True)
    write_flow(
        "secret",
        f"""
        from cronflow import Flow, Shell
        with Flow("secret"):
            Shell("t", "echo {{{{ var.token }}}} > {home}/out.txt")
    """,
    )
    process = daemon()
    assert cli(home, "trigger", "secret", "--wait").returncode == 0
    assert (home / "out.txt").read_text().strip() == "s3cr3t-value"
    process.stop()
    assert "s3cr3t-value" not in process.output()
    for path in [home / "cronflow.db", *home.joinpath("logs").rglob("*.log")]:
        assert os.stat(path).st_mode & 0o077 == 0, path
    for path in home.joinpath("logs").rglob("*"):
        if path.is_dir():
            assert os.stat(path).st_mode & 0o077 == 0, path

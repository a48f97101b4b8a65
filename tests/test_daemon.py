"""End to end: the real daemon as a process on a temp home, driven through the real CLI."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import cli, is_alive, wait_for

pytestmark = pytest.mark.slow

MIXED_FLOW = """
from cronflow import Flow, Python, Shell

def measure(path, context):
    print("measuring", path, "for", context["ds"])
    return {{"ds": context["ds"], "size": len(path)}}

with Flow("mixed", defaults={{"retry_delay": 0}}):
    flaky = Shell("flaky", "test -f {flag} || {{ touch {flag}; echo first try fails; exit 1; }}", retries=1)
    doomed = Shell("doomed", "echo broken >&2; exit 7")
    never = Shell("never", "echo never")
    slow = Shell("slow", "sleep 60", timeout=0.5)
    py = Python("py", measure, args=["/data/{{{{ ds }}}}.csv"])
    flaky >> py
    doomed >> never
"""


def tasks_json(home: Path, flow: str, *extra: str) -> dict[str, dict]:
    result = cli(home, "tasks", flow, "--json", *extra)
    assert result.returncode == 0, result.stderr
    return {row["task"]: row for row in json.loads(result.stdout)}


def test_flow_with_retry_failure_timeout_and_python_task(home, daemon, write_flow):
    write_flow("mixed", MIXED_FLOW.format(flag=home / "flag"))
    daemon()
    result = cli(home, "trigger", "mixed", "--date", "2024-03-01", "--wait")
    assert result.returncode == 1, result.stderr  # the run failed: doomed failed for good
    assert "run 1 of mixed for 2024-03-01T00:00:00+00:00 queued" in result.stdout
    rows = tasks_json(home, "mixed", "--date", "2024-03-01")
    assert {t: (r["state"], r["try_number"]) for t, r in rows.items()} == {
        "flaky": ("success", 2),
        "doomed": ("failed", 1),
        "never": ("upstream_failed", 0),
        "slow": ("failed", 1),
        "py": ("success", 1),
    }
    assert rows["slow"]["reason"] == "timed out after 0.5s"
    assert rows["doomed"]["reason"] == "exit code 7: broken"  # and the last line it wrote
    for row in rows.values():
        assert row["logical_date"] == "2024-03-01T00:00:00+00:00"
        assert row["flow"] == "mixed"
    logs = home / "logs" / "mixed"
    assert "first try fails" in (logs / "flaky" / "20240301T000000Z" / "try-1.log").read_text()
    assert "broken" in (logs / "doomed" / "20240301T000000Z" / "try-1.log").read_text()
    py_log = (logs / "py" / "20240301T000000Z" / "try-1.log").read_text()
    assert "measuring /data/2024-03-01.csv for 2024-03-01" in py_log
    from cronflow.store import Store

    store = Store(home / "cronflow.db")
    assert store.pull_xcom(1, "py") == {"ds": "2024-03-01", "size": 20}


@contextmanager
def daemon_started(
    home: Path, extra_env: dict[str, str] | None = None, **popen: Any
) -> Iterator[None]:
    """The real daemon on `home`, started as a parent process would start it (`popen`: the
    umask, working directory or descriptors that parent gives it, `extra_env` what it adds to
    the environment); stopped on leaving."""
    env = {**os.environ, "CRONFLOW_HOME": str(home), **(extra_env or {})}
    with open(home / "daemon.out", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "cronflow", "daemon"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            **popen,
        )
    try:
        wait_for(lambda: "event=daemon_started" in (home / "daemon.out").read_text(), what="start")
        yield
    finally:
        process.terminate()
        process.wait(30)


def test_tasks_get_none_of_the_descriptors_the_daemon_was_started_with(home, write_flow):
    """A daemon started with an open pipe (a shell's, a CI runner's) must not hand it on: a
    reader of that pipe would wait for every task that held it."""
    fds = home / "fds"
    write_flow(
        "fds",
        f'from cronflow import Flow, Shell\nwith Flow("fds"):\n    Shell("t", "ls /proc/$$/fd > {fds}")\n',
    )
    read_end, write_end = os.pipe()
    try:
        with daemon_started(home, pass_fds=[write_end]):
            os.close(write_end)
            assert cli(home, "trigger", "fds", "--wait").returncode == 0
        assert sorted(int(fd) for fd in fds.read_text().split()) == [0, 1, 2, 255]
    finally:
        os.close(read_end)


ENV_FLOW = """
import os
from cronflow import Flow, Python, Shell

def seen(context):
    open("{out}/python.env", "w").write("\\n".join(sorted(os.environ)))

with Flow("env"):
    Shell("shell", "env | cut -d= -f1 | sort > {out}/shell.env") >> Python("python", seen)
"""


def test_tasks_get_none_of_what_systemd_gives_the_daemon_alone(home, write_flow):
    """systemd's notification socket and watchdog are the daemon's: a task that speaks
    sd_notify must not write to the daemon's socket or think it has a watchdog."""
    out = home / "out"
    out.mkdir()
    write_flow("env", ENV_FLOW.format(out=out))
    service = {"NOTIFY_SOCKET": str(home / "no-such-socket"), "WATCHDOG_USEC": "60000000"}
    with daemon_started(home, extra_env=service):
        assert cli(home, "trigger", "env", "--wait").returncode == 0
    for name in ("shell.env", "python.env"):
        names = set((out / name).read_text().split())
        assert "CRONFLOW_HOME" in names and "PATH" in names
        assert not names & {"NOTIFY_SOCKET", "WATCHDOG_USEC"}, name


UMASK_FLOW = """
from cronflow import Flow, Python, Shell

def write(context):
    open("{out}/python.file", "w").close()

with Flow("modes"):
    Shell("shell", "touch {out}/shell.file; mkdir {out}/shell.dir") >> Python("python", write)
"""


def test_tasks_start_with_the_task_umask_not_the_daemons(home, write_flow):
    """Under systemd the daemon runs with UMask=0077; its tasks create files as under cron
    (umask 022, or cronflow.toml's task_umask), shell and warm Python tasks alike."""
    out = home / "out"
    out.mkdir()
    write_flow("modes", UMASK_FLOW.format(out=out))
    with daemon_started(home, umask=0o077):
        assert cli(home, "trigger", "modes", "--wait").returncode == 0
    modes = {path.name: path.stat().st_mode & 0o777 for path in out.iterdir()}
    assert modes == {"shell.file": 0o644, "shell.dir": 0o755, "python.file": 0o644}
    assert (home / "cronflow.db").stat().st_mode & 0o077 == 0  # the daemon's own stay private

    # `cronflow test` runs them as the daemon does, with the home's task_umask
    for path in out.iterdir():
        path.rmdir() if path.is_dir() else path.unlink()
    config = home / "cronflow.toml"
    config.write_text('task_umask = "027"\n' + config.read_text())
    assert cli(home, "test", "modes").returncode == 0
    modes = {path.name: path.stat().st_mode & 0o777 for path in out.iterdir()}
    assert modes == {"shell.file": 0o640, "shell.dir": 0o750, "python.file": 0o640}


CWD_FLOW = """
import os
from cronflow import Flow, Python, Shell

def where(context):
    open("{out}/python.cwd", "w").write(os.getcwd())

with Flow("where"):
    Shell("shell", "pwd > {out}/shell.cwd") >> Python("python", where)
"""


def test_tasks_without_cwd_run_in_the_home_wherever_the_daemon_started(home, write_flow, tmp_path):
    """As under the systemd unit (WorkingDirectory= the home): a relative path in a flow means
    the same whether the daemon was started by hand, from anywhere, or as a service."""
    out, elsewhere = home / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    write_flow("where", CWD_FLOW.format(out=out))
    with daemon_started(home, cwd=elsewhere):
        assert cli(home, "trigger", "where", "--wait").returncode == 0
    assert (out / "shell.cwd").read_text().strip() == str(home)
    assert (out / "python.cwd").read_text() == str(home)
    for path in out.iterdir():
        path.unlink()
    test = subprocess.run(
        [sys.executable, "-m", "cronflow", "test", "where"],
        cwd=elsewhere,
        env={**os.environ, "CRONFLOW_HOME": str(home)},
        capture_output=True,
        text=True,
    )
    assert test.returncode == 0, test.stdout + test.stderr
    assert (out / "shell.cwd").read_text().strip() == str(home)
    assert (out / "python.cwd").read_text() == str(home)


def test_parallelism_is_honoured(home, daemon, write_flow):
    (home / "cronflow.toml").write_text("parallelism = 2\n")
    out = home / "events.txt"
    # Each task stays until another one runs beside it (or all six have started), so the peak
    # does not depend on how fast the machine is; 30 s bounds the wait if parallelism is 1.
    overlap = (
        f"echo start >> {out}; "
        f"for _ in $(seq 300); do s=$(grep -c start {out}); e=$(grep -c end {out}); "
        f'[ $((s - e)) -ge 2 ] || [ "$s" -ge 6 ] && break; sleep 0.1; done; '
        f"echo end >> {out}"
    )
    write_flow(
        "wide",
        f"""
        from cronflow import Flow, Shell
        with Flow("wide"):
            for i in range(6):
                Shell(f"t{{i}}", {overlap!r})
    """,
    )
    daemon()
    assert cli(home, "trigger", "wide", "--wait").returncode == 0
    running = peak = 0
    for event in out.read_text().split():
        running += 1 if event == "start" else -1
        peak = max(peak, running)
    assert peak == 2


ORPHAN_FLOW = """
from cronflow import Flow, Shell
with Flow("orphan", defaults={{"retry_delay": 0}}):
    Shell("long", "echo $$ >> {runs}; while [ ! -e {gate} ]; do sleep 0.1; done; echo finished",
          retries=1, timeout=600)
"""


def test_kill_9_mid_run_then_restart_adopts_the_running_task(home, daemon, write_flow):
    runs, gate = home / "runs", home / "gate"
    write_flow("orphan", ORPHAN_FLOW.format(runs=runs, gate=gate))
    first = daemon()
    assert cli(home, "trigger", "orphan").returncode == 0
    wait_for(lambda: runs.exists() and runs.read_text().strip(), what="the task to start")
    task_pid = int(runs.read_text())
    first.signal(signal.SIGKILL)
    first.wait()
    assert is_alive(task_pid)  # the task outlived the daemon
    second = daemon()
    wait_for(
        lambda: "event=attempts_recovered attempts=1 still_running=1" in second.output(),
        what="the restarted daemon to take the task over",
    )
    assert is_alive(task_pid)  # adopted, not killed
    assert tasks_json(home, "orphan")["long"]["state"] == "running"
    gate.touch()
    wait_for(lambda: tasks_json(home, "orphan")["long"]["state"] == "success", what="its end")
    row = tasks_json(home, "orphan")["long"]
    assert row["try_number"] == 1
    assert runs.read_text().split() == [str(task_pid)]  # it ran once
    log = next((home / "logs" / "orphan" / "long").iterdir()) / "try-1.log"
    assert log.read_text().count("finished") == 1
    assert "try 1 ended after" in log.read_text()


def test_a_tasks_background_children_are_stopped_when_it_ends_unless_kept(home, daemon, write_flow):
    stopped, kept = home / "stopped.pid", home / "kept.pid"
    write_flow(
        "bg",
        f"""
        from cronflow import Flow, Shell
        with Flow("bg"):
            Shell("stops", "sleep 300 & echo $! > {stopped}")
            Shell("keeps", "sleep 300 & echo $! > {kept}", keep_background=True)
    """,
    )
    daemon()
    assert cli(home, "trigger", "bg", "--wait").returncode == 0
    kept_pid = int(kept.read_text())
    try:
        wait_for(lambda: not is_alive(int(stopped.read_text())), what="the child to be stopped")
        assert is_alive(kept_pid)
        logs = home / "logs" / "bg"
        stops_log = next((logs / "stops").iterdir()) / "try-1.log"
        keeps_log = next((logs / "keeps").iterdir()) / "try-1.log"
        assert "cronflow: stopped 1 process the task left behind" in stops_log.read_text()
        assert "cronflow: 1 process left running (keep_background)" in keeps_log.read_text()
    finally:
        os.kill(kept_pid, signal.SIGKILL)


def test_a_clean_stop_ends_what_a_task_left_outside_its_session(home, daemon, write_flow):
    """Under systemd's KillMode=process the daemon is the one that ends such a process."""
    pidfile = home / "escaped.pid"
    write_flow(
        "escape",
        f"""
        from cronflow import Flow, Shell
        with Flow("escape"):
            # ends once the child has its own session (else the end of the task stops it)
            Shell("t", 'setsid sleep 300 & echo $! > {pidfile}; '
                       'until [ $(cut -d" " -f6 /proc/$!/stat) = $! ]; do sleep 0.01; done')
    """,
    )
    process = daemon()
    assert cli(home, "trigger", "escape", "--wait").returncode == 0
    escaped = int(pidfile.read_text())
    try:
        assert is_alive(escaped)  # not in the task's session: not stopped when it ended
        process.stop()
        assert not is_alive(escaped)
        assert "event=stray_processes_killed count=1" in process.output()
    finally:
        if is_alive(escaped):
            os.kill(escaped, signal.SIGKILL)


def test_second_daemon_on_the_same_home_is_refused(home, daemon):
    first = daemon()
    result = cli(home, "daemon", timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"Error: another cronflow daemon (pid {first.proc.pid}) is already running on {home}"
    )


def test_sigterm_lets_short_tasks_finish_and_gives_long_ones_back(home, daemon, write_flow):
    (home / "cronflow.toml").write_text("grace_period_s = 1.5\n")
    started = home / "started"
    write_flow(
        "stop",
        f"""
        from cronflow import Flow, Shell
        with Flow("stop"):
            Shell("short", "touch {started}-short; sleep 0.5; echo done")
            Shell("long", "touch {started}-long; sleep 600")
    """,
    )
    process = daemon()
    assert cli(home, "trigger", "stop").returncode == 0
    wait_for(
        lambda: Path(f"{started}-short").exists() and Path(f"{started}-long").exists(),
        what="both tasks to start",
    )
    process.signal(signal.SIGTERM)
    assert process.wait(30) == 0
    rows = tasks_json(home, "stop")
    assert rows["short"]["state"] == "success"
    assert rows["long"]["state"] == "up_for_retry"
    assert rows["long"]["max_tries"] == 2  # the interrupted try is given back
    assert "event=daemon_stopped" in process.output()
    # Started again, the daemon runs the interrupted task again at once.
    (home / "cronflow.toml").write_text("grace_period_s = 1\n")
    daemon()
    wait_for(lambda: tasks_json(home, "stop")["long"]["try_number"] == 2, what="the second try")


LATE_FLOW = """
from cronflow import Flow, Shell
with Flow("late", schedule="0 0 * * *", start_date="2024-01-01"):
    Shell("t", "echo {word}")
"""


def test_daemon_picks_up_new_and_changed_flow_files(home, daemon, write_flow):
    process = daemon()
    path = write_flow("late", LATE_FLOW.format(word="v1"))
    # No command runs before the daemon has loaded the file: commands import files too.
    loaded = f"event=flow_file_loaded path={path} flows=late"
    wait_for(lambda: process.output().count(loaded) == 1, what="the daemon to load the new file")
    wait_for(lambda: tasks_json(home, "late")["t"]["state"] == "success", what="its first run")
    assert "v1" in cli(home, "logs", "late.t").stdout
    write_flow("late", LATE_FLOW.format(word="v2"))  # changed under the running daemon
    wait_for(lambda: process.output().count(loaded) == 2, what="the daemon to load the change")
    with sqlite3.connect(home / "cronflow.db") as db:
        [spec] = db.execute("SELECT spec FROM flows WHERE flow_id = 'late'").fetchone()
    assert json.loads(spec)["tasks"][0]["op"]["command"] == "echo v2"
    result = cli(home, "trigger", "late", "--date", "2024-03-01", "--wait")
    assert result.returncode == 0, result.stderr
    second_log = cli(home, "logs", "late.t", "--date", "2024-03-01").stdout
    assert "v2" in second_log and "v1" not in second_log


def test_broken_flow_file_does_not_stop_the_others(home, daemon, write_flow):
    write_flow("broken", "from cronflow import Flow\nFlow('broken', schedule='61 * * * *')\n")
    write_flow(
        "fine",
        """
        from cronflow import Flow, Shell
        with Flow("fine"):
            Shell("t", "true")
    """,
    )
    daemon()
    assert cli(home, "trigger", "fine", "--wait").returncode == 0
    listing = cli(home, "list").stdout.splitlines()
    assert "BROKEN" in listing[1] and "broken.py" in listing[1]
    result = cli(home, "trigger", "broken")
    assert result.returncode == 2
    assert result.stderr.startswith("Error: flow 'broken' failed to load:")


def test_daemon_output_is_one_line_per_event(home, daemon, write_flow):
    write_flow(
        "one",
        """
        from cronflow import Flow, Shell
        with Flow("one"):
            Shell("t", "true")
    """,
    )
    process = daemon()
    assert cli(home, "trigger", "one", "--wait").returncode == 0
    process.stop()
    for line in process.output().splitlines():
        assert " level=" in line and " event=" in line, line
    assert os.stat(home / "cronflow.db").st_mode & 0o077 == 0

"""Warm Python attempts (cronflow.forkserver), against the real daemon: each attempt is still its
own process tree (session, group, environment, log, timeout), a crash or a leak in one touches no
other, a daemon killed with -9 leaves them to the next one, and the cold start takes over
whenever the fork server is gone or stale."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from conftest import cli, is_alive, wait_for

from cronflow import forkserver, zygote
from cronflow.config import load_settings
from cronflow.errors import ConfigError
from cronflow.store import Store

pytestmark = pytest.mark.slow

# A task that says how it was started: its supervisor, that one's parent (the fork server when
# warm), its session and group, its marker, and whether it sees what an earlier task left.
PROBE = """
import os, sys
from cronflow import Flow, Python

def _cmdline(pid):
    return open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\\0", b" ").decode()

def _parent(pid):
    return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])

def _fds():
    found = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            found[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the listing's own
            pass
    return found

def probe():
    supervisor = os.getppid()
    return {
        "pid": os.getpid(),
        "supervisor": supervisor,
        "supervisor_cmdline": _cmdline(supervisor),
        "server": _parent(supervisor),
        "warm": "cronflow.zygote" in _cmdline(supervisor),
        "sid": os.getsid(0),
        "pgid": os.getpgid(0),
        "marker": os.environ.get("CRONFLOW_ATTEMPT"),
        "status_file": os.environ.get("CRONFLOW_STATUS_FILE"),
        "argv0": sys.argv[0],
        "fds": _fds(),
        "leaked": ["leaky" in sys.modules, hasattr(sys.modules["cronflow"], "LEAKED"),
                   "LEAKED" in os.environ],
    }
"""


def configure(home: Path, line: str) -> None:
    """Add a top-level key to the home's cronflow.toml (before its tables)."""
    config = home / "cronflow.toml"
    config.write_text(line + "\n" + config.read_text())


def flow(write_flow, name: str, body: str) -> None:
    write_flow(name, PROBE + body)


def run(home: Path, name: str) -> int:
    """Trigger a run of `name`, wait for its end; its run id."""
    result = cli(home, "trigger", name, "--wait")
    assert "queued" in result.stdout, result.stdout + result.stderr
    return int(result.stdout.split()[1])


def xcom(home: Path, run_id: int, task_id: str) -> Any:
    store = Store(home / "cronflow.db")
    try:
        return store.pull_xcom(run_id, task_id)
    finally:
        store.close()


def tis(home: Path, name: str) -> dict[str, dict[str, Any]]:
    result = cli(home, "tasks", name, "--json")
    return {row["task"]: row for row in json.loads(result.stdout)}


def warm_up(home: Path, write_flow) -> dict[str, Any]:
    """Run a probe until it runs warm (the first Python attempt starts the server and runs
    cold); what the warm one saw."""
    flow(write_flow, "probe", 'with Flow("probe"):\n    Python("probe", probe)\n')

    def warm() -> dict[str, Any] | None:
        seen = xcom(home, run(home, "probe"), "probe")
        return seen if seen["warm"] else None

    return wait_for(warm, what="a Python task started warm")  # type: ignore[return-value]


def test_a_warm_task_is_its_own_session_and_sees_nothing_an_earlier_one_left(
    home, daemon, write_flow
):
    daemon()
    warm_up(home, write_flow)
    flow(
        write_flow,
        "iso",
        """
def leak():
    import cronflow
    sys.modules["leaky"] = sys
    cronflow.LEAKED = True
    os.environ["LEAKED"] = "1"
    print("leaking")
    return probe()

with Flow("iso"):
    Python("leak", leak) >> Python("after", probe)
""",
    )
    run_id = run(home, "iso")
    leak, after = xcom(home, run_id, "leak"), xcom(home, run_id, "after")
    assert leak["warm"] and after["warm"]
    assert after["leaked"] == [False, False, False]  # the first task's changes died with it
    assert leak["server"] == after["server"]  # one server forked both
    assert "cronflow.zygote" in Path(f"/proc/{after['server']}/cmdline").read_text()
    for seen, task in ((leak, "leak"), (after, "after")):
        # the supervisor leads the attempt's session and group; the task is in both
        assert seen["sid"] == seen["pgid"] == seen["supervisor"] != seen["pid"]
        assert seen["marker"] == f"{home}|{run_id}|{task}|1"
        assert f"/iso/{task}/" in seen["status_file"]
        assert seen["status_file"].endswith("/try-1.status")
        assert seen["argv0"].endswith("cronflow/worker.py")
        # its own log on 1 and 2; nothing of the server's (its socket, the daemon's pidfd)
        log = str(next((home / "logs" / "iso" / task).rglob("try-1.log")))
        assert seen["fds"]["1"] == seen["fds"]["2"] == log
        assert seen["fds"]["0"] == "/dev/null"
        server_fds = [t for t in seen["fds"].values() if "socket:" in t or "pidfd" in t]
        assert not server_fds, seen["fds"]
    rows = tis(home, "iso")
    assert [rows[t]["state"] for t in ("leak", "after")] == ["success", "success"]
    log = next((home / "logs" / "iso" / "leak").rglob("try-1.log")).read_text()
    assert "leaking" in log and "ended after" in log
    leftovers = [p for p in (home / "logs").rglob("*") if p.suffix in (".status", ".pid", ".cmd")]
    assert not leftovers


def test_a_timeout_kills_a_warm_task_and_everything_it_started(home, daemon, write_flow):
    pids = home / "pids"
    daemon()
    server = warm_up(home, write_flow)["server"]
    flow(
        write_flow,
        "slow",
        f"""
import subprocess, time

def slow():
    exec_child = subprocess.Popen(["sleep", "300"]).pid  # exec'd: carries the marker
    fork_child = os.fork()  # not exec'd: only its process group tells it is the task's
    if fork_child == 0:
        time.sleep(300)
        os._exit(0)
    with open("{pids}", "w") as out:
        out.write(f"{{os.getpid()}} {{exec_child}} {{fork_child}} {{os.getppid()}}")
    time.sleep(300)

with Flow("slow"):
    Python("slow", slow, timeout=1)
""",
    )
    run(home, "slow")
    row = tis(home, "slow")["slow"]
    assert (row["state"], row["reason"]) == ("failed", "timed out after 1s")
    task, exec_child, fork_child, supervisor = map(int, pids.read_text().split())
    assert "cronflow.zygote" in Path(f"/proc/{server}/cmdline").read_text()  # it was warm
    for pid in (task, exec_child, fork_child, supervisor):
        wait_for(lambda pid=pid: not is_alive(pid), what=f"process {pid} to be killed")
    assert is_alive(server)  # the server is untouched by the attempt's end


@pytest.mark.parametrize(
    ("crash", "code"),
    [("os.kill(os.getpid(), signal.SIGSEGV)", 139), ("os._exit(3)", 3)],
)
def test_a_crashing_warm_task_touches_neither_the_server_nor_another_task(
    home, daemon, write_flow, crash, code
):
    daemon()
    server = warm_up(home, write_flow)["server"]
    flow(
        write_flow,
        "crash",
        f"""
import signal, time

def crash():
    time.sleep(0.2)
    {crash}

def calm():
    time.sleep(0.5)
    return probe()

with Flow("crash"):
    Python("crash", crash)
    Python("calm", calm)
""",
    )
    run_id = run(home, "crash")
    rows = tis(home, "crash")
    assert rows["crash"]["state"] == "failed"
    store = Store(home / "cronflow.db")
    assert store.ti(run_id, "crash")["exit_code"] == code  # as a cold start records it
    store.close()
    assert rows["calm"]["state"] == "success"
    assert xcom(home, run_id, "calm")["server"] == server
    assert is_alive(server)
    assert warm_up(home, write_flow)["server"] == server  # and it still serves


def test_kill_9_of_the_daemon_leaves_a_warm_task_running_for_the_next_daemon(
    home, daemon, write_flow
):
    gate, ran, started = home / "gate", home / "ran", home / "started"
    first = daemon()
    server = warm_up(home, write_flow)["server"]
    flow(
        write_flow,
        "long",
        f"""
import time

def long():
    with open("{ran}", "a") as out:
        out.write("ran\\n")
    with open("{started}", "w") as out:
        out.write(f"{{os.getpid()}} {{os.getppid()}}")
    while not os.path.exists("{gate}"):
        time.sleep(0.05)
    return "done"

with Flow("long"):
    Python("long", long)
""",
    )
    assert cli(home, "trigger", "long").returncode == 0
    wait_for(started.exists, what="the task to start")
    wait_for(lambda: tis(home, "long")["long"]["state"] == "running", what="its try recorded")
    task, supervisor = map(int, started.read_text().split())
    assert f"{server}" == Path(f"/proc/{supervisor}/stat").read_text().rsplit(")", 1)[1].split()[1]
    first.signal(signal.SIGKILL)
    first.wait()
    wait_for(lambda: not is_alive(server), what="the fork server to exit with its daemon")
    assert is_alive(task) and is_alive(supervisor)  # the attempt runs on
    second = daemon()
    wait_for(
        lambda: "event=attempts_recovered attempts=1 still_running=1" in second.output(),
        what="the restarted daemon to adopt the warm task",
    )
    gate.touch()
    wait_for(lambda: tis(home, "long")["long"]["state"] == "success", what="its end recorded")
    row = tis(home, "long")["long"]
    assert row["try_number"] == 1
    assert ran.read_text() == "ran\n"  # ran once
    assert xcom(home, _last_run(home, "long"), "long") == "done"
    assert "lost" not in (row["reason"] or "")


def test_a_killed_fork_server_means_a_cold_start_then_a_new_server(home, daemon, write_flow):
    started = daemon()
    server = warm_up(home, write_flow)["server"]
    os.kill(server, signal.SIGKILL)
    wait_for(lambda: not is_alive(server), what="the server to die")
    cold = xcom(home, run(home, "probe"), "probe")
    assert not cold["warm"]
    assert "cronflow-supervisor" in cold["supervisor_cmdline"]  # the sh supervisor: cold
    assert cold["sid"] == cold["pgid"] == cold["supervisor"]
    again = warm_up(home, write_flow)
    assert again["server"] != server
    assert "event=forkserver_gone" in started.output()


def test_a_changed_library_restarts_the_fork_server(
    home, daemon, write_flow, tmp_path, monkeypatch
):
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "warmlib.py").write_text("VERSION = 1\n")
    monkeypatch.setenv("PYTHONPATH", str(lib))
    configure(home, 'warm_imports = ["warmlib"]')
    daemon()
    flow(
        write_flow,
        "version",
        """
def version():
    import warmlib
    return {"version": warmlib.VERSION, **probe()}

with Flow("version"):
    Python("version", version)
""",
    )
    warm_up(home, write_flow)
    before = xcom(home, run(home, "version"), "version")
    assert (before["warm"], before["version"]) == (True, 1)
    (lib / "warmlib.py").write_text("VERSION = 2  # changed\n")
    after = xcom(home, run(home, "version"), "version")
    assert after["version"] == 2  # never the stale module
    assert not after["warm"]  # the stale server refused it: started cold
    renewed = wait_for(
        lambda: (seen := xcom(home, run(home, "version"), "version"))["warm"] and seen,
        what="a new server",
    )
    assert renewed["version"] == 2 and renewed["server"] != before["server"]


def test_an_import_that_starts_a_thread_keeps_the_server_from_forking(
    home, daemon, write_flow, tmp_path, monkeypatch
):
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "threadlib.py").write_text(
        "import threading, time\n"
        "threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(lib))
    configure(home, 'warm_imports = ["threadlib"]')
    started = daemon()
    flow(write_flow, "probe", 'with Flow("probe"):\n    Python("probe", probe)\n')
    for _ in range(3):  # the first starts the server, which refuses to serve
        assert not xcom(home, run(home, "probe"), "probe")["warm"]
    wait_for(
        lambda: "not started: an import started 1 thread(s)" in started.output(),
        what="the server to say why it does not serve",
    )
    assert "event=forkserver_gone" in started.output()


def test_secrets_stay_out_of_command_lines_and_logs_of_warm_tasks(home, daemon, write_flow):
    secret = "Sup3r-s3cret-warm"
    Store(home / "cronflow.db").set_variable("token", secret, is_secret=True)
    started = home / "started"
    daemon()
    warm_up(home, write_flow)
    flow(
        write_flow,
        "secret",
        f"""
import time

def use(context):
    print("token is", context["var"]["token"])
    open("{started}", "w").close()
    while not os.path.exists("{home}/release"):
        time.sleep(0.05)
    return probe()

with Flow("secret"):
    Python("use", use)
""",
    )
    assert cli(home, "trigger", "secret").returncode == 0
    wait_for(started.exists, what="the task to run")
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        assert secret.encode() not in cmdline, (entry.name, cmdline)
    (home / "release").touch()
    wait_for(lambda: tis(home, "secret")["use"]["state"] == "success", what="the task to end")
    assert xcom(home, _last_run(home, "secret"), "use")["warm"]
    log = next((home / "logs" / "secret").rglob("try-1.log")).read_text()
    assert "token is ***" in log and secret not in log


def _last_run(home: Path, name: str) -> int:
    store = Store(home / "cronflow.db")
    try:
        row = store.conn.execute(
            "SELECT max(run_id) FROM runs JOIN flows USING (flow_id) WHERE flow_id = ?", [name]
        ).fetchone()
        return int(row[0])
    finally:
        store.close()


def test_warm_python_false_starts_every_python_task_cold(home, daemon, write_flow):
    configure(home, "warm_python = false")
    started = daemon()
    flow(write_flow, "probe", 'with Flow("probe"):\n    Python("probe", probe)\n')
    for _ in range(3):
        assert not xcom(home, run(home, "probe"), "probe")["warm"]
    assert "forkserver" not in started.output()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('warm_python = "yes"', "warm_python must be true or false, got 'yes'"),
        ('warm_imports = "pandas"', "warm_imports must be list, got 'pandas'"),
        ('warm_imports = ["pan das"]', "warm_imports must list module names, got 'pan das'"),
    ],
)
def test_bad_warm_settings_are_one_line_errors(home, line, message):
    (home / "cronflow.toml").write_text(line + "\n")
    with pytest.raises(ConfigError, match=message):
        load_settings(home)


def test_warm_is_the_default_and_the_server_watches_cronflow_s_own_files(home):
    import cronflow.worker

    assert load_settings(home).warm == []
    assert str(Path(cronflow.worker.__file__)) in zygote._loaded_files()


@pytest.mark.parametrize(
    ("argv", "env", "warm"),
    [
        (["/usr/bin/python3", "-m", "cronflow.worker"], {}, True),
        (["/usr/bin/python3", "-m", "cronflow.worker"], {"PYTHONPATH": "/x"}, False),
        (["/usr/bin/python3", "-m", "cronflow.worker"], {"LC_ALL": "C"}, False),
        (["/usr/bin/python3", "-m", "cronflow.masking", "--", "bash"], {}, False),
    ],
)
def test_what_starts_warm(argv, env, warm):
    assert forkserver.can_run(argv, env, has_script=False) is warm

"""The service under a real systemd: a Debian container booted with systemd-nspawn.

cronflow is installed as a user would (a venv of Debian's python3 in /opt/cronflow, from wheels
built from this checkout, no network inside), `cronflow install-service` writes and starts the
hardened system unit, and the tests check what systemd itself reports. The tests of this module
share one container and run in order on one xdist worker (--dist loadfile).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait_for
from nspawn import Container, cached_root

# tests/run.sh uses --dist loadfile: one worker runs this module's tests, in order.
pytestmark = pytest.mark.systemd

REPO = Path(__file__).resolve().parent.parent
HOME = "/var/lib/cronflow"
FLOWS = f"{HOME}/flows"
SECRET = "hunter2-not-for-logs"


# Session scope: xdist may interleave other modules' tests on this worker, and a module-scoped
# container would then be torn down and booted again between the steps of this module.
@pytest.fixture(scope="session")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    wheels = tmp_path_factory.mktemp("wheels")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--disable-pip-version-check",
            str(REPO),
            "-w",
            str(wheels),
        ],
        check=True,
        capture_output=True,
    )
    container = Container(cached_root(), {wheels: "/wheels"})
    try:
        container.run("python3", "-m", "venv", "/opt/cronflow")
        container.run(
            "/opt/cronflow/bin/pip",
            "install",
            "-q",
            "--no-index",
            "--find-links",
            "/wheels",
            "cronflow",
        )
        yield container
    finally:
        container.stop()


def cronflow(
    box: Container, *args: str, user: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return box.run(
        "/opt/cronflow/bin/cronflow",
        *args,
        user=user,
        check=check,
        env={"COLUMNS": "200", "NO_COLOR": "1"},
    )


def write_flow(box: Container, name: str, source: str) -> None:
    """Write a flow file into the service's flows directory, owned by the service user."""
    path = f"{FLOWS}/{name}.py"
    box.run(
        "sh",
        "-c",
        f"mkdir -p {FLOWS} && cat > {path} && chown -R cronflow:cronflow {FLOWS}",
        input=source,
    )


def tasks(box: Container, flow: str) -> dict[str, dict]:
    out = cronflow(box, "tasks", flow, "--json").stdout
    return {row["task"]: row for row in json.loads(out)}


def main_pid(box: Container) -> int:
    return int(box.show("cronflow.service", "MainPID")["MainPID"])


def journal(box: Container) -> list[dict]:
    out = box.run("journalctl", "-u", "cronflow.service", "-o", "json", "--no-pager").stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_install_service_starts_a_notify_unit_only_once_ready(box):
    result = cronflow(box, "install-service")
    assert "installed /etc/systemd/system/cronflow.service" in result.stdout
    props = box.show(
        "cronflow.service",
        "ActiveState",
        "SubState",
        "Type",
        "User",
        "MainPID",
        "NotifyAccess",
        "WatchdogUSec",
    )
    assert (props["ActiveState"], props["SubState"], props["Type"]) == (
        "active",
        "running",
        "notify",
    )
    assert props["User"] == "cronflow"
    assert props["WatchdogUSec"] == "30s"
    started = [e for e in journal(box) if "event=daemon_started" in e.get("MESSAGE", "")]
    assert started, "the daemon logged no start"
    pid = int(props["MainPID"])
    status = box.run("cat", f"/proc/{pid}/status").stdout
    assert re.search(r"^NoNewPrivs:\s+1$", status, re.M)
    owner = box.run("stat", "-c", "%U %a", HOME).stdout.split()
    assert owner == ["cronflow", "700"]


def test_the_unit_is_active_only_after_the_first_catalog_load(box):
    # A flow file that takes 3 s to import: a daemon that sent READY=1 before loading its flows
    # would be called active well before that. (Journal stamps cannot prove the order: journald
    # stamps a stdout line when it reads it, which may be after systemd handled READY=1.)
    box.run("systemctl", "stop", "cronflow.service")
    write_flow(
        box,
        "slow_import",
        "import time\nfrom cronflow import Flow, Shell\n\ntime.sleep(3)\n"
        "with Flow('slow_import', schedule=None):\n    Shell('t', 'true')\n",
    )
    try:
        box.run("systemctl", "start", "cronflow.service")  # returns once the unit is active
        props = box.show(
            "cronflow.service", "ExecMainStartTimestampMonotonic", "ActiveEnterTimestampMonotonic"
        )
        startup_us = int(props["ActiveEnterTimestampMonotonic"]) - int(
            props["ExecMainStartTimestampMonotonic"]
        )
        assert startup_us >= 3_000_000
        listed = json.loads(cronflow(box, "list", "--json").stdout)
        assert "slow_import" in {row["flow_id"] for row in listed}
    finally:
        box.run("rm", "-f", f"{FLOWS}/slow_import.py")


def test_hardening_is_in_effect(box):
    props = box.show(
        "cronflow.service",
        "NoNewPrivileges",
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "ProtectKernelTunables",
        "RestrictSUIDSGID",
        "CapabilityBoundingSet",
        "UMask",
    )
    assert props["NoNewPrivileges"] == "yes"
    assert props["ProtectSystem"] == "strict"
    assert props["PrivateTmp"] == "yes"
    assert props["RestrictSUIDSGID"] == "yes"
    assert props["CapabilityBoundingSet"] == ""
    assert props["UMask"] == "0077"


SHELL_AND_PYTHON = f"""
from cronflow import Flow, Python, Shell

def compute(context):
    return {{"ds": context["ds"], "answer": 42}}

with Flow("work"):
    Shell("shell", "echo shell ran for {{{{ ds }}}} as $(id -un) > {HOME}/shell.out")
    Python("python", compute)
    Shell("outside", "touch /usr/local/cronflow-was-here")
    Shell("secret", "test {{{{ var.token }}}} = {SECRET}")
"""


def test_flows_run_under_the_hardened_unit(box):
    cronflow(box, "var", "set", "token", SECRET, "--secret", check=False)
    write_flow(box, "work", SHELL_AND_PYTHON)
    result = cronflow(box, "trigger", "work", "--date", "2024-03-01", "--wait", check=False)
    assert result.returncode == 1, result.stdout + result.stderr  # 'outside' must fail
    rows = tasks(box, "work")
    assert rows["shell"]["state"] == "success"
    assert (
        box.run("cat", f"{HOME}/shell.out").stdout.strip() == "shell ran for 2024-03-01 as cronflow"
    )
    # the unit's UMask=0077 is the daemon's; its tasks create files as under cron (task_umask)
    assert box.run("stat", "-c", "%a", f"{HOME}/shell.out").stdout.strip() == "644"
    assert box.run("stat", "-c", "%a", f"{HOME}/cronflow.db").stdout.strip() == "600"
    assert rows["python"]["state"] == "success"
    assert rows["outside"]["state"] == "failed"
    log = cronflow(box, "logs", "work.outside", "--date", "2024-03-01").stdout
    assert "Read-only file system" in log
    assert box.run("test", "-e", "/usr/local/cronflow-was-here", check=False).returncode != 0


SFTP_FLOW = f'''
from cronflow import Flow, SFTPGet
with Flow("fetch"):
    SFTPGet("download", conn_id="station", remote="/home/station/data/{{{{ ds }}}}.csv", local_dir="{HOME}/in")
'''


def test_sftp_download_from_an_sshd_in_the_container(box):
    box.run("useradd", "--create-home", "station")
    box.run("usermod", "-p", "*", "station")  # sshd refuses keys for a locked account
    box.run(
        "sh",
        "-c",
        "mkdir -p /home/station/data /home/station/.ssh && "
        "echo 'station,temp' > /home/station/data/2024-03-01.csv",
    )
    box.run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", f"{HOME}/station_key")
    box.run(
        "sh",
        "-c",
        f"cp {HOME}/station_key.pub /home/station/.ssh/authorized_keys && "
        "chown -R station:station /home/station && chmod 700 /home/station/.ssh && "
        f"chown cronflow:cronflow {HOME}/station_key {HOME}/station_key.pub",
    )
    box.run("systemctl", "start", "ssh.service")
    wait_for(
        lambda: box.run("ssh-keyscan", "-t", "ed25519", "127.0.0.1", check=False).stdout.strip(),
        what="sshd to answer",
    )
    box.run(
        "sh",
        "-c",
        f"ssh-keyscan -t ed25519 127.0.0.1 > {HOME}/known_hosts 2>/dev/null && "
        f"chown cronflow:cronflow {HOME}/known_hosts",
    )
    uri = f"sftp://station@127.0.0.1:22?key_file={HOME}/station_key&known_hosts={HOME}/known_hosts"
    cronflow(box, "conn", "add", "station", uri)
    write_flow(box, "fetch", SFTP_FLOW)
    result = cronflow(box, "trigger", "fetch", "--date", "2024-03-01", "--wait", check=False)
    assert result.returncode == 0, (
        result.stdout + result.stderr + cronflow(box, "logs", "fetch.download").stdout
    )
    assert box.run("cat", f"{HOME}/in/2024-03-01.csv").stdout == "station,temp\n"
    assert box.run("stat", "-c", "%U", f"{HOME}/in/2024-03-01.csv").stdout.strip() == "cronflow"


def test_journal_lines_are_structured_and_carry_no_secret(box):
    messages = [e.get("MESSAGE", "") for e in journal(box) if e.get("_PID") != "1"]
    daemon_lines = [m for m in messages if isinstance(m, str) and m.startswith("level=")]
    assert daemon_lines
    for line in daemon_lines:
        assert re.match(r"^level=[A-Z]+ event=[a-z_]+( [a-z_]+=\S+| reason=.*| error=.*)*", line), (
            line
        )
    assert not any(SECRET in str(m) for m in messages)


def test_status_and_logs_work_as_root_and_as_the_service_user(box):
    for user in (None, "cronflow"):
        status = cronflow(box, "status", "--json", user=user)
        info = json.loads(status.stdout)
        assert info["running"] is True and info["pid"] == main_pid(box)
        assert info["home"] == HOME
        listing = cronflow(box, "tasks", "work", "--json", user=user)
        assert json.loads(listing.stdout)
        log = cronflow(box, "logs", "work.shell", "--date", "2024-03-01", user=user).stdout
        assert "try 1 ended" in log and "success" in log


def test_kill_9_is_restarted_and_the_running_task_completes_once(box):
    """KillMode=process: systemd restarts a crashed daemon without killing its tasks, and the
    new daemon adopts the one still running; it ends once, as a success of its first try."""
    write_flow(
        box,
        "long",
        f"""
from cronflow import Flow, Shell
with Flow("long", defaults={{"retries": 1, "retry_delay": 0}}):
    Shell("work", "echo $CRONFLOW_TRY_NUMBER >> {HOME}/long.runs; sleep 20; echo done")
""",
    )
    cronflow(box, "trigger", "long")
    wait_for(
        lambda: box.run("test", "-s", f"{HOME}/long.runs", check=False).returncode == 0,
        what="try 1",
    )
    old = main_pid(box)
    killed_at = time.monotonic()
    box.run("sh", "-c", f"kill -9 {old}")
    new = wait_for(
        lambda: (
            (p := main_pid(box)) not in (0, old)
            and box.show("cronflow.service", "ActiveState")["ActiveState"] == "active"
            and p
        ),
        what="systemd to restart the daemon",
    )
    restart_s = time.monotonic() - killed_at
    assert new != old
    assert tasks(box, "long")["work"]["state"] == "running"  # adopted, still running
    wait_for(lambda: tasks(box, "long")["work"]["state"] == "success", timeout=90, what="its end")
    row = tasks(box, "long")["work"]
    assert row["try_number"] == 1
    assert box.run("cat", f"{HOME}/long.runs").stdout.split() == ["1"]  # it ran once
    log = cronflow(box, "logs", "long.work").stdout
    assert log.count("done") == 1 and "try 1 ended after" in log
    recovered = [m for e in journal(box) if "event=attempts_recovered" in (m := e["MESSAGE"])]
    assert recovered and "still_running=1" in recovered[-1]
    print(f"\nrestart after kill -9: {restart_s:.1f}s")


def test_kill_9_under_private_users_still_adopts_the_running_task(box):
    """With PrivateUsers=yes (left out of the unit, but an admin may add it) each start gets a
    new user namespace and /proc hides the tasks of the daemon before: it adopts the task by
    the pid the store recorded rather than running it again."""
    dropin = "/etc/systemd/system/cronflow.service.d"
    box.run("mkdir", "-p", dropin)
    box.run("sh", "-c", f"printf '[Service]\\nPrivateUsers=yes\\n' > {dropin}/users.conf")
    box.run("systemctl", "daemon-reload")
    box.run("systemctl", "restart", "cronflow.service")
    try:
        write_flow(
            box,
            "hidden",
            f"""
from cronflow import Flow, Shell
with Flow("hidden", defaults={{"retries": 1, "retry_delay": 0}}):
    Shell("work", "echo $CRONFLOW_TRY_NUMBER >> {HOME}/hidden.runs; sleep 15; echo done")
""",
        )
        cronflow(box, "trigger", "hidden")
        wait_for(
            lambda: box.run("test", "-s", f"{HOME}/hidden.runs", check=False).returncode == 0,
            what="try 1",
        )
        old = main_pid(box)
        box.run("sh", "-c", f"kill -9 {old}")
        wait_for(
            lambda: (
                main_pid(box) not in (0, old)
                and box.show("cronflow.service", "ActiveState")["ActiveState"] == "active"
            ),
            what="systemd to restart the daemon",
        )
        wait_for(
            lambda: tasks(box, "hidden")["work"]["state"] == "success", timeout=90, what="its end"
        )
        assert tasks(box, "hidden")["work"]["try_number"] == 1
        assert box.run("cat", f"{HOME}/hidden.runs").stdout.split() == ["1"]
    finally:
        box.run("rm", "-r", dropin)
        box.run("systemctl", "daemon-reload")
        box.run("systemctl", "restart", "cronflow.service")


def test_sigstop_is_caught_by_the_watchdog(box):
    box.run("mkdir", "-p", "/etc/systemd/system/cronflow.service.d")
    box.run(
        "sh",
        "-c",
        "printf '[Service]\\nWatchdogSec=4s\\n' > /etc/systemd/system/cronflow.service.d/watchdog.conf",
    )
    box.run("systemctl", "daemon-reload")
    box.run("systemctl", "restart", "cronflow.service")
    old = main_pid(box)
    stopped_at = time.monotonic()
    box.run("sh", "-c", f"kill -STOP {old}")
    wait_for(
        lambda: (
            main_pid(box) not in (0, old)
            and box.show("cronflow.service", "ActiveState")["ActiveState"] == "active"
        ),
        timeout=120,
        what="the watchdog to restart the daemon",
    )
    print(
        f"\nwatchdog restart after SIGSTOP (WatchdogSec=4s): {time.monotonic() - stopped_at:.1f}s"
    )
    assert (
        "watchdog timeout"
        in box.run("journalctl", "-u", "cronflow.service", "--no-pager").stdout.lower()
    )
    box.run("rm", "-r", "/etc/systemd/system/cronflow.service.d")
    box.run("systemctl", "daemon-reload")


def test_systemctl_stop_is_clean_and_within_the_grace_period(box):
    box.run("systemctl", "restart", "cronflow.service")
    write_flow(
        box,
        "busy",
        """
from cronflow import Flow, Shell
with Flow("busy"):
    Shell("work", "sleep 600")
""",
    )
    cronflow(box, "trigger", "busy")
    wait_for(lambda: tasks(box, "busy")["work"]["state"] == "running", what="the task to run")
    started = time.monotonic()
    box.run("systemctl", "stop", "cronflow.service", timeout=120)
    stop_s = time.monotonic() - started
    props = box.show("cronflow.service", "ActiveState", "Result")
    assert props == {"ActiveState": "inactive", "Result": "success"}
    assert stop_s < 30 + 10  # grace_period_s (30) plus the time to stop the task
    assert tasks(box, "busy")["work"]["state"] == "up_for_retry"
    # KillMode=process leaves the unit's other processes to the daemon: it ended them all
    assert box.run("pgrep", "-u", "cronflow", check=False).stdout.strip() == ""
    print(f"\nsystemctl stop with a running task: {stop_s:.1f}s")


def test_user_unit_under_a_lingering_user(box):
    box.run("useradd", "--create-home", "alice")
    uid = box.run("id", "-u", "alice").stdout.strip()
    box.run("loginctl", "enable-linger", "alice")
    wait_for(
        lambda: (
            box.run("test", "-S", f"/run/user/{uid}/systemd/private", check=False).returncode == 0
        ),
        what="alice's user manager",
    )
    env = {"XDG_RUNTIME_DIR": f"/run/user/{uid}", "HOME": "/home/alice"}
    result = box.run(
        "/opt/cronflow/bin/cronflow", "install-service", "--user", user="alice", env=env
    )
    assert "installed /home/alice/.config/systemd/user/cronflow.service" in result.stdout
    state = wait_for(
        lambda: (
            box.run(
                "systemctl",
                "--user",
                "is-active",
                "cronflow.service",
                user="alice",
                env=env,
                check=False,
            ).stdout.strip()
            == "active"
        ),
        what="the user unit to be active",
    )
    assert state
    status = box.run("/opt/cronflow/bin/cronflow", "status", "--json", user="alice", env=env)
    assert json.loads(status.stdout)["home"] == "/home/alice/.cronflow"


USER_FLOW = """
import os
from cronflow import Flow, Python, Shell

def compute(context):
    return {"ds": context["ds"], "uid": os.getuid()}

with Flow("mine"):
    Shell("home", "echo ran as $(id -un) > $HOME/mine.out")
    Python("python", compute)
    Shell("system", "touch /usr/local/carol-was-here")
    Shell("others", "cat /home/station/secret.txt")
    Shell("privileges", "grep -E '^(NoNewPrivs|Seccomp|CapBnd):' /proc/self/status")
"""


def test_user_unit_is_sandboxed_and_runs_flows(box):
    """`install-service --user` as an ordinary user with lingering: the sandbox a user manager
    honours is in effect (own user namespace, seccomp, no capabilities, read-only system,
    other homes hidden) and flows run in it; systemd-analyze scores it OK."""
    box.run("useradd", "--create-home", "carol")
    box.run("sh", "-c", "id station >/dev/null 2>&1 || useradd --create-home station")
    box.run(
        "sh",
        "-c",
        "echo not-for-carol > /home/station/secret.txt && chmod 755 /home/station && "
        "chmod 644 /home/station/secret.txt",
    )
    uid = box.run("id", "-u", "carol").stdout.strip()
    box.run("loginctl", "enable-linger", "carol")
    wait_for(
        lambda: (
            box.run("test", "-S", f"/run/user/{uid}/systemd/private", check=False).returncode == 0
        ),
        what="carol's user manager",
    )
    env = {"XDG_RUNTIME_DIR": f"/run/user/{uid}", "HOME": "/home/carol", "COLUMNS": "200"}

    def as_carol(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return box.run(*args, user="carol", env=env, check=check)

    as_carol("/opt/cronflow/bin/cronflow", "install-service", "--user")
    wait_for(
        lambda: (
            as_carol("systemctl", "--user", "is-active", "cronflow", check=False).stdout.strip()
            == "active"
        ),
        what="carol's unit to be active",
    )
    box.run(
        "sh",
        "-c",
        "cat > /home/carol/.cronflow/flows/mine.py && chown carol:carol "
        "/home/carol/.cronflow/flows/mine.py",
        input=USER_FLOW,
    )
    result = as_carol(
        "/opt/cronflow/bin/cronflow",
        "trigger",
        "mine",
        "--date",
        "2024-03-01",
        "--wait",
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr  # 'system' and 'others' fail
    out = as_carol("/opt/cronflow/bin/cronflow", "tasks", "mine", "--json").stdout
    states = {row["task"]: row["state"] for row in json.loads(out)}
    assert states == {
        "home": "success",
        "python": "success",
        "system": "failed",
        "others": "failed",
        "privileges": "success",
    }
    assert box.run("cat", "/home/carol/mine.out").stdout == "ran as carol\n"

    def log(task: str) -> str:
        cmd = ("/opt/cronflow/bin/cronflow", "logs", f"mine.{task}", "--date", "2024-03-01")
        return as_carol(*cmd).stdout

    assert "Read-only file system" in log("system")
    assert "No such file or directory" in log("others")  # ProtectHome=tmpfs: not even there
    privileges = log("privileges")
    assert re.search(r"^NoNewPrivs:\s+1$", privileges, re.M)
    assert re.search(r"^Seccomp:\s+2$", privileges, re.M)
    assert re.search(r"^CapBnd:\s+0+$", privileges, re.M)
    pid = as_carol("systemctl", "--user", "show", "cronflow", "-p", "MainPID", "--value").stdout
    own_namespace = box.run("readlink", f"/proc/{pid.strip()}/ns/user").stdout
    assert own_namespace != box.run("readlink", "/proc/1/ns/user").stdout  # PrivateUsers
    report = as_carol("systemd-analyze", "--user", "security", "cronflow.service").stdout
    score = re.search(r"Overall exposure level for cronflow.service: (\d+\.\d+)", report)
    assert score and float(score.group(1)) <= 2.5, report
    print(f"\nuser unit exposure (systemd-analyze --user security): {score.group(1)}")

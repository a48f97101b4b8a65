"""systemd units: they pass `systemd-analyze verify`, stay hardened, and install-service prints
or writes exactly what it says."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import cli

from cronflow.service import STATE_HOME, UnitSpec, WebUnitSpec, cronflow_executable

REPO = Path(__file__).resolve().parent.parent
SHIPPED_EXE = Path("/opt/cronflow/bin/cronflow")


def system_unit(executable: Path = SHIPPED_EXE, home: Path = STATE_HOME) -> str:
    return UnitSpec(executable, home, "cronflow").render()


def user_unit(executable: Path = SHIPPED_EXE, home: Path = Path("%h/.cronflow")) -> str:
    return UnitSpec(executable, home, None).render()


def web_unit(
    executable: Path = SHIPPED_EXE, home: Path = STATE_HOME, user: str | None = "cronflow"
) -> str:
    return WebUnitSpec(executable, home, user).render()


def test_shipped_units_are_what_install_service_writes():
    assert (REPO / "systemd" / "cronflow.service").read_text() == system_unit()
    assert (REPO / "systemd" / "cronflow-user.service").read_text() == user_unit()
    assert (REPO / "systemd" / "cronflow-web.service").read_text() == web_unit()
    user_web = web_unit(home=Path("%h/.cronflow"), user=None)
    assert (REPO / "systemd" / "cronflow-web-user.service").read_text() == user_web


def test_web_unit_passes_verify_and_is_more_sandboxed_than_the_daemon(tmp_path):
    unit = tmp_path / "cronflow-web.service"
    unit.write_text(web_unit(cronflow_executable()))
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True
    )
    assert verify.returncode == 0, verify.stderr
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(unit)], capture_output=True, text=True
    )
    score = re.search(r"Overall exposure level for cronflow-web.service: (\d+\.\d+)", result.stdout)
    assert score, result.stdout + result.stderr
    assert float(score.group(1)) <= 1.5
    lines = unit.read_text().splitlines()
    for line in (
        "User=cronflow",
        "MemoryDenyWriteExecute=yes",
        "ReadWritePaths=/var/lib/cronflow",
        f"ExecStart={cronflow_executable()} web --host 127.0.0.1 --port 8787",
    ):
        assert line in lines, line


def test_install_service_web_dry_run(home):
    result = cli(home, "install-service", "--web", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("# /etc/systemd/system/cronflow-web.service\n[Unit]\n")
    assert f"ExecStart={cronflow_executable()} web --host 127.0.0.1 --port 8787" in result.stdout
    assert "systemctl enable --now cronflow-web.service\n" in result.stdout


def test_system_unit_passes_systemd_analyze_verify(tmp_path):
    unit = tmp_path / "cronflow.service"
    unit.write_text(system_unit(cronflow_executable()))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_user_unit_passes_systemd_analyze_verify(tmp_path):
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    unit = tmp_path / "user" / "cronflow.service"
    unit.parent.mkdir()
    unit.write_text(user_unit(cronflow_executable(), tmp_path / "home"))
    result = subprocess.run(
        ["systemd-analyze", "verify", "--user", str(unit)],
        capture_output=True,
        text=True,
        env={"XDG_RUNTIME_DIR": str(runtime), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr


def test_system_unit_exposure_score_stays_low(tmp_path):
    unit = tmp_path / "cronflow.service"
    unit.write_text(system_unit(cronflow_executable()))
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(unit)], capture_output=True, text=True
    )
    score = re.search(r"Overall exposure level for cronflow.service: (\d+\.\d+)", result.stdout)
    assert score, result.stdout + result.stderr
    assert float(score.group(1)) <= 2.0


def test_system_unit_essentials():
    text = system_unit()
    for line in [
        "Type=notify",
        "NotifyAccess=main",
        "User=cronflow",
        "StateDirectory=cronflow",
        "Environment=CRONFLOW_HOME=/var/lib/cronflow",
        "Restart=on-failure",
        "WatchdogSec=30s",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/cronflow",
        "PrivateTmp=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "RestrictSUIDSGID=yes",
        "KillMode=process",
        "UMask=0077",
    ]:
        assert line in text.splitlines(), line


@pytest.mark.parametrize(
    ("home", "executable", "expected"),
    [
        (STATE_HOME, Path("/opt/cronflow/bin/cronflow"), "ProtectHome=yes"),
        (STATE_HOME, Path("/root/venv/bin/cronflow"), "ProtectHome=read-only"),
        (Path("/home/data/.cronflow"), Path("/opt/cronflow/bin/cronflow"), "ProtectHome=no"),
    ],
)
def test_protect_home_follows_where_things_live(home, executable, expected):
    text = UnitSpec(executable, home, "cronflow").render()
    assert expected in text.splitlines()
    if home != STATE_HOME:
        assert "StateDirectory=cronflow" not in text
        assert f"ReadWritePaths={home}" in text


def test_install_service_dry_run_prints_unit_and_commands(home):
    result = cli(home, "install-service", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("# /etc/systemd/system/cronflow.service\n[Unit]\n")
    assert f"Environment=CRONFLOW_HOME={home}" in result.stdout
    assert f"ExecStart={cronflow_executable()} daemon" in result.stdout
    assert "systemctl daemon-reload\nsystemctl enable --now cronflow.service\n" in result.stdout


def test_install_service_user_dry_run(home):
    result = cli(home, "install-service", "--user", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "/systemd/user/cronflow.service" in result.stdout.splitlines()[0]
    assert "User=" not in result.stdout
    assert "systemctl --user enable --now cronflow.service" in result.stdout


def test_systemctl_is_available_for_the_suite():
    assert shutil.which("systemd-analyze"), "tests/run.sh installs systemd for systemd-analyze"


def test_user_unit_has_the_sandbox_a_user_manager_honours():
    lines = user_unit().splitlines()
    for line in [
        "NoNewPrivileges=yes",
        "PrivateUsers=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=%h",
        "ProtectHome=tmpfs",
        "BindPaths=%h %t",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "PrivateIPC=yes",
        "ProtectKernelTunables=yes",
        "ProtectControlGroups=yes",
        "RestrictNamespaces=yes",
        "SystemCallFilter=@system-service",
        "CapabilityBoundingSet=",
    ]:
        assert line in lines, line
    # Accepted by a user manager but not applied (no PID namespace of its own), or harmful.
    for absent in ("ProtectProc=", "ProcSubset=", "RemoveIPC=", "User="):
        assert not any(line.startswith(absent) for line in lines), absent


def test_user_unit_exposure_score_stays_low(tmp_path):
    unit = tmp_path / "cronflow.service"
    unit.write_text(user_unit(cronflow_executable()))
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(unit)], capture_output=True, text=True
    )
    score = re.search(r"Overall exposure level for cronflow.service: (\d+\.\d+)", result.stdout)
    assert score, result.stdout + result.stderr
    assert float(score.group(1)) <= 2.5


@pytest.mark.parametrize(
    ("home", "writable", "bound"),
    [
        (Path("/srv/carol/cronflow"), "%h /srv/carol/cronflow", "%h %t"),
        (Path("/home/shared/cronflow"), "%h /home/shared/cronflow", "%h %t /home/shared/cronflow"),
    ],
)
def test_user_unit_keeps_a_home_outside_the_users_home_writable(home, writable, bound):
    lines = user_unit(home=home).splitlines()
    assert f"ReadWritePaths={writable}" in lines
    assert f"BindPaths={bound}" in lines


def test_the_shipped_worker_unit_is_what_install_service_worker_writes():
    from cronflow.service import worker_arguments

    spec = UnitSpec(SHIPPED_EXE, STATE_HOME, "cronflow", worker=worker_arguments("gpu", 4))
    assert (REPO / "systemd" / "cronflow-worker.service").read_text() == spec.render()


def test_install_service_worker_dry_run(home):
    result = cli(
        home, "install-service", "--worker", "gpu,station", "--concurrency", "2", "--dry-run"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("# /etc/systemd/system/cronflow-worker.service\n[Unit]\n")
    exe = cronflow_executable()
    assert f"ExecStart={exe} worker --queues gpu,station --concurrency 2 --name %H" in result.stdout
    assert "EnvironmentFile=-/etc/cronflow/worker.env" in result.stdout
    assert "KillMode=mixed" in result.stdout and "Type=simple" in result.stdout
    assert "WatchdogSec" not in result.stdout and "NotifyAccess" not in result.stdout
    assert "systemctl enable --now cronflow-worker.service" in result.stdout
    bad = cli(home, "install-service", "--worker", "gpu;rm -rf /", "--dry-run")
    assert bad.returncode == 2
    assert "queue names are letters, digits" in bad.stderr

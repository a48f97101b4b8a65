"""systemd units for the daemon (and a Celery worker: --worker), and `cronflow install-service`.

The system unit runs the daemon as a dedicated user with its home in systemd's StateDirectory,
Type=notify (the daemon sends READY=1 once flows are loaded and WATCHDOG=1 with each heartbeat),
Restart=on-failure, and as much sandboxing as running users' flows allows. The user unit gets
every sandboxing option a user manager honours (in a user namespace it sets up itself). The
settings left out on purpose, and why, are listed in README.md ("Running as a service").
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from cronflow.errors import CronflowError
from cronflow.home import init_home

SERVICE_NAME = "cronflow.service"
WORKER_SERVICE_NAME = "cronflow-worker.service"
# The worker's broker URL (with its password) goes here, not into the unit.
WORKER_ENV_FILE = "/etc/cronflow/worker.env"
SERVICE_USER = "cronflow"
STATE_HOME = Path("/var/lib/cronflow")
WATCHDOG_S = 30


class ServiceError(CronflowError):
    """The service cannot be installed (not root, no systemctl, a command failed)."""


def cronflow_executable() -> Path:
    """The `cronflow` script of this environment (the venv it is installed in)."""
    beside = Path(sys.executable).parent / "cronflow"
    if beside.exists():
        return beside
    found = shutil.which("cronflow")
    if found:
        return Path(found).resolve()
    raise ServiceError("cannot find the `cronflow` executable of this environment")


_HARDENING = """\
# Sandboxing: see README.md, "Running as a service", for what is left out and why.
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths={home}
ProtectHome={protect_home}
PrivateTmp=yes
PrivateMounts=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
ProcSubset=pid
RestrictSUIDSGID=yes
RestrictRealtime=yes
RestrictNamespaces=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
LockPersonality=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallErrorNumber=EPERM
CapabilityBoundingSet=
AmbientCapabilities=
RemoveIPC=yes
"""


# What a user manager (systemctl --user) honours, as the user who owns it: these options make
# it run the service in a user namespace of its own (PrivateUsers). The user's home (%h) stays
# writable and its runtime directory (%t: systemd's notify socket) reachable; other users'
# homes are hidden (ProtectHome=tmpfs). Left out, and why: README.md, "Running as a service".
_USER_HARDENING = """\
# Sandboxing: see README.md, "Running as a service", for what is left out and why.
NoNewPrivileges=yes
PrivateUsers=yes
ProtectSystem=strict
ReadWritePaths={writable}
ProtectHome=tmpfs
BindPaths={bound}
PrivateTmp=yes
PrivateMounts=yes
PrivateDevices=yes
PrivateIPC=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictSUIDSGID=yes
RestrictRealtime=yes
RestrictNamespaces=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
LockPersonality=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallErrorNumber=EPERM
CapabilityBoundingSet=
AmbientCapabilities=
KeyringMode=private
"""


@dataclass(frozen=True)
class UnitSpec:
    executable: Path
    home: Path
    user: str | None  # None: a user unit (runs as the user who owns the manager)
    grace_period_s: float = 30.0
    worker: str | None = None  # `cronflow worker` arguments: the unit of a Celery worker

    @property
    def name(self) -> str:
        return WORKER_SERVICE_NAME if self.worker is not None else SERVICE_NAME

    @property
    def protect_home(self) -> str:
        """ProtectHome= as strict as the home and the executable's location allow."""
        if _under_home(self.home):
            return "no"
        return "read-only" if _under_home(self.executable) else "yes"

    def render(self) -> str:
        stop_s = int(self.grace_period_s) + 30  # grace for tasks, then time to stop them
        lines = [
            "[Unit]",
            "Description=cronflow flow scheduler",
            "After=network-online.target" if self.user else "After=default.target",
            *(["Wants=network-online.target"] if self.user else []),
            "",
            "[Service]",
            "Type=notify",
            "NotifyAccess=main",
            *([f"User={self.user}", f"Group={self.user}"] if self.user else []),
            f"Environment=CRONFLOW_HOME={self.home}",
            "Environment=PYTHONUNBUFFERED=1",
            f"ExecStart={self.executable} daemon",
            f"WorkingDirectory={self.home}",
        ]
        if self.worker is not None:
            lines = self._worker_lines(lines)
        if self.user and self.home == STATE_HOME:
            lines += ["StateDirectory=cronflow", "StateDirectoryMode=0700"]
        lines += [
            "UMask=0077",
            "Restart=on-failure",
            "RestartSec=2s",
        ]
        if self.worker is not None:
            # A stop lets running tries end (Celery's warm shutdown), then ends what is left;
            # a restart after a crash kills what the dead worker left (its tasks' marker).
            lines += ["TimeoutStopSec=300s", "KillMode=mixed"]
        else:
            lines += [
                f"WatchdogSec={WATCHDOG_S}s",
                f"TimeoutStopSec={stop_s}s",
                # Signals to the daemon only. On a stop it ends its tasks itself after the grace
                # period; after a crash, systemd kills none of them and the restarted daemon
                # adopts the ones still running.
                "KillMode=process",
            ]
        if self.user:
            lines.append(_HARDENING.format(home=self.home, protect_home=self.protect_home).rstrip())
        else:
            lines.append(self._user_hardening())
        lines += [
            "",
            "[Install]",
            "WantedBy=multi-user.target" if self.user else "WantedBy=default.target",
        ]
        return "\n".join(lines) + "\n"

    def _worker_lines(self, lines: list[str]) -> list[str]:
        """The daemon's first lines, made a worker's: no notify, its arguments, the broker URL
        from an environment file."""
        swapped = []
        for line in lines:
            if line == "Description=cronflow flow scheduler":
                line = "Description=cronflow worker (tasks with queue= of a cronflow scheduler)"
            elif line == "Type=notify":
                line = "Type=simple"
            elif line == "NotifyAccess=main":
                continue
            elif line.startswith("ExecStart="):
                line = f"ExecStart={self.executable} worker {self.worker}"
                if self.user:
                    swapped.append(f"EnvironmentFile=-{WORKER_ENV_FILE}")
            swapped.append(line)
        return swapped

    def _user_hardening(self) -> str:
        """The user unit's sandbox: the home is writable (and reachable behind
        ProtectHome=tmpfs) wherever CRONFLOW_HOME puts it."""
        writable, bound = ["%h"], ["%h", "%t"]
        if not (str(self.home).startswith("%h") or self.home.is_relative_to(Path.home())):
            writable.append(str(self.home))
            if _under_home(self.home):
                bound.append(str(self.home))
        return _USER_HARDENING.format(writable=" ".join(writable), bound=" ".join(bound)).rstrip()


WEB_SERVICE_NAME = "cronflow-web.service"
WEB_HOST, WEB_PORT = "127.0.0.1", 8787

# The web view runs no task: it gets what the daemon's tasks cannot (no writable-executable
# memory, a narrower system call set, no other address families).
_WEB_HARDENING = """\
MemoryDenyWriteExecute=yes
SystemCallFilter=~@privileged @resources
"""


@dataclass(frozen=True)
class WebUnitSpec:
    """The unit of `cronflow web`, beside the daemon's: same user and home, its own sandbox."""

    executable: Path
    home: Path
    user: str | None
    host: str = WEB_HOST
    port: int = WEB_PORT

    @property
    def name(self) -> str:
        return WEB_SERVICE_NAME

    def render(self) -> str:
        daemon = UnitSpec(self.executable, self.home, self.user)
        lines = [
            "[Unit]",
            "Description=cronflow web view",
            f"After={SERVICE_NAME}" + (" network-online.target" if self.user else ""),
            "",
            "[Service]",
            "Type=exec",
            *([f"User={self.user}", f"Group={self.user}"] if self.user else []),
            f"Environment=CRONFLOW_HOME={self.home}",
            "Environment=PYTHONUNBUFFERED=1",
            f"ExecStart={self.executable} web --host {self.host} --port {self.port}",
            f"WorkingDirectory={self.home}",
        ]
        if self.user and self.home == STATE_HOME:
            lines += ["StateDirectory=cronflow", "StateDirectoryMode=0700"]
        lines += ["UMask=0077", "Restart=on-failure", "RestartSec=2s"]
        if self.user:
            hardening = _HARDENING.format(home=self.home, protect_home=daemon.protect_home)
            lines.append(hardening.rstrip())
            lines.append(_WEB_HARDENING.rstrip())
        else:
            lines += ["NoNewPrivileges=yes"]
        lines += [
            "",
            "[Install]",
            "WantedBy=multi-user.target" if self.user else "WantedBy=default.target",
        ]
        return "\n".join(lines) + "\n"


def worker_arguments(queues: str, concurrency: int) -> str:
    """`cronflow worker`'s arguments in a unit; the name is the host's (%H)."""
    names = [q.strip() for q in queues.split(",") if q.strip()]
    for name in names:
        if not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise ServiceError(f"--worker: queue names are letters, digits, - _ . (got {name!r})")
    if not names:
        raise ServiceError("--worker needs the queues to serve, e.g. --worker gpu,station")
    return f"--queues {','.join(names)} --concurrency {concurrency} --name %H"


def _under_home(path: Path) -> bool:
    return any(
        path.is_relative_to(top) for top in (Path("/home"), Path("/root"), Path("/run/user"))
    )


def unreadable_by_others(path: Path) -> Path | None:
    """The first directory on the way to `path` that other users cannot enter, if any: the
    dedicated service user could not start the executable."""
    for parent in reversed(path.parents):
        if not parent.stat().st_mode & 0o001:
            return parent
    return None


def unit_path(user_unit: bool, name: str = SERVICE_NAME) -> Path:
    if user_unit:
        config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
        return config / "systemd" / "user" / name
    return Path("/etc/systemd/system") / name


def install_commands(user_unit: bool, name: str = SERVICE_NAME) -> list[list[str]]:
    systemctl = ["systemctl", "--user"] if user_unit else ["systemctl"]
    return [[*systemctl, "daemon-reload"], [*systemctl, "enable", "--now", name]]


def system_user_command(home: Path) -> list[str] | None:
    """The useradd call that creates the dedicated user, or None if it exists."""
    try:
        pwd.getpwnam(SERVICE_USER)
        return None
    except KeyError:
        return [
            "useradd",
            "--system",
            "--user-group",
            "--home-dir",
            str(home),
            "--shell",
            "/usr/sbin/nologin",
            SERVICE_USER,
        ]


def install(spec: UnitSpec | WebUnitSpec, user_unit: bool) -> Path:
    """Write the unit, create the user if needed, reload systemd and start the service."""
    if not user_unit and os.geteuid() != 0:
        raise ServiceError(
            "installing the system service needs root: run it with sudo, or use --user"
        )
    if shutil.which("systemctl") is None:
        raise ServiceError("systemctl not found: this machine does not run systemd")
    commands = install_commands(user_unit, spec.name)
    if not user_unit:
        create_user = system_user_command(spec.home)
        if create_user:
            commands.insert(0, create_user)
        if spec.home != STATE_HOME:
            commands.insert(
                1 if create_user else 0,
                ["chown", "-R", f"{SERVICE_USER}:{SERVICE_USER}", str(spec.home)],
            )
    if user_unit or spec.home != STATE_HOME:  # systemd creates its StateDirectory itself
        init_home(spec.home, example=False)
    path = unit_path(user_unit, spec.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(spec.render(), encoding="utf-8")
    for command in commands:
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            raise ServiceError(
                f"`{' '.join(command)}` failed: {detail[-1] if detail else result.returncode}"
            )
    return path

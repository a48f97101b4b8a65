"""A real systemd for tests: a Debian root (debootstrap, cached) booted with systemd-nspawn.

The root is built once per package list and kept under CRONFLOW_NSPAWN_CACHE (default
/var/cache/cronflow-tests), so later runs of the suite boot in seconds. tests/run.sh builds it
before pytest starts, so a fresh machine's first run does not spend pytest's per-test timeout on it. Every boot is
--ephemeral: the cached root is never changed by a test.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

PACKAGES = [
    "systemd",
    "systemd-sysv",
    "dbus",
    "libpam-systemd",
    "python3",
    "python3-venv",
    "procps",
    "openssh-server",
]
CACHE = Path(os.environ.get("CRONFLOW_NSPAWN_CACHE", "/var/cache/cronflow-tests"))
SUITE = "bookworm"


def cached_root() -> Path:
    """The Debian root for PACKAGES, built by debootstrap on first use (2 to 3 minutes)."""
    key = hashlib.sha256(" ".join([SUITE, *PACKAGES]).encode()).hexdigest()[:12]
    root = CACHE / f"root-{key}"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"root-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time; the others wait and reuse
        if not (root / "usr" / "bin" / "python3").exists():
            partial = CACHE / f"root-{key}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            subprocess.run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={','.join(PACKAGES)}",
                    SUITE,
                    str(partial),
                ],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                timeout=1800,
            )
            # sshd would start at boot with keys the test does not control: the test starts its own.
            (
                partial / "etc" / "systemd" / "system" / "multi-user.target.wants" / "ssh.service"
            ).unlink(missing_ok=True)
            os.replace(partial, root)
    return root


class Container:
    """One booted container; `run()` executes a command inside it (all namespaces)."""

    def __init__(self, root: Path, binds: dict[Path, str]) -> None:
        self.name = f"cf-{uuid.uuid4().hex[:8]}"
        self.console = Path(f"/tmp/{self.name}.console")
        args = [
            "systemd-nspawn",
            "-q",
            "-D",
            str(root),
            "--ephemeral",
            "--boot",
            "--console=pipe",
            "--register=no",
            "--keep-unit",
            f"--machine={self.name}",
            "--private-network",  # its own loopback, and abstract sockets no other test sees
        ]
        args += [f"--bind-ro={host}:{inside}" for host, inside in binds.items()]
        with open(self.console, "wb") as out:
            self.process = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        self.leader = self._wait_for_leader()
        self._wait_until_running()

    def _wait_for_leader(self) -> int:
        end = time.monotonic() + 120
        while time.monotonic() < end:
            if self.process.poll() is not None:
                raise RuntimeError(f"systemd-nspawn exited: {self.console.read_text()[-2000:]}")
            children = subprocess.run(
                ["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True
            )
            pids = children.stdout.split()
            if pids:
                return int(pids[0])
            time.sleep(0.1)
        raise RuntimeError("the container's systemd did not start")

    def _wait_until_running(self) -> None:
        end = time.monotonic() + 180
        state = ""
        while time.monotonic() < end:
            state = self.run("systemctl", "is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                return
            time.sleep(0.2)
        raise RuntimeError(f"the container did not finish booting (state {state!r})")

    def run(
        self,
        *command: str,
        check: bool = True,
        user: str | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 300,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in the container with a clean environment (never the host's)."""
        base = {
            "PATH": "/opt/cronflow/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8",
            "HOME": "/root",
        }
        base.update(env or {})
        inner = ["env", "-i", *(f"{k}={v}" for k, v in base.items()), *command]
        if user:
            inner = ["runuser", "-u", user, "--", *inner]
        result = subprocess.run(
            ["nsenter", "-t", str(self.leader), "-a", *inner],
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(command)} -> {result.returncode}\n{result.stdout}\n{result.stderr}"
            )
        return result

    def show(
        self, unit: str, *properties: str, user_env: dict[str, str] | None = None
    ) -> dict[str, str]:
        prefix = ["systemctl", "--user"] if user_env else ["systemctl"]
        out = self.run(*prefix, "show", unit, *(f"-p{p}" for p in properties), env=user_env).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # nspawn asks the container to power off
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.console.unlink(missing_ok=True)

"""Shared fixtures: a temp home, flow files, the real daemon as a process, a fake clock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cronflow.config import Settings, load_settings
from cronflow.executor import kill_processes, marked_processes
from cronflow.supervisor import forked_supervisor

# Real servers on 127.0.0.1 (sshd, SMTP, FTP, HTTP) as fixtures, for the operator tests.
pytest_plugins = ["servers"]

DEADLINE_S = 60.0


def wait_for(
    predicate: Callable[[], object], timeout: float = DEADLINE_S, what: str = ""
) -> object:
    """Poll a condition until it holds or the deadline passes (then fail, saying what)."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(0.02)


class FakeClock:
    """Time as a parameter: tests move it by hand."""

    def __init__(self, start: datetime) -> None:
        self.current = start

    def now(self) -> datetime:
        return self.current

    def advance(self, **delta: float) -> datetime:
        self.current += timedelta(**delta)
        return self.current


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "home"
    (home / "flows").mkdir(parents=True)
    (home / "cronflow.toml").write_text(
        "parallelism = 4\ngrace_period_s = 5\n[pools]\nstation = 1\n"
    )
    yield home
    # A test that ends while tasks of its home still run (a scheduler without a daemon, a failed
    # assertion, a kill -9 test) must not leave them running for the rest of the suite.
    kill_processes(list(marked_processes(f"{home}|", prefix=True)))
    # Warm Python attempts (cronflow.forkserver) show no marker: their supervisors' pid files.
    for pid_file in (home / "logs").rglob("*.pid") if (home / "logs").is_dir() else ():
        pid = forked_supervisor(pid_file.with_suffix(".log"))
        if pid is not None:
            kill_processes([pid])


@pytest.fixture
def settings(home: Path) -> Settings:
    return load_settings(home)


@pytest.fixture
def write_flow(home: Path) -> Callable[[str, str], Path]:
    def write(name: str, source: str) -> Path:
        path = home / "flows" / f"{name}.py"
        path.write_text(textwrap.dedent(source))
        # A new mtime even within the same clock tick, so the catalog sees the change.
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
        return path

    return write


def cli(
    home: Path, *args: str, timeout: float = 60, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """The real `cronflow` command in a subprocess."""
    env = {**os.environ, "CRONFLOW_HOME": str(home), "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "cronflow", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        input=input,
    )


class DaemonProcess:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.log_path = home / f"daemon-{time.monotonic_ns()}.out"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> DaemonProcess:
        env = {**os.environ, "CRONFLOW_HOME": str(self.home)}
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cronflow", "daemon"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        wait_for(
            lambda: "event=daemon_started" in self.output() or self.proc.poll() is not None,
            what="daemon start",
        )
        assert self.proc.poll() is None, self.output()
        return self

    def output(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = DEADLINE_S) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def daemon(home: Path) -> Iterator[Callable[[], DaemonProcess]]:
    started: list[DaemonProcess] = []

    def start() -> DaemonProcess:
        process = DaemonProcess(home).start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def is_alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split()[2] != "Z"
    except FileNotFoundError:
        return False

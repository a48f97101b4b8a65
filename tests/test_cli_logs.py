"""`cronflow logs`: which try's log, compressed logs, and every error (following a running task
with the real daemon is in test_cli_daemon.py)."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys

import pytest
from clikit import DAILY, error, invoke, ok, store

from cronflow.attempts import follow_file
from cronflow.logs import CHUNK_BYTES, attempt_log_path


@pytest.fixture
def daily(home, write_flow):
    """Run 1 of `daily`: b finished after two tries, each with its log; c has not run."""
    write_flow("daily", DAILY)
    ok(home, "backfill", "daily", "--from", "2024-03-01", "--to", "2024-03-01")
    db = store(home)
    db.update_ti(1, "b", state="success", try_number=2)
    db.update_ti(1, "d", state="failed", try_number=1)
    logical = db.run(1)["logical_date"]
    for number in (1, 2):
        path = attempt_log_path(home / "logs", "daily", "b", logical, number)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"output of try {number}\ncronflow: try {number} ended\n")
    return home


def test_logs_shows_the_last_try_by_default_and_any_try_on_demand(daily):
    assert ok(daily, "logs", "daily.b").stdout == "output of try 2\ncronflow: try 2 ended\n"
    result = ok(daily, "logs", "daily.b", "--date", "2024-03-01", "--try", "1")
    assert result.stdout == "output of try 1\ncronflow: try 1 ended\n"


def test_logs_reads_a_compressed_log(daily):
    path = attempt_log_path(daily / "logs", "daily", "b", store(daily).run(1)["logical_date"], 1)
    with gzip.open(path.with_name("try-1.log.gz"), "wb") as handle:
        handle.write(path.read_bytes())
    path.unlink()
    assert ok(daily, "logs", "daily.b", "--try", "1").stdout.startswith("output of try 1")


def test_follow_on_a_finished_task_prints_its_log_and_returns(daily):
    assert ok(daily, "logs", "daily.b", "-f").stdout == "output of try 2\ncronflow: try 2 ended\n"


def test_logs_bad_input(daily):
    assert error(daily, "logs", "daily") == (
        "bad target 'daily': expected FLOW.TASK, e.g. meteo.fetch"
    )
    assert error(daily, "logs", "daily.x") == "flow 'daily' has no task 'x' (known: a, b, c, d)"
    assert error(daily, "logs", "other.b") == "unknown flow 'other' (known: daily)"
    assert error(daily, "logs", "daily.b", "--try", "3") == "--try 3: daily.b has tries 1 to 2"
    assert error(daily, "logs", "daily.c", "--try", "1") == "--try 1: daily.c has no try yet"
    assert error(daily, "logs", "daily.c") == (
        "daily.c has not run yet in the run of 2024-03-01T02:30:00+01:00 (state none); "
        "use -f to wait for it"
    )
    assert error(daily, "logs", "daily.c", "-f") == (
        f"daily.c waits to run, but no daemon is running on {daily}"
    )
    assert error(daily, "logs", "daily.d") == "no log for try 1 of daily.d"
    store(daily).update_ti(1, "c", state="upstream_failed")
    assert error(daily, "logs", "daily.c") == (
        "daily.c did not run in the run of 2024-03-01T02:30:00+01:00 (state upstream_failed)"
    )
    assert error(daily, "logs", "daily.b", "--date", "2024-03-09").startswith(
        "flow 'daily' has no run on 2024-03-09"
    )


def test_logs_try_must_be_a_number(daily):
    result = invoke(daily, "logs", "daily.b", "--try", "last")
    assert result.exit_code == 2  # typer's own check of an int option


# --- big logs: streamed, never read whole ----------------------------------------------------------

BIG_LOG_BYTES = 96 * 1024 * 1024  # read whole, it takes the RSS well over MAX_RSS_BYTES
MAX_RSS_BYTES = 100 * 1024 * 1024  # Python, typer and cronflow take about 50 MB


def _write_big_log(path, compressed: bool, size: int = BIG_LOG_BYTES) -> int:
    """A log of `size` bytes of numbered lines; returns its uncompressed size."""
    line = b"x" * 1000 + b"\n"
    block = b"".join(b"%08d " % n + line for n in range(1000))
    target = path.with_name(path.name + ".gz") if compressed else path
    written = 0
    with gzip.open(target, "wb", compresslevel=1) if compressed else open(target, "wb") as handle:
        while written < size:
            handle.write(block)
            written += len(block)
    if compressed:
        path.unlink(missing_ok=True)
    return written


# Started by a small interpreter of its own: a child's peak RSS includes its parent's at the
# fork, and a pytest worker that ran the browser tests holds well over 100 MB.
_LAUNCH_AND_MEASURE = """
import os, sys
out = (os.POSIX_SPAWN_OPEN, 1, sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
argv = [sys.executable, "-m", "cronflow", *sys.argv[2:]]
pid = os.posix_spawn(sys.executable, argv, os.environ, file_actions=[out])
_, status, usage = os.wait4(pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss * 1024)
"""


def _peak_rss_of(home, *args: str, out_path) -> tuple[int, int]:
    """Run `cronflow ARGS` with stdout to a file: (exit code, peak RSS in bytes of that process)."""
    env = {**os.environ, "CRONFLOW_HOME": str(home), "NO_COLOR": "1"}
    launcher = subprocess.run(
        [sys.executable, "-c", _LAUNCH_AND_MEASURE, str(out_path), *args],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    code, peak = launcher.stdout.split()
    return int(code), int(peak)


@pytest.mark.parametrize(
    ("compressed", "follow"),
    [(False, False), (True, False), (False, True)],
    ids=["plain", "gzip", "follow"],
)
def test_a_big_log_is_streamed_in_bounded_memory(daily, tmp_path, compressed, follow):
    path = attempt_log_path(daily / "logs", "daily", "b", store(daily).run(1)["logical_date"], 2)
    size = _write_big_log(path, compressed)
    out = tmp_path / "shown.log"
    args = ["logs", "daily.b", *(["-f"] if follow else [])]
    code, peak = _peak_rss_of(daily, *args, out_path=out)
    assert code == 0
    assert out.stat().st_size == size
    assert peak < MAX_RSS_BYTES, f"peak RSS {peak / 1e6:.0f} MB for a {size / 1e6:.0f} MB log"


def test_following_a_growing_log_yields_bounded_chunks(tmp_path):
    path = tmp_path / "try-1.log"
    path.write_bytes(b"a" * (3 * CHUNK_BYTES + 10) + b"cronflow: try 1 ended\n")
    chunks = list(follow_file(path, lambda: False, b"cronflow: try 1 ", sleep=lambda _s: None))
    assert max(len(c) for c in chunks) <= CHUNK_BYTES
    assert b"".join(chunks) == path.read_bytes()


def test_a_reader_that_stops_early_ends_the_command_quietly(daily):
    path = attempt_log_path(daily / "logs", "daily", "b", store(daily).run(1)["logical_date"], 2)
    _write_big_log(path, compressed=False, size=8 * 1024 * 1024)  # far more than a pipe holds
    env = {**os.environ, "CRONFLOW_HOME": str(daily)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cronflow", "logs", "daily.b"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None and proc.stdout.readline().startswith(b"00000000 ")
    proc.stdout.close()  # as `| head -1` does
    assert proc.wait(60) == 0
    assert proc.stderr is not None and proc.stderr.read() == b""

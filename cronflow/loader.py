"""Finding and importing flow files.

The daemon never imports user code itself: a child process (`python -m cronflow.loader`) imports
the files one after another and sends back each file's flow specs as a JSON line. A file that
raises, exits the process, floods its output or never returns costs only its own entry: the
parent kills a child that overruns the time limit and goes on with the next file. The child
also ends when its parent does (a pipe only the parent holds reaches end of file), so a hung
import never outlives the daemon or command that started it.

While the daemon imports files beside its loop, it claims them (`claiming`): a command run
meanwhile leaves those files to the daemon (`files_claimed`) instead of waiting on the same hung
import, and uses their last loaded state.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cronflow.errors import ConfigError, CronflowError, FlowLoadError

if TYPE_CHECKING:
    from cronflow.flow import Flow


@dataclass(frozen=True)
class LoadResult:
    """What one flow file defines, or why it could not be used."""

    specs: list[dict[str, Any]]
    error: str | None = None


def flow_file_paths(flows_dir: Path) -> list[Path]:
    """Flow files: *.py directly in the flows directory, except _private.py and .hidden.py."""
    return [Path(name) for name in flow_file_names(flows_dir)]


def flow_file_names(flows_dir: Path) -> list[str]:
    """flow_file_paths as sorted strings: what the catalog stats every few seconds. A missing
    directory is an error, never "no files": that would forget every flow and its state."""
    try:
        entries = list(os.scandir(flows_dir))  # not Path.glob: 4x faster over 500 files
    except FileNotFoundError:
        raise ConfigError(
            f"the flows directory {flows_dir} does not exist: create it "
            f"(mkdir -m 700 {flows_dir}), or fix flows_dir in cronflow.toml"
        ) from None
    except NotADirectoryError:
        raise ConfigError(
            f"the flows directory {flows_dir} is not a directory: fix flows_dir in cronflow.toml"
        ) from None
    except OSError as exc:
        raise FlowLoadError(f"{flows_dir}: cannot list flow files: {exc.strerror}") from None
    return sorted(
        e.path
        for e in entries
        if e.name.endswith(".py") and not e.name.startswith(("_", ".")) and e.is_file()
    )


def import_flows(path: Path) -> list[Flow]:
    """Import one flow file in this process and return the flows it defines (in file order)."""
    from cronflow.flow import collecting_flows  # in the loading child only: CLI start-up time

    module_name = f"cronflow_flowfile_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise FlowLoadError(f"{path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    # Registered like any imported module: dataclasses, pickle and typing look it up by name.
    sys.modules[module_name] = module
    # Let a flow import helper modules kept next to it.
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    try:
        with collecting_flows() as created:
            spec.loader.exec_module(module)
    except SyntaxError as exc:
        error = f"{path}: line {exc.lineno}: SyntaxError: {exc.msg}"
    except CronflowError as exc:
        error = f"{path}{_line_in(path, exc)}: {exc}"
    except BaseException as exc:
        error = f"{path}{_line_in(path, exc)}: {type(exc).__name__}: {exc}".rstrip(": ")
    else:
        return created
    sys.modules.pop(module_name, None)
    raise FlowLoadError(error)


def _line_in(path: Path, exc: BaseException) -> str:
    """': line N' of the deepest traceback frame that is in the flow file itself."""
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if Path(frame.filename) == path:
            line = frame.lineno
    return f": line {line}" if line else ""


def describe_file(path: Path) -> LoadResult:
    """Import a file and turn its flows into specs; every failure becomes the result's error."""
    try:
        flows = import_flows(path)
        specs = []
        for flow in flows:
            try:
                specs.append(flow.spec())
            except CronflowError as exc:
                raise FlowLoadError(f"{path}: {exc}") from None
        json.dumps(specs)  # params must survive the trip to the daemon
    except FlowLoadError as exc:
        return LoadResult([], str(exc))
    except (TypeError, ValueError) as exc:
        return LoadResult([], f"{path}: params are not JSON-serialisable: {exc}")
    return LoadResult(specs)


STARTUP_LIMIT_S = 60.0  # for the import process to start, before any file's own limit
READY = b"ready\n"


def load_files(paths: Sequence[Path], timeout_s: float) -> dict[Path, LoadResult]:
    """Import files in child processes, at most `timeout_s` per file."""
    results: dict[Path, LoadResult] = {}
    pending = list(paths)
    while pending:
        _load_batch(pending, timeout_s, results)
        pending = [p for p in pending if p not in results]
    return results


def _load_batch(paths: list[Path], timeout_s: float, results: dict[Path, LoadResult]) -> None:
    read_fd, write_fd = os.pipe()
    alive_r, alive_w = os.pipe()  # never written: its end of file tells the child we are gone
    child = subprocess.Popen(
        [sys.executable, "-m", "cronflow.loader", str(write_fd), str(alive_r), *map(str, paths)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        pass_fds=(write_fd, alive_r),
        start_new_session=True,
    )
    os.close(write_fd)
    os.close(alive_r)
    buffer = bytearray()
    try:
        # The limit is per file: the interpreter's own start (seconds on a loaded machine) is
        # not charged to the first file, it has a generous limit of its own.
        ready = _read_line(read_fd, buffer, time.monotonic() + STARTUP_LIMIT_S)
        if ready != READY:
            code = child.poll()
            why = f"exit code {code}" if code is not None else f"not ready in {STARTUP_LIMIT_S:g}s"
            for path in paths:
                results[path] = LoadResult([], f"{path}: the import process did not start ({why})")
            return
        for path in paths:
            line = _read_line(read_fd, buffer, time.monotonic() + timeout_s)
            if not line:
                results[path] = LoadResult([], _no_answer(path, child, timeout_s, line is None))
                return
            answer = json.loads(line)
            results[Path(answer["path"])] = LoadResult(answer["specs"], answer["error"])
    finally:
        os.close(read_fd)
        _kill(child)
        os.close(alive_w)


def _no_answer(
    path: Path, child: subprocess.Popen[bytes], timeout_s: float, timed_out: bool
) -> str:
    if not timed_out:
        # the child closed its end of the pipe, so it is exiting: wait for its exit code
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=timeout_s)
    code = child.poll()
    if code is None:
        return f"{path}: import did not finish within {timeout_s:g}s (import_timeout_s)"
    return f"{path}: importing it ended the process (exit code {code})"


def _read_line(fd: int, buffer: bytearray, deadline: float) -> bytes | None:
    """One line from the child; b"" when the child is gone, None at the deadline.

    `buffer` keeps what was read past the line for the next call: a buffered file object would
    hide lines already received from select() and report them as timeouts."""
    while (end := buffer.find(b"\n")) < 0:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return b""
        buffer += chunk
    line = bytes(buffer[: end + 1])
    del buffer[: end + 1]
    return line


def _kill(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
    child.wait()


CLAIM_LOCK = "imports.lock"
CLAIM_LIST = "imports.json"


@contextlib.contextmanager
def claiming(home: Path, paths: Sequence[Path]) -> Iterator[None]:
    """Hold a claim on `paths` while importing them (the daemon's import thread).

    The list is written first (atomically), then the lock is taken; it is released when the
    block ends or the process dies, so a claim never outlives its importer."""
    listing = home / CLAIM_LIST
    temporary = listing.with_name(f".{CLAIM_LIST}.{os.getpid()}")
    text = json.dumps({"pid": os.getpid(), "paths": [str(p) for p in paths]})
    with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
        out.write(text)
    os.replace(temporary, listing)
    lock = os.open(home / CLAIM_LOCK, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
    finally:
        os.close(lock)  # releases the lock


def files_claimed(home: Path) -> set[str]:
    """The files another process is importing now (see `claiming`); creates nothing."""
    try:
        lock = open(home / CLAIM_LOCK)  # noqa: SIM115 - closed below
    except OSError:
        return set()
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                return set(json.loads((home / CLAIM_LIST).read_text())["paths"])
            except (OSError, ValueError, KeyError, TypeError):
                return set()
        fcntl.flock(lock, fcntl.LOCK_UN)
    return set()


def _exit_with_parent(alive_fd: int) -> None:
    """End this child as soon as its parent is gone, whatever the flow file is doing."""

    def watch() -> None:
        with contextlib.suppress(OSError):
            while os.read(alive_fd, 1024):
                pass
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _child_main(argv: list[str]) -> None:
    _exit_with_parent(int(argv[1]))
    results = os.fdopen(int(argv[0]), "w", encoding="utf-8")
    results.write(READY.decode())
    results.flush()
    for raw in argv[2:]:
        path = Path(raw)
        result = describe_file(path)
        results.write(
            json.dumps({"path": raw, "specs": result.specs, "error": result.error}) + "\n"
        )
        results.flush()


if __name__ == "__main__":
    _child_main(sys.argv[1:])

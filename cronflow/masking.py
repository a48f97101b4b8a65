"""Secret values never reach a task log: they are replaced by *** before the bytes are written.

Secrets are the store's secret variables and connection passwords, every CRONFLOW_VAR_* value
and the passwords of CRONFLOW_CONN_* URIs (the environment is where secrets kept outside the
database live), and the [smtp] password of cronflow.toml. Values shorter than MIN_SECRET_LENGTH
characters are not masked: masking "1" or "ab" everywhere would ruin every log and such a value
protects nothing.

Masking happens on the byte stream, before the log file, because `cronflow logs -f` reads the
file while the task runs (rewriting the file at the end would show the secret meanwhile):

- Python-side tasks (the worker) and callbacks redirect their own fds 1 and 2 into a pipe that a
  thread copies to the log through a Masker (`masked_output`), so the task's prints, logging,
  tracebacks and the output of programs it starts are all masked.
- Shell tasks are started directly by the daemon with their output on the log file. When the home
  has any secret at all, the daemon starts them as `python -m cronflow.masking -- bash FILE`
  instead: a small parent that runs the command with its output on a pipe and copies it to the
  log through a Masker. The rule is "any secret known", not "a secret in the rendered command",
  because a shell task also reaches secrets the daemon cannot see: its inherited environment
  (CRONFLOW_VAR_*), a script that reads a config file, `printenv`. The filter costs one short
  Python process per shell attempt, only on homes that have secrets. It keeps the command's exit
  status (and death by signal), shares its process group (so timeouts and kills reach both), and
  stops copying shortly after the command exits even if a background grandchild keeps the pipe
  open, so such a grandchild does not hold the attempt open.

Output that cannot be written to the log (disk full, quota) is dropped rather than blocking the
task, but never silently: the filter and the worker add a note to the attempt's exit record
(`OutputLoss.report`), and the daemon puts it in its own log and in the task's reason.

A secret split across two reads is still caught: the Masker holds back the end of a chunk while
it could be the start of a secret (never more than the longest secret minus one byte).
"""

from __future__ import annotations

import contextlib
import os
import posix
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from cronflow import supervisor

if TYPE_CHECKING:
    from cronflow.config import Settings
    from cronflow.store import Store

MASK = b"***"
MIN_SECRET_LENGTH = 4
DRAIN_AFTER_EXIT_S = 1.0  # how long the filter keeps copying once the command has exited
VAR_ENV_PREFIX = "CRONFLOW_VAR_"


def secret_values(
    store: Store, settings: Settings | None = None, environ: Mapping[str, str] | None = None
) -> list[str]:
    """Every value to mask, longest first."""
    values = set(store.secret_values())
    values.update(_environment_secrets(environ))
    if settings is not None and settings.smtp is not None:
        password = settings.smtp.resolved_password(environ)
        if password:
            values.add(password)
    return sorted((v for v in values if len(v) >= MIN_SECRET_LENGTH), key=len, reverse=True)


_env_cache: tuple[object, list[str]] | None = None


def _environment_secrets(environ: Mapping[str, str] | None) -> list[str]:
    """Secret values from CRONFLOW_VAR_* and CRONFLOW_CONN_* variables. For this process's
    own environment they are computed again only when those variables change: the daemon
    asks before every attempt, and decoding the whole environment each time is not free."""
    from cronflow.connections import env_secrets

    global _env_cache
    if environ is None:
        # posix.environ is the bytes dict behind os.environ (changes to os.environ reach it):
        # scanning it is ten times cheaper than os.environb's mapping layer.
        key = tuple((k, v) for k, v in posix.environ.items() if k.startswith(b"CRONFLOW_"))
        if _env_cache is not None and _env_cache[0] == key:
            return _env_cache[1]
        environ = {
            k.decode(errors="surrogateescape"): v.decode(errors="surrogateescape") for k, v in key
        }
        values = _environment_secrets(environ)
        _env_cache = (key, values)
        return values
    found = [v for k, v in environ.items() if k.startswith(VAR_ENV_PREFIX)]
    return found + env_secrets(environ)


class SecretValues:
    """`context["secrets"]`: the values to mask for an attempt, looked up on first use.

    Never renders its values: in a template or a log it is only `<secrets: N values>`."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._values: list[str] | None = None

    def values(self) -> list[str]:
        if self._values is None:
            self._values = secret_values(self._store)
        return self._values

    def __bool__(self) -> bool:
        return bool(self.values())

    def __repr__(self) -> str:
        return f"<secrets: {len(self.values())} values>"

    __str__ = __repr__


class Masker:
    """Replaces secrets by *** in text, or in a byte stream fed chunk by chunk. Where secrets
    overlap in the output, the whole overlapping stretch is masked, so no part of either shows."""

    def __init__(self, secrets: Iterable[str]) -> None:
        needles = {s.encode() for s in secrets if len(s) >= MIN_SECRET_LENGTH}
        self._needles = sorted(needles, key=len, reverse=True)
        self._pending = b""

    def __bool__(self) -> bool:
        return bool(self._needles)

    def mask(self, text: str) -> str:
        if not self._needles:
            return text
        data = text.encode(errors="surrogateescape")
        return _replace(data, _spans(data, self._needles), len(data)).decode(
            errors="surrogateescape"
        )

    def feed(self, data: bytes) -> bytes:
        """The masked bytes that are safe to write now; the rest waits for the next chunk."""
        if not self._needles:
            return data
        buffer = self._pending + data
        spans = _spans(buffer, self._needles)
        split = len(buffer) - self._partial_suffix(buffer)
        for start, end in spans:
            if start < split < end:
                split = end
        self._pending = buffer[split:]
        return _replace(buffer, spans, split)

    def flush(self) -> bytes:
        """What is still held back, masked (at the end of the stream)."""
        rest, self._pending = self._pending, b""
        return _replace(rest, _spans(rest, self._needles), len(rest))

    def _partial_suffix(self, buffer: bytes) -> int:
        """Length of the longest end of `buffer` that is the start of a secret."""
        longest = 0
        for needle in self._needles:
            for size in range(min(len(needle) - 1, len(buffer)), longest, -1):
                if buffer.endswith(needle[:size]):
                    longest = size
                    break
        return longest


def _spans(data: bytes, needles: list[bytes]) -> list[tuple[int, int]]:
    """Every stretch of `data` covered by a secret, overlapping ones merged, in order."""
    found = []
    for needle in needles:
        at = data.find(needle)
        while at >= 0:
            found.append((at, at + len(needle)))
            at = data.find(needle, at + 1)
    merged: list[tuple[int, int]] = []
    for start, end in sorted(found):
        if merged and start < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _replace(data: bytes, spans: list[tuple[int, int]], upto: int) -> bytes:
    """data[:upto] with each span (all of which end by `upto` or start after it) as ***."""
    out, last = bytearray(), 0
    for start, end in spans:
        if end > upto:
            break
        out += data[last:start] + MASK
        last = end
    out += data[last:upto]
    return bytes(out)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class OutputLoss:
    """Output that could not be written to the log: how many bytes, and the first error."""

    def __init__(self) -> None:
        self.error: OSError | None = None
        self.dropped = 0

    def write(self, fd: int, data: bytes) -> None:
        try:
            _write_all(fd, data)
        except OSError as exc:
            self.error = self.error or exc
            self.dropped += len(data)

    def report(self) -> None:
        """Say so in the attempt's exit record (the log cannot be written)."""
        if self.error is not None:
            reason = self.error.strerror or str(self.error)
            supervisor.add_note(
                f"output lost: {self.dropped} bytes could not be written to the log ({reason})"
            )


def pump(
    src: int,
    dst: int,
    masker: Masker,
    stop_at: threading.Event | None = None,
    loss: OutputLoss | None = None,
) -> None:
    """Copy src to dst through the masker until EOF (or until `stop_at` is set and src is idle).
    What cannot be written is counted in `loss`."""
    loss = loss if loss is not None else OutputLoss()
    while True:
        if stop_at is not None:
            ready = select.select([src], [], [], 0.1)[0]
            if not ready:
                if stop_at.is_set():
                    break
                continue
        try:
            chunk = os.read(src, 1 << 16)
        except OSError:
            break
        if not chunk:
            break
        loss.write(dst, masker.feed(chunk))
    loss.write(dst, masker.flush())


@contextlib.contextmanager
def masked_output(masker: Masker) -> Iterator[OutputLoss]:
    """Within the block, everything written to fds 1 and 2 (by Python or by child processes)
    goes to the original fd 1 through the masker. A no-op when there is nothing to mask.
    What could not be written is counted in the OutputLoss it gives, once the block is over."""
    loss = OutputLoss()
    if not masker:
        yield loss
        return
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    target = os.dup(1)
    read_end, write_end = os.pipe()
    saved_err = os.dup(2)
    os.dup2(write_end, 1)
    os.dup2(write_end, 2)
    os.close(write_end)
    done = threading.Event()
    thread = threading.Thread(target=pump, args=(read_end, target, masker, done, loss), daemon=True)
    thread.start()
    try:
        yield loss
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os.dup2(target, 1)
        os.dup2(saved_err, 2)
        os.close(saved_err)
        # The pipe now has no writer left in this process: the thread sees EOF, unless a
        # background child still holds it; then it stops once the pipe is idle.
        done.set()
        thread.join(DRAIN_AFTER_EXIT_S + 1.0)
        os.close(read_end)
        os.close(target)


def filter_command(argv: list[str], secrets: list[str]) -> int:
    """Run argv with its output copied to our fd 1 through a Masker; return its exit status
    (negative for a signal, like subprocess)."""
    masker = Masker(secrets)
    read_end, write_end = os.pipe()
    try:
        child = subprocess.Popen(
            argv,
            stdin=None,  # ours: end-of-file, or a Shell task's stdin= text
            stdout=write_end,
            stderr=write_end,
            close_fds=True,
        )
    except OSError as exc:
        os.close(write_end)
        os.close(read_end)
        _write_all(1, masker.mask(f"cronflow: cannot start {argv[0]}: {exc}\n").encode())
        return 127
    os.close(write_end)
    # The daemon stops an attempt by signalling its whole process group: the command gets the
    # signal too, and this filter keeps copying its last words until it has exited.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    loss = OutputLoss()
    copier = threading.Thread(target=pump, args=(read_end, 1, masker, None, loss), daemon=True)
    copier.start()
    child.wait()
    copier.join(DRAIN_AFTER_EXIT_S)
    if copier.is_alive():  # a background grandchild holds the pipe: stop copying
        loss.write(1, masker.flush())
    loss.report()
    return child.returncode


def _exit_like(code: int) -> None:
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        time.sleep(1)  # the signal ends us; not reached
    sys.exit(code)


def main(argv: list[str]) -> None:
    """`python -m cronflow.masking -- COMMAND...` (CRONFLOW_HOME in the environment)."""
    from cronflow.config import load_settings
    from cronflow.errors import CronflowError
    from cronflow.store import Store

    command = argv[1:] if argv[:1] == ["--"] else argv
    try:
        settings = load_settings(Path(os.environ["CRONFLOW_HOME"]))
        store = Store(settings.db_path)
        try:
            secrets = secret_values(store, settings)
        finally:
            store.close()
    except CronflowError as exc:  # never run the command unmasked
        print(f"cronflow: cannot read the secrets to mask, the command was not run: {exc}")
        sys.exit(1)
    _exit_like(filter_command(command, secrets))


if __name__ == "__main__":
    main(sys.argv[1:])

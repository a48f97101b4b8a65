"""`cronflow daemon`: the long-running process, in the foreground (for systemd).

The loop is "tick, then sleep until the next due instant or until something happens": a task
process ends (SIGCHLD), the CLI pokes the wake-up socket after changing the store, a signal
arrives, flow files were imported. Flow files are re-checked (one stat each) at least every
FILE_CHECK_S seconds; changed ones are imported beside the loop (cronflow.importer), never in it,
except at start: the daemon is ready once its first catalog is loaded.
One daemon per home: an flock on daemon.lock, held for the daemon's life.
"""

from __future__ import annotations

import gc
import logging
import os
import selectors
import signal
import socket
import sys
import threading
import time
from contextlib import suppress
from datetime import datetime
from pathlib import Path

from cronflow import catalog, recovery
from cronflow.catalog import Catalog
from cronflow.config import Settings
from cronflow.daemonlock import (  # poke and running_daemon_pid: for their importers
    acquire_lock,
    poke,  # noqa: F401
    running_daemon_pid,  # noqa: F401
    wakeup_address,
)
from cronflow.errors import ConfigError
from cronflow.executor import Executor, LocalExecutor, keep_inherited_descriptors
from cronflow.home import daemon_home
from cronflow.housekeeping import run_housekeeping
from cronflow.importer import Importer
from cronflow.scheduler import Clock, Scheduler, SystemClock
from cronflow.store import Store

log = logging.getLogger("cronflow.daemon")

HEARTBEAT_S = 5.0
FILE_CHECK_S = 5.0  # flow files changed by hand are seen within this; the CLI pokes at once
PREPARE_LEAD_S = 1.0  # wake this long before a fire time to prepare it (Scheduler.prepare)
HOUSEKEEPING_S = 3600.0  # retention: compress and delete old logs, remove old history
FIRST_HOUSEKEEPING_S = 5.0  # soon after start: retention is retroactive


def sd_notify(message: str) -> None:
    """systemd's notify protocol (READY=1, WATCHDOG=1, STOPPING=1); a no-op outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock, suppress(OSError):
        sock.sendto(message.encode(), address)


def heartbeat_interval() -> float:
    """Seconds between heartbeats: HEARTBEAT_S, or half systemd's watchdog period if shorter."""
    watchdog_usec = os.environ.get("WATCHDOG_USEC", "")
    if watchdog_usec.isdigit() and int(watchdog_usec) > 0:
        return min(HEARTBEAT_S, int(watchdog_usec) / 2e6)
    return HEARTBEAT_S


class Daemon:
    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self._stop_requested = False
        self._beat_s = heartbeat_interval()

    def run(self) -> None:
        lock = acquire_lock(self.settings.lock_path)
        store = Store(self.settings.db_path)
        scheduler = Scheduler(store, self.settings, make_executor(self.settings, store), self.clock)
        selector, (wake_r, wake_w), wake_sock = self._wakeup_channels()
        try:
            started = self.clock.now()
            store.record_daemon(os.getpid(), scheduler.host, started)
            # Recovery and @reboot flows need the catalog (retry delays come from it).
            self._swap_catalog(scheduler, catalog.sync(store, self.settings))
            recovered = recovery.recover(scheduler, started)
            scheduler.run_startup_flows(started)  # flows with schedule="@reboot"
            log.info(
                "event=daemon_started pid=%s home=%s flows=%s broken_files=%s parallelism=%s recovered=%s",
                os.getpid(),
                self.settings.home,
                len(scheduler.catalog.flows),
                len(scheduler.catalog.errors),
                self.settings.parallelism,
                recovered,
            )
            # What start-up built (modules, the catalog) lives as long as the daemon: out of
            # the collector's way, so that no collection at a fire time walks it all again.
            gc.freeze()
            sd_notify("READY=1")
            importer = Importer(self.settings, wake=lambda: self._nudge(wake_w))
            self._loop(scheduler, store, selector, importer)
            self._drain(scheduler, selector)
        finally:
            sd_notify("STOPPING=1")
            store.close()
            wake_sock.close()
            os.close(wake_r)  # wake_w stays open: signals and the import thread may write to it
            lock.truncate(0)  # no stale pid left behind after a clean stop
            lock.close()
        log.info("event=daemon_stopped pid=%s", os.getpid())

    def _wakeup_channels(self) -> tuple[selectors.BaseSelector, tuple[int, int], socket.socket]:
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        os.set_blocking(wake_r, False)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self._request_stop)
        signal.signal(signal.SIGINT, self._request_stop)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # only to wake the selector
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(wakeup_address(self.settings.home))
        except OSError as exc:
            # Only costs latency: CLI changes are then seen at the next idle wake (5 s).
            log.warning("event=wakeup_socket_unavailable error=%r", str(exc))
        sock.setblocking(False)
        selector = selectors.DefaultSelector()
        selector.register(wake_r, selectors.EVENT_READ)
        selector.register(sock, selectors.EVENT_READ)
        return selector, (wake_r, wake_w), sock

    @staticmethod
    def _nudge(wake_w: int) -> None:
        """Wake the loop from another thread (a full pipe wakes it anyway)."""
        with suppress(OSError):
            os.write(wake_w, b"\0")

    def _request_stop(self, signum: int, _frame: object) -> None:
        self._stop_requested = True

    def _loop(
        self,
        scheduler: Scheduler,
        store: Store,
        selector: selectors.BaseSelector,
        importer: Importer,
    ) -> None:
        last_check = last_beat = time.monotonic()
        next_housekeeping = last_check + FIRST_HOUSEKEEPING_S
        housekeeper: threading.Thread | None = None
        poked = False
        while not self._stop_requested:
            if time.monotonic() >= next_housekeeping and not (
                housekeeper and housekeeper.is_alive()
            ):
                housekeeper = threading.Thread(
                    target=self._housekeep, name="housekeeping", daemon=True
                )
                housekeeper.start()
                next_housekeeping = time.monotonic() + HOUSEKEEPING_S
            now_mono = time.monotonic()
            # A poke: the CLI changed the store (maybe added a flow): look at once.
            if poked or importer.take_recorded() or now_mono - last_check >= FILE_CHECK_S:
                self._check_files(scheduler, store, importer)
                last_check = now_mono
            next_at = scheduler.tick(self.clock.now())
            if now_mono - last_beat >= self._beat_s:
                store.heartbeat(self.clock.now())
                sd_notify("WATCHDOG=1")
                last_beat = now_mono
            fire_at = scheduler.next_fire_at
            prepare, wait_s = next_wait(self.clock.now(), next_at, fire_at, scheduler.prepared_for)
            if prepare and fire_at is not None:
                # Ahead of the fire time: prepare it, and look at the files now rather than
                # at the fire time, which then only creates and starts the runs.
                self._check_files(scheduler, store, importer)
                last_check = time.monotonic()
                scheduler.prepare(fire_at)
                wait_s = (next_at - self.clock.now()).total_seconds()
            poked = self._wait(selector, min(max(wait_s, 0.0), FILE_CHECK_S, self._beat_s))

    def _check_files(self, scheduler: Scheduler, store: Store, importer: Importer) -> None:
        """Serve the flow files' current state; changed ones go to the importer."""
        current, to_import = catalog.refresh(store, self.settings)
        self._swap_catalog(scheduler, current)
        importer.submit(to_import)

    @staticmethod
    def _swap_catalog(scheduler: Scheduler, current: Catalog) -> None:
        """Serve a new catalog; its newly broken files are warnings (whoever imported them)."""
        if current is scheduler.catalog:
            return
        before = scheduler.catalog.errors
        for path, error in sorted(current.errors.items()):
            if before.get(path) != error:
                log.warning("event=flow_file_broken path=%s error=%r", path, error)
        scheduler.catalog = current

    def _housekeep(self) -> None:
        """Retention in a thread with its own store connection, so the loop never waits on it."""
        try:
            store = Store(self.settings.db_path)
            try:
                run_housekeeping(self.settings, store, self.clock.now())
            finally:
                store.close()
        except Exception as exc:
            log.error("event=housekeeping_failed error=%r", str(exc))

    def _wait(self, selector: selectors.BaseSelector, timeout_s: float) -> bool:
        """Sleep until an event or the timeout; True if the CLI poked us."""
        poked = False
        for key, _ in selector.select(timeout_s):
            if isinstance(key.fileobj, socket.socket):
                with suppress(BlockingIOError):
                    while key.fileobj.recv(64):
                        poked = True
            else:
                with suppress(BlockingIOError):
                    while os.read(key.fd, 512):
                        pass
        return poked

    def _drain(self, scheduler: Scheduler, selector: selectors.BaseSelector) -> None:
        """SIGTERM: no new work; let running tasks finish within the grace period, then stop
        them and leave them to run again at the next start. The daemon stops every process of
        its tasks itself: the systemd unit's KillMode=process leaves them to it, so that a
        crash (not a stop) leaves running tasks to the next daemon."""
        scheduler.stopping = True
        running = len(scheduler.executor.running())
        log.info(
            "event=daemon_stopping running_tasks=%s grace_period_s=%s",
            running,
            self.settings.grace_period_s,
        )
        deadline = time.monotonic() + self.settings.grace_period_s
        while scheduler.executor.running() and time.monotonic() < deadline:
            scheduler.tick(self.clock.now())
            self._wait(selector, min(0.5, max(0.0, deadline - time.monotonic())))
        if scheduler.executor.running():
            scheduler.interrupt_all("interrupted by the daemon's shutdown")
            while scheduler.executor.running():
                scheduler.tick(self.clock.now())
                self._wait(selector, 0.2)
        scheduler.tick(self.clock.now())
        # Under systemd's KillMode=process nothing else ends what tasks left outside their
        # session; a crash, unlike this stop, leaves running tasks to the next daemon.
        stray = recovery.stop_strays(scheduler)
        if stray:
            log.warning("event=stray_processes_killed count=%s", stray)


def next_wait(
    now: datetime, next_at: datetime, fire_at: datetime | None, prepared_for: datetime | None
) -> tuple[bool, float]:
    """After a tick: whether to prepare the next fire time `fire_at` now, and how long to
    sleep before the next tick (until `next_at`, or until PREPARE_LEAD_S before a fire time
    not prepared yet)."""
    wait_s = (next_at - now).total_seconds()
    if fire_at is None or fire_at == prepared_for:
        return False, wait_s
    lead_s = (fire_at - now).total_seconds()
    if lead_s <= 0:  # already due (a catch-up): nothing to do ahead of it
        return False, wait_s
    if lead_s <= PREPARE_LEAD_S:
        return True, wait_s
    return False, min(wait_s, lead_s - PREPARE_LEAD_S)


def make_executor(settings: Settings, store: Store) -> Executor:
    """The executor cronflow.toml asks for; Celery is imported only when it is the one."""
    if settings.executor != "celery":
        return LocalExecutor(settings.parallelism, settings.warm, settings.task_umask)
    try:
        from cronflow.celery.executor import CeleryExecutor
    except ImportError as exc:
        raise ConfigError(
            f'executor = "celery" needs the celery extra: pip install "cronflow[celery]" ({exc})'
        ) from None
    return CeleryExecutor(settings, store)


def configure_logging() -> None:
    """One line per event on stdout (journald adds the time under systemd)."""
    handler = logging.StreamHandler(sys.stdout)
    stamp = "" if os.environ.get("INVOCATION_ID") else "%(asctime)s "
    handler.setFormatter(logging.Formatter(f"{stamp}level=%(levelname)s %(message)s"))
    root = logging.getLogger("cronflow")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def run_daemon(home: Path) -> None:
    """The daemon on an existing home, or on an empty directory it sets up (see home.py)."""
    configure_logging()
    keep_inherited_descriptors()
    settings = daemon_home(home)
    # Tasks without cwd= run in the home wherever the daemon was started, as under its units
    # (WorkingDirectory=): a relative path in a flow means the same by hand and as a service.
    os.chdir(settings.home)
    Daemon(settings).run()

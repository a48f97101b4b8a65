"""The daemon's flow file imports, in a thread beside its scheduling loop.

Importing a flow file runs user code: it takes up to import_timeout_s (30 s by default) when it
hangs. The loop must not wait for that: fire times, sensor pokes and CLI wake-ups would queue
behind it, and systemd's watchdog could kill the daemon as hung. So the loop only looks at the
files (one stat each) and builds its catalog from the store; the files to import come here. This
thread imports them with its own store connection (a short write transaction per file), claims
them meanwhile so that commands leave them to it (cronflow.loader.claiming), and wakes the loop,
which builds the new catalog and swaps it in. Until then the last good catalog keeps serving.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from cronflow import catalog
from cronflow.catalog import Signature
from cronflow.config import Settings
from cronflow.loader import claiming
from cronflow.store import Store

log = logging.getLogger("cronflow.daemon")

LOGGED_PATHS = 10  # a first start or a format change imports every file: name only a few


class Importer:
    """One thread that imports the files it is given, one batch after another."""

    def __init__(self, settings: Settings, wake: Callable[[], None]) -> None:
        self.settings = settings
        self._wake = wake
        self._work = threading.Condition()
        self._pending: dict[str, Signature] = {}
        self._busy: dict[str, Signature] = {}
        self._recorded = False
        self._thread = threading.Thread(target=self._run, name="flow-imports", daemon=True)
        self._thread.start()

    def submit(self, files: Mapping[str, Signature]) -> None:
        """Import these files (not again if one waits or is being imported as it is now)."""
        with self._work:
            new = {
                path: sig
                for path, sig in files.items()
                if self._busy.get(path) != sig and self._pending.get(path) != sig
            }
            if new:
                self._pending.update(new)
                self._work.notify()

    def take_recorded(self) -> bool:
        """Whether files were recorded since the last call (the catalog is then built again)."""
        with self._work:
            recorded, self._recorded = self._recorded, False
        return recorded

    def busy(self) -> list[str]:
        """The files being imported now."""
        with self._work:
            return sorted(self._busy)

    def _run(self) -> None:
        store: Store | None = None
        while True:
            with self._work:
                while not self._pending:
                    self._work.wait()
                batch, self._pending = self._pending, {}
                self._busy = batch
            shown = ",".join(list(batch)[:LOGGED_PATHS]) + (
                ",..." if len(batch) > LOGGED_PATHS else ""
            )
            log.info("event=flow_import_started files=%s paths=%s", len(batch), shown)
            try:
                store = store or Store(self.settings.db_path)  # this thread's own connection
                with claiming(self.settings.home, [Path(p) for p in batch]):
                    catalog.import_files(store, self.settings, batch)
            except Exception as exc:  # a bug or a store error: the loop asks again soon
                log.error("event=flow_import_failed files=%s error=%r", len(batch), str(exc))
            finally:
                with self._work:
                    self._busy = {}
                    self._recorded = True
                self._wake()

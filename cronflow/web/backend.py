"""The web process's one connection to the home: a single thread owns the store.

The Store is not thread-safe and a page needs a consistent catalog, so every page's work (sync
the catalog, query, render) runs on one dedicated thread, one request at a time, while the event
loop stays free for static files, /healthz and waiting clients. A request gets a Context: the
settings, the store, the catalog synced for it, and the moment it is answered at.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, TypeVar

from cronflow import catalog
from cronflow.catalog import Catalog
from cronflow.config import Settings
from cronflow.daemonlock import running_daemon_pid
from cronflow.store import Store

T = TypeVar("T")


@dataclass
class Context:
    settings: Settings
    store: Store
    cat: Catalog
    now: datetime

    @cached_property
    def daemon_pid(self) -> int | None:
        return running_daemon_pid(self.settings.home)


class Backend:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="cronflow-store")
        self._store: Store | None = None

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(context, *args) on the store's thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._call, fn, args)

    def _call(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        if self._store is None:
            self._store = Store(self.settings.db_path)
        cat = catalog.sync(self._store, self.settings)
        return fn(Context(self.settings, self._store, cat, datetime.now(UTC)), *args)

    def close(self) -> None:
        def close_store() -> None:
            if self._store is not None:
                self._store.close()
                self._store = None

        self._thread.submit(close_store).result()
        self._thread.shutdown()

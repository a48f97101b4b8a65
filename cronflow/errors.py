"""Every error cronflow raises on purpose.

All of them subclass CronflowError, so the CLI can turn any of them into a one-line message and
exit code 2, while an unexpected exception (a bug) keeps its traceback. The errors of the home
and of the state database build their message from what failed, so it always says where and
what to do, whichever part of cronflow ran into it.
"""

from __future__ import annotations

from pathlib import Path


class CronflowError(Exception):
    """Base of every expected cronflow error; its message is shown to the user as is."""


class ConfigError(CronflowError, ValueError):
    """cronflow.toml or CRONFLOW_HOME is unusable."""


class ScheduleError(CronflowError, ValueError):
    """A cron expression, a timezone or a date is invalid."""


class FlowDefinitionError(CronflowError, ValueError):
    """A flow file defines something invalid: a cycle, a duplicate id, an unknown dependency."""


class FlowLoadError(CronflowError):
    """A flow file could not be imported (syntax error, exception, time limit)."""


class NotFoundError(CronflowError, LookupError):
    """An unknown flow, task, run, variable or connection."""


class InvalidInputError(CronflowError, ValueError):
    """A command-line value is malformed or ambiguous (a date, a state, JSON conf)."""


class TemplateError(CronflowError, ValueError):
    """A task argument refers to a template value that does not exist."""


class DaemonError(CronflowError):
    """The daemon cannot start or cannot be reached (e.g. another one holds the home's lock)."""


class HomeNotFoundError(ConfigError):
    """CRONFLOW_HOME (or --home) names no cronflow home: only `cronflow init` creates one, so a
    typo in the path is an error instead of a new, empty home that runs nothing."""

    def __init__(self, home: Path, detail: str = "") -> None:
        self.home = home
        super().__init__(f"no cronflow home at {home}{detail} (run `cronflow init`)")


class HomeAccessError(ConfigError):
    """The home (or a file in it) exists, but this user may not read or write it."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        super().__init__(
            f"cannot use {path}: {reason}; run cronflow as the home's owner, or fix its permissions"
        )


class StoreError(CronflowError):
    """The state store cannot be opened or used, or is newer than this cronflow."""


class StoreLockedError(StoreError):
    """Another connection held the database's write lock for longer than the busy timeout."""

    def __init__(self, path: Path, waited_s: float) -> None:
        self.path = path
        super().__init__(
            f"the state database {path} stayed locked by another writer for {waited_s:g} s: "
            "retry, and look for what holds it (an open `sqlite3` shell, a copy in progress)"
        )


class StoreCorruptError(StoreError):
    """The database file is damaged, or is not a SQLite database at all."""

    def __init__(self, path: Path, detail: str) -> None:
        self.path = path
        super().__init__(
            f"the state database {path} is damaged ({detail}): stop the daemon, then restore "
            f"a copy made by `cronflow db backup`, or recover what is left: "
            f"sqlite3 {path} .recover | sqlite3 recovered.db"
        )


class StoreAccessError(StoreError):
    """The database or its directory cannot be read or written: permissions, a read-only file
    system, a full disk, an I/O error."""

    def __init__(self, path: Path, detail: str, action: str) -> None:
        self.path = path
        super().__init__(f"cannot use the state database {path}: {detail}; {action}")

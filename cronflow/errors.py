"""Every error cronflow raises on purpose.

All of them subclass CronflowError, so the CLI can turn any of them into a one-line message and
exit code 2, while an unexpected exception (a bug) keeps its traceback.
"""

from __future__ import annotations


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


class StoreError(CronflowError):
    """The state store cannot be opened or is newer than this cronflow."""

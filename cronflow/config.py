"""CRONFLOW_HOME and cronflow.toml -> one Settings object.

The home holds cronflow.toml, the state database, logs/ and (by default) flows/. Every setting
has an embedded default, so an empty or missing cronflow.toml is a valid configuration, and
every number has sane bounds, so a slip of the keyboard is an error on load naming the key and
the file. A directory is a home once `cronflow init` made it one (it holds cronflow.toml or
cronflow.db): only `init` creates a home, so a typo in CRONFLOW_HOME is an error, never a new
empty home that runs nothing.
"""

from __future__ import annotations

import os
import pwd
import re
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from cronflow.errors import ConfigError, HomeAccessError, HomeNotFoundError

CONFIG_NAME = "cronflow.toml"
DB_NAME = "cronflow.db"
DEFAULT_POOL = "default"

DEFAULT_CONFIG_TEXT = """\
# cronflow configuration. Every key is optional; the values shown are the defaults.

# Where flow files live (relative paths are relative to this home).
flows_dir = "flows"

# How many tasks may run at once on this server (default: the number of CPU cores).
# parallelism = 4

# Seconds a flow file may take to import before it is reported as broken.
import_timeout_s = 30

# On SIGTERM: seconds to let running tasks finish before they are stopped and left for retry.
grace_period_s = 30

# The umask tasks start with (files they create: 644, directories: 755), as under cron; the
# daemon keeps its own files private whatever this says.
task_umask = "022"

# Python tasks start warm: forked by a process that has imported cronflow and these modules
# once (your tasks' heavy libraries, e.g. ["pandas"]); false starts each as a new interpreter.
warm_python = true
# warm_imports = []

# Task logs are compressed, then deleted, and their total size is capped; run history older than
# delete_runs_after_days is removed with its logs (0 keeps it forever), the audit trail (who
# changed what) after delete_audit_after_days. Checked hourly.
[retention]
compress_logs_after_days = 7
delete_logs_after_days = 90
max_logs_mb = 2048
delete_runs_after_days = 365
delete_audit_after_days = 365

# Named pools limit how many tasks of a kind run at once (e.g. connections to one station).
[pools]
default = 128

# The mail server for failure alerts (email_on_failure) and Email tasks without a conn_id.
# [smtp]
# host = "mail.example.com"
# port = 587                               # 587 with STARTTLS (default), 465 with ssl = true
# starttls = true
# user = "cronflow"
# password_env = "CRONFLOW_SMTP_PASSWORD"  # or password = "..." (keep this file owner-only)
# from = "cronflow@example.com"
"""


@dataclass(frozen=True)
class Retention:
    """How long task logs and run history are kept ([retention] in cronflow.toml)."""

    compress_logs_after_days: float = 7.0
    delete_logs_after_days: float = 90.0
    max_logs_mb: float = 2048.0
    delete_runs_after_days: float = 365.0  # 0 keeps run history forever (and missed deadlines)
    delete_audit_after_days: float = 365.0  # the audit trail (who changed what); 0 keeps it


@dataclass(frozen=True)
class SmtpSettings:
    """The mail server for alerts and Email tasks without a connection ([smtp] in cronflow.toml).

    `security` is "starttls" (the default), "ssl" (TLS from the first byte, port 465) or "none".
    The password is in the file (`password`) or, better, in an environment variable named by
    `password_env`."""

    host: str
    port: int
    security: str = "starttls"
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    password_env: str | None = None
    sender: str = "cronflow@localhost"
    ca_file: str | None = None
    timeout_s: float = 30.0

    def resolved_password(self, environ: Mapping[str, str] | None = None) -> str | None:
        if self.password_env:
            return (os.environ if environ is None else environ).get(self.password_env)
        return self.password


@dataclass(frozen=True)
class CelerySettings:
    """[celery] in cronflow.toml (executor = "celery"): the Redis broker, given as `broker_url`
    or, better (it may hold a password), as the name of an environment variable holding it;
    how soon a silent worker counts as lost and a task nobody takes is dispatched again; and
    per-queue caps on the tasks sent at once ([celery.queues] gpu = 2)."""

    broker_url: str | None = field(default=None, repr=False)
    broker_url_env: str | None = None
    heartbeat_timeout_s: float = 30.0
    queued_timeout_s: float = 600.0
    namespace: str = "cronflow"  # prefix of every Redis key: several homes may share a Redis
    queues: dict[str, int] = field(default_factory=dict)

    def resolved_broker_url(self, environ: Mapping[str, str] | None = None) -> str | None:
        if self.broker_url_env:
            return (os.environ if environ is None else environ).get(self.broker_url_env)
        return self.broker_url


@dataclass(frozen=True)
class Settings:
    """Everything the daemon and the CLI need to know about a home."""

    home: Path
    flows_dir: Path
    parallelism: int
    pools: dict[str, int] = field(default_factory=dict)
    import_timeout_s: float = 30.0
    grace_period_s: float = 30.0
    retention: Retention = field(default_factory=lambda: Retention())
    smtp: SmtpSettings | None = None
    xcom_max_bytes: int = 64 * 1024
    executor: str = "local"  # or "celery": tasks with a queue run on workers ([celery])
    celery: CelerySettings = field(default_factory=lambda: CelerySettings())
    warm_python: bool = True  # Python-side attempts forked by a warm server (cronflow.forkserver)
    warm_imports: tuple[str, ...] = ()  # modules that server imports beside cronflow
    task_umask: int = 0o022  # every attempt's (the daemon's own is 077 under systemd)

    @property
    def warm(self) -> list[str] | None:
        """What the local executor's fork server imports beside cronflow; None: no server."""
        return list(self.warm_imports) if self.warm_python else None

    @property
    def db_path(self) -> Path:
        return self.home / DB_NAME

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def lock_path(self) -> Path:
        return self.home / "daemon.lock"

    @property
    def wakeup_path(self) -> Path:
        """Unix datagram socket the CLI pokes so the daemon sees its changes at once."""
        return self.home / "daemon.sock"

    def pool_slots(self, pool: str) -> int | None:
        """Slots of a pool, or None if the pool is not configured."""
        return self.pools.get(pool)


SERVICE_HOME = Path("/var/lib/cronflow")


def home_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The home: an explicit path, else $CRONFLOW_HOME, else ~/.cronflow, else the system
    service's home (/var/lib/cronflow) when only that one exists, so root and the service user
    reach the service's flows without setting anything."""
    raw = explicit or os.environ.get("CRONFLOW_HOME")
    if raw:
        return Path(raw).expanduser().absolute()
    personal = Path("~/.cronflow").expanduser().absolute()
    # os.path.exists, not Path.exists: a home we may not even look into counts as absent.
    if not os.path.exists(personal) and os.path.exists(SERVICE_HOME / "cronflow.db"):
        return SERVICE_HOME
    return personal


def is_home(home: Path) -> bool:
    """Whether `cronflow init` made this directory a home (it holds cronflow.toml or
    cronflow.db). HomeAccessError if this user may not even look into it."""
    try:
        return (home / CONFIG_NAME).exists() or (home / DB_NAME).exists()
    except PermissionError:
        raise HomeAccessError(home, denied_text(home)) from None


def require_home(home: Path) -> None:
    """What every command but `init` (and `check`, which needs none) asks first."""
    if not is_home(home):
        raise HomeNotFoundError(home)


def denied_text(path: Path) -> str:
    """'permission denied (owner root, mode 0700; you are nobody)', as far as can be seen."""
    you = _user_name(os.geteuid())
    try:
        info = os.stat(path)
    except OSError:
        return f"permission denied (you are {you})"
    mode = oct(stat.S_IMODE(info.st_mode)).replace("0o", "0")
    return f"permission denied (owner {_user_name(info.st_uid)}, mode {mode}; you are {you})"


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def load_settings(home: Path | None = None) -> Settings:
    """Read cronflow.toml of a home (missing file = defaults); ConfigError names file and key."""
    home = home or home_path()
    path = home / CONFIG_NAME
    data: dict[str, object] = {}
    try:
        present = path.exists()
    except PermissionError:
        raise HomeAccessError(home, denied_text(home)) from None
    if present:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except PermissionError:
            raise HomeAccessError(path, denied_text(path)) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    return _settings_from(home, path, data)


_KNOWN_KEYS = {
    "flows_dir",
    "parallelism",
    "import_timeout_s",
    "grace_period_s",
    "pools",
    "retention",
    "smtp",
    "xcom_max_bytes",
    "executor",
    "celery",
    "warm_python",
    "warm_imports",
    "task_umask",
}
EXECUTORS = ("local", "celery")


def _settings_from(home: Path, path: Path, data: dict[str, object]) -> Settings:
    unknown = sorted(set(data) - _KNOWN_KEYS)
    if unknown:
        known = ", ".join(sorted(_KNOWN_KEYS))
        raise ConfigError(f"{path}: unknown key '{unknown[0]}' (known: {known})")
    flows_dir = Path(str(_typed(path, data, "flows_dir", str, "flows"))).expanduser()
    pools = _typed(path, data, "pools", dict, {})
    low, high = BOUNDS["pools"]
    for name, slots in pools.items():
        if not isinstance(slots, int) or isinstance(slots, bool) or not low <= slots <= high:
            raise ConfigError(
                f"{path}: pools.{name} must be an integer between {low} and {high:,}, got {slots!r}"
            )
    pools.setdefault(DEFAULT_POOL, 128)
    return Settings(
        home=home,
        flows_dir=flows_dir if flows_dir.is_absolute() else home / flows_dir,
        parallelism=_bounded(path, data, "parallelism", int, min(os.cpu_count() or 2, 1024)),
        pools=pools,
        import_timeout_s=_bounded(path, data, "import_timeout_s", float, 30.0),
        grace_period_s=_bounded(path, data, "grace_period_s", float, 30.0),
        retention=_retention(path, _typed(path, data, "retention", dict, {})),
        smtp=_smtp(path, _typed(path, data, "smtp", dict, {})),
        xcom_max_bytes=_bounded(path, data, "xcom_max_bytes", int, 64 * 1024),
        executor=_executor(path, data),
        celery=_celery(path, _typed(path, data, "celery", dict, {})),
        warm_python=_flag(path, data, "warm_python", True),
        warm_imports=_module_names(path, data, "warm_imports"),
        task_umask=_umask(path, data, "task_umask"),
    )


def _umask(path: Path, data: dict[str, object], key: str) -> int:
    """An umask written as in a shell: three or four octal digits in a string ("022"). It
    must leave the owner read and write: the try's exit record is written under it."""
    value = data.get(key, "022")
    if not isinstance(value, str) or not re.fullmatch(r"0?[0-7]{3}", value):
        raise ConfigError(
            f'{path}: {key} must be an octal umask in quotes like "022", got {value!r}'
        )
    if int(value, 8) & 0o600:
        raise ConfigError(
            f"{path}: {key} must leave the owner read and write permission "
            f'(like "022" or "077"), got {value!r}'
        )
    return int(value, 8)


def _flag(path: Path, data: dict[str, object], key: str, default: bool) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{path}: {key} must be true or false, got {value!r}")
    return value


def _module_names(path: Path, data: dict[str, object], key: str) -> tuple[str, ...]:
    """A list of importable module names (`pandas`, `numpy.linalg`)."""
    names = _typed(path, data, key, list, [])
    for name in names:
        if not isinstance(name, str) or not all(part.isidentifier() for part in name.split(".")):
            raise ConfigError(f"{path}: {key} must list module names, got {name!r}")
    return tuple(names)


def _executor(path: Path, data: dict[str, object]) -> str:
    executor = _typed(path, data, "executor", str, "local")
    if executor not in EXECUTORS:
        raise ConfigError(
            f"{path}: executor must be one of {', '.join(EXECUTORS)}, got {executor!r}"
        )
    if executor == "celery" and not isinstance(data.get("celery"), dict):
        raise ConfigError(
            f'{path}: executor = "celery" needs a [celery] section with broker_url_env'
        )
    return str(executor)


def _celery(path: Path, data: dict[str, object]) -> CelerySettings:
    """[celery]: broker_url or broker_url_env, the timeouts, namespace, [celery.queues]."""
    known = CelerySettings.__dataclass_fields__
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{path}: unknown key 'celery.{unknown[0]}' (known: {', '.join(known)})")
    if data.get("broker_url") is not None and data.get("broker_url_env") is not None:
        raise ConfigError(
            f"{path}: celery.broker_url and celery.broker_url_env exclude each other; "
            "prefer broker_url_env"
        )
    values: dict[str, Any] = {}
    for key in ("broker_url", "broker_url_env", "namespace"):
        if key in data:
            values[key] = _typed(path, data, key, str, None)
    for key in ("heartbeat_timeout_s", "queued_timeout_s"):
        if key in data:
            values[key] = _check_bounds(path, f"celery.{key}", _typed(path, data, key, float, 0.0))
    queues = _typed(path, data, "queues", dict, {})
    low, high = BOUNDS["pools"]
    for name, slots in queues.items():
        if not isinstance(slots, int) or isinstance(slots, bool) or not low <= slots <= high:
            raise ConfigError(
                f"{path}: celery.queues.{name} must be an integer between {low} and {high:,}, "
                f"got {slots!r}"
            )
    return CelerySettings(**values, queues=dict(queues))


# The bounds of every number of cronflow.toml, both included (a low bound of 0 for a duration
# or a size means "more than 0"). Retention's days and megabytes may be 0: kept forever / no cap.
BOUNDS: dict[str, tuple[float, float]] = {
    "parallelism": (1, 1024),
    "pools": (1, 10_000),
    "import_timeout_s": (0, 3600),
    "grace_period_s": (0, 86_400),
    "xcom_max_bytes": (1, 16 * 1024 * 1024),
    "retention.compress_logs_after_days": (0, 36_500),
    "retention.delete_logs_after_days": (0, 36_500),
    "retention.max_logs_mb": (0, 100_000_000),
    "retention.delete_runs_after_days": (0, 36_500),
    "retention.delete_audit_after_days": (0, 36_500),
    "smtp.timeout_s": (0, 3600),
    "celery.heartbeat_timeout_s": (0, 86_400),
    "celery.queued_timeout_s": (0, 7 * 86_400),
}
_MAY_BE_ZERO = {key for key in BOUNDS if key.startswith("retention.")}


def _retention(path: Path, data: dict[str, object]) -> Retention:
    known = Retention.__dataclass_fields__
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(
            f"{path}: unknown key 'retention.{unknown[0]}' (known: {', '.join(known)})"
        )
    values = {}
    for key, field_info in known.items():
        value = _typed(path, data, key, float, field_info.default)
        values[key] = _check_bounds(path, f"retention.{key}", value)
    return Retention(**values)


_SMTP_KEYS = {
    "host": str,
    "port": int,
    "starttls": bool,
    "ssl": bool,
    "user": str,
    "password": str,
    "password_env": str,
    "from": str,
    "ca_file": str,
    "timeout_s": float,
}


def _smtp(path: Path, data: dict[str, object]) -> SmtpSettings | None:
    """[smtp]: host (required), port, starttls / ssl, user, password or password_env, from."""
    if not data:
        return None
    unknown = sorted(set(data) - set(_SMTP_KEYS))
    if unknown:
        raise ConfigError(
            f"{path}: unknown key 'smtp.{unknown[0]}' (known: {', '.join(_SMTP_KEYS)})"
        )
    for key, kind in _SMTP_KEYS.items():
        value = data.get(key)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            data[key] = value = float(value)
        if value is not None and (
            not isinstance(value, kind) or (kind is not bool and isinstance(value, bool))
        ):
            raise ConfigError(f"{path}: smtp.{key} must be {kind.__name__}, got {value!r}")
    if not data.get("host"):
        raise ConfigError(f'{path}: [smtp] needs host = "mail.example.com"')
    if data.get("ssl") and data.get("starttls"):
        raise ConfigError(f"{path}: smtp.ssl and smtp.starttls exclude each other; pick one")
    if data.get("password") is not None and data.get("password_env") is not None:
        raise ConfigError(
            f"{path}: smtp.password and smtp.password_env exclude each other; prefer password_env"
        )
    security = "ssl" if data.get("ssl") else "starttls" if data.get("starttls", True) else "none"
    port = _checked(data, "port", int)
    if port is None:
        port = {"ssl": 465, "starttls": 587, "none": 25}[security]
    if not 0 < port < 65536:
        raise ConfigError(f"{path}: smtp.port must be between 1 and 65535, got {port!r}")
    timeout_s = _checked(data, "timeout_s", float)
    return SmtpSettings(
        host=str(data["host"]),
        port=port,
        security=security,
        user=_checked(data, "user", str),
        password=_checked(data, "password", str),
        password_env=_checked(data, "password_env", str),
        sender=str(data.get("from") or f"cronflow@{os.uname().nodename}"),
        ca_file=_checked(data, "ca_file", str),
        timeout_s=_check_bounds(path, "smtp.timeout_s", 30.0 if timeout_s is None else timeout_s),
    )


_T = TypeVar("_T")
_Number = TypeVar("_Number", int, float)


def _checked(data: Mapping[str, object], key: str, kind: type[_T]) -> _T | None:
    """data[key], which the caller has checked is a `kind` when present, typed as one."""
    value = data.get(key)
    return value if isinstance(value, kind) else None


def _typed(path: Path, data: dict[str, object], key: str, kind: type[_T], default: object) -> _T:
    value = data.get(key, default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ConfigError(f"{path}: {key} must be {kind.__name__}, got {value!r}")
    return value


def _bounded(
    path: Path, data: dict[str, object], key: str, kind: type[_Number], default: object
) -> _Number:
    return _check_bounds(path, key, _typed(path, data, key, kind, default))


def _check_bounds(path: Path, key: str, value: _Number) -> _Number:
    """The value if it is within BOUNDS[key], else one line naming the file, key and bounds
    (NaN is within no bounds)."""
    low, high = BOUNDS[key]
    if low == 0 and key not in _MAY_BE_ZERO:
        if not 0 < value <= high:
            raise ConfigError(
                f"{path}: {key} must be more than 0 and at most {high:,}, got {value!r}"
            )
    elif not low <= value <= high:
        raise ConfigError(f"{path}: {key} must be between {low} and {high:,}, got {value!r}")
    return value

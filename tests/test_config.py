"""Tests for cronflow.config (CRONFLOW_HOME, cronflow.toml) and cronflow.timeparse."""

from __future__ import annotations

import os
import re
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from cronflow.config import (
    CONFIG_NAME,
    DEFAULT_CONFIG_TEXT,
    Settings,
    home_path,
    load_settings,
)
from cronflow.errors import ConfigError, InvalidInputError
from cronflow.timeparse import (
    from_iso,
    iso,
    parse_date_or_datetime,
    parse_duration,
    start_of_day,
    to_utc,
)

PARIS = ZoneInfo("Europe/Paris")


def write_config(home: Path, text: str) -> Path:
    path = home / CONFIG_NAME
    path.write_text(text, encoding="utf-8")
    return path


# --- settings -----------------------------------------------------------------------------------


def test_defaults_without_a_config_file(tmp_path: Path) -> None:
    settings = load_settings(tmp_path)
    assert settings == Settings(
        home=tmp_path,
        flows_dir=tmp_path / "flows",
        parallelism=os.cpu_count() or 2,
        pools={"default": 128},
        import_timeout_s=30.0,
        grace_period_s=30.0,
    )
    assert settings.db_path == tmp_path / "cronflow.db"
    assert settings.logs_dir == tmp_path / "logs"
    assert settings.lock_path == tmp_path / "daemon.lock"
    assert settings.wakeup_path == tmp_path / "daemon.sock"
    assert not (tmp_path / CONFIG_NAME).exists(), "reading settings must not create files"


def test_an_empty_config_file_means_defaults(tmp_path: Path) -> None:
    write_config(tmp_path, "# nothing set\n")
    assert load_settings(tmp_path) == Settings(
        home=tmp_path,
        flows_dir=tmp_path / "flows",
        parallelism=os.cpu_count() or 2,
        pools={"default": 128},
    )


def test_the_default_config_text_is_valid_and_says_the_defaults(tmp_path: Path) -> None:
    write_config(tmp_path, DEFAULT_CONFIG_TEXT)
    assert load_settings(tmp_path) == Settings(
        home=tmp_path,
        flows_dir=tmp_path / "flows",
        parallelism=os.cpu_count() or 2,
        pools={"default": 128},
        import_timeout_s=30.0,
        grace_period_s=30.0,
    )


def test_a_valid_config_file(tmp_path: Path) -> None:
    write_config(
        tmp_path,
        """
        flows_dir = "my-flows"
        parallelism = 4
        import_timeout_s = 5
        grace_period_s = 2.5

        [pools]
        station = 2
        """,
    )
    settings = load_settings(tmp_path)
    assert settings.flows_dir == tmp_path / "my-flows"
    assert settings.parallelism == 4
    assert settings.import_timeout_s == 5.0
    assert isinstance(settings.import_timeout_s, float)
    assert settings.grace_period_s == 2.5
    assert settings.pools == {"station": 2, "default": 128}
    assert settings.pool_slots("station") == 2
    assert settings.pool_slots("default") == 128
    assert settings.pool_slots("unknown") is None


def test_the_default_pool_can_be_resized(tmp_path: Path) -> None:
    write_config(tmp_path, "[pools]\ndefault = 8\n")
    assert load_settings(tmp_path).pools == {"default": 8}


def test_absolute_flows_dir_is_kept(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    home = tmp_path / "home"
    home.mkdir()
    write_config(home, f'flows_dir = "{elsewhere}"\n')
    assert load_settings(home).flows_dir == elsewhere


def test_flows_dir_with_a_tilde_is_in_the_user_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    home = tmp_path / "home"
    home.mkdir()
    write_config(home, 'flows_dir = "~/flows"\n')
    assert load_settings(home).flows_dir == tmp_path / "user" / "flows"


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, "parallelism = \n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: invalid TOML: .*line 1"):
        load_settings(tmp_path)


def test_unreadable_config_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / CONFIG_NAME
    path.write_bytes(b"flows_dir = '\xff\xfe'\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: cannot read"):
        load_settings(tmp_path)


def test_a_directory_in_place_of_the_config_file(tmp_path: Path) -> None:
    (tmp_path / CONFIG_NAME).mkdir()
    with pytest.raises(
        ConfigError, match=rf"^{re.escape(str(tmp_path / CONFIG_NAME))}: cannot read"
    ):
        load_settings(tmp_path)


def test_unknown_key_names_it_and_the_known_keys(tmp_path: Path) -> None:
    path = write_config(tmp_path, "paralelism = 4\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path)
    message = str(caught.value)
    assert message.startswith(f"{path}: unknown key 'paralelism' (known: ")
    assert "parallelism" in message.split("(known: ")[1]


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ('parallelism = "4"', r"parallelism must be int, got '4'"),
        ("parallelism = 2.5", r"parallelism must be int, got 2.5"),
        ("parallelism = true", r"parallelism must be int, got True"),
        ("parallelism = 0", r"parallelism must be between 1 and 1,024, got 0"),
        ("parallelism = -3", r"parallelism must be between 1 and 1,024, got -3"),
        ('import_timeout_s = "30s"', r"import_timeout_s must be float, got '30s'"),
        ("import_timeout_s = false", r"import_timeout_s must be float, got False"),
        (
            "import_timeout_s = 0",
            r"import_timeout_s must be more than 0 and at most 3,600, got 0.0",
        ),
        (
            "grace_period_s = -1.5",
            r"grace_period_s must be more than 0 and at most 86,400, got -1.5",
        ),
        ("grace_period_s = [30]", r"grace_period_s must be float, got \[30\]"),
        ("flows_dir = 3", r"flows_dir must be str, got 3"),
        ("flows_dir = true", r"flows_dir must be str, got True"),
        ("pools = 4", r"pools must be dict, got 4"),
        ("pools = [1, 2]", r"pools must be dict, got \[1, 2\]"),
        ("task_umask = 22", r'task_umask must be an octal umask in quotes like "022", got 22'),
        (
            'task_umask = "0o22"',
            r"task_umask must be an octal umask in quotes like \"022\", got '0o22'",
        ),
        (
            'task_umask = "089"',
            r"task_umask must be an octal umask in quotes like \"022\", got '089'",
        ),
        (
            'task_umask = "u=rwx"',
            r"task_umask must be an octal umask in quotes like \"022\", got 'u=rwx'",
        ),
        (
            'task_umask = "277"',
            r"task_umask must leave the owner read and write permission "
            r"\(like \"022\" or \"077\"\), got '277'",
        ),
        (
            'task_umask = "0777"',
            r"task_umask must leave the owner read and write permission "
            r"\(like \"022\" or \"077\"\), got '0777'",
        ),
    ],
)
def test_wrong_types_name_file_key_and_value(tmp_path: Path, text: str, pattern: str) -> None:
    path = write_config(tmp_path, text + "\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: {pattern}$"):
        load_settings(tmp_path)


@pytest.mark.parametrize(
    ("text", "umask"), [("", 0o022), ('task_umask = "027"', 0o027), ('task_umask = "0007"', 0o007)]
)
def test_task_umask(tmp_path: Path, text: str, umask: int) -> None:
    write_config(tmp_path, text + "\n")
    assert load_settings(tmp_path).task_umask == umask


@pytest.mark.parametrize(
    ("slots", "shown"),
    [
        ("0", "0"),
        ("-2", "-2"),
        ('"3"', "'3'"),
        ("1.5", "1.5"),
        ("true", "True"),
        ("{ slots = 3 }", r"\{'slots': 3\}"),
        ("10001", "10001"),
        ("99999999999999999999", "99999999999999999999"),
    ],
)
def test_bad_pool_slots(tmp_path: Path, slots: str, shown: str) -> None:
    path = write_config(tmp_path, f"[pools]\nstation = {slots}\n")
    with pytest.raises(
        ConfigError,
        match=rf"^{re.escape(str(path))}: pools.station must be an integer between 1 and 10,000, "
        rf"got {shown}$",
    ):
        load_settings(tmp_path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("parallelism = 100000", "parallelism must be between 1 and 1,024, got 100000"),
        (
            "parallelism = 99999999999999999999",
            "parallelism must be between 1 and 1,024, got 99999999999999999999",
        ),
        (
            "import_timeout_s = nan",
            "import_timeout_s must be more than 0 and at most 3,600, got nan",
        ),
        (
            "import_timeout_s = inf",
            "import_timeout_s must be more than 0 and at most 3,600, got inf",
        ),
        (
            "import_timeout_s = 3601",
            "import_timeout_s must be more than 0 and at most 3,600, got 3601.0",
        ),
        (
            "grace_period_s = 1e12",
            "grace_period_s must be more than 0 and at most 86,400, got 1000000000000.0",
        ),
        (
            "grace_period_s = -inf",
            "grace_period_s must be more than 0 and at most 86,400, got -inf",
        ),
        ("xcom_max_bytes = 0", "xcom_max_bytes must be between 1 and 16,777,216, got 0"),
        (
            "xcom_max_bytes = 1073741824",
            "xcom_max_bytes must be between 1 and 16,777,216, got 1073741824",
        ),
        (
            "[retention]\ndelete_runs_after_days = 1e10",
            "retention.delete_runs_after_days must be between 0 and 36,500, got 10000000000.0",
        ),
        (
            "[retention]\ncompress_logs_after_days = nan",
            "retention.compress_logs_after_days must be between 0 and 36,500, got nan",
        ),
        (
            "[retention]\nmax_logs_mb = -1",
            "retention.max_logs_mb must be between 0 and 100,000,000, got -1.0",
        ),
        (
            '[smtp]\nhost = "mail"\ntimeout_s = 0',
            "smtp.timeout_s must be more than 0 and at most 3,600, got 0.0",
        ),
        (
            '[smtp]\nhost = "mail"\ntimeout_s = nan',
            "smtp.timeout_s must be more than 0 and at most 3,600, got nan",
        ),
    ],
)
def test_numbers_out_of_bounds_are_one_line_naming_file_and_key(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write_config(tmp_path, text + "\n")
    with pytest.raises(ConfigError) as raised:
        load_settings(tmp_path)
    assert str(raised.value) == f"{path}: {message}"


def test_numbers_at_their_bounds_are_accepted(tmp_path: Path) -> None:
    write_config(
        tmp_path,
        "parallelism = 1024\nimport_timeout_s = 3600\ngrace_period_s = 0.5\n"
        "xcom_max_bytes = 16777216\n[pools]\nbig = 10000\n"
        "[retention]\ndelete_runs_after_days = 0\nmax_logs_mb = 0\n",
    )
    settings = load_settings(tmp_path)
    assert (settings.parallelism, settings.import_timeout_s, settings.grace_period_s) == (
        1024,
        3600.0,
        0.5,
    )
    assert settings.pools["big"] == 10_000 and settings.retention.max_logs_mb == 0


def test_config_error_is_a_value_error(tmp_path: Path) -> None:
    write_config(tmp_path, "parallelism = 0\n")
    with pytest.raises(ValueError, match="parallelism"):
        load_settings(tmp_path)


# --- CRONFLOW_HOME ------------------------------------------------------------------------------


def test_home_from_cronflow_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRONFLOW_HOME", str(tmp_path))
    assert home_path() == tmp_path


def test_explicit_home_wins_over_cronflow_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRONFLOW_HOME", str(tmp_path / "from-env"))
    assert home_path(tmp_path / "explicit") == tmp_path / "explicit"
    assert home_path(str(tmp_path / "explicit")) == tmp_path / "explicit"


def test_home_defaults_to_dot_cronflow_in_the_user_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CRONFLOW_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert home_path() == tmp_path / ".cronflow"


def test_empty_cronflow_home_means_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRONFLOW_HOME", "")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert home_path() == tmp_path / ".cronflow"


def test_cronflow_home_with_a_tilde(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("CRONFLOW_HOME", "~/cf")
    assert home_path() == tmp_path / "cf"


def test_relative_cronflow_home_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CRONFLOW_HOME", "relative/home")
    home = home_path()
    assert home.is_absolute()
    assert home == tmp_path / "relative" / "home"


def test_load_settings_reads_the_home_of_cronflow_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(tmp_path, "parallelism = 3\n")
    monkeypatch.setenv("CRONFLOW_HOME", str(tmp_path))
    settings = load_settings()
    assert settings.home == tmp_path
    assert settings.parallelism == 3
    assert settings.flows_dir == tmp_path / "flows"


def test_load_settings_of_a_missing_home_gives_defaults_without_creating_it(
    tmp_path: Path,
) -> None:
    home = tmp_path / "not-yet"
    assert load_settings(home).flows_dir == home / "flows"
    assert not home.exists()


# --- parse_duration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (0, 0.0),
        (90, 90.0),
        (1.5, 1.5),
        (timedelta(minutes=2), 120.0),
        (timedelta(0), 0.0),
        ("0", 0.0),
        ("90", 90.0),
        ("2.5", 2.5),
        ("90s", 90.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("90d", 7776000.0),
        ("1w", 604800.0),
        ("250ms", 0.25),
        ("1h30m", 5400.0),
        ("1h 30m", 5400.0),
        ("1.5h", 5400.0),
        ("1d2h3m4s", 93784.0),
        (" 5m ", 300.0),
        ("5M", 300.0),
        ("10 s", 10.0),
    ],
)
def test_parse_duration(value: object, seconds: float) -> None:
    result = parse_duration(value)  # type: ignore[arg-type]
    assert result == seconds
    assert isinstance(result, float)


@pytest.mark.parametrize(
    ("value", "pattern"),
    [
        ("", r"cannot read ''"),
        ("   ", r"cannot read '   '"),
        ("five minutes", r"cannot read 'five minutes'"),
        ("5x", r"cannot read '5x'"),
        ("m5", r"cannot read 'm5'"),
        ("1h30", r"cannot read '1h30'"),
        ("5m and more", r"cannot read '5m and more'"),
        ("-5m", r"cannot read '-5m'"),
        ("1e3", r"cannot read '1e3'"),
        (-1, r"must not be negative, got -1"),
        (-0.5, r"must not be negative, got -0.5"),
        (timedelta(seconds=-1), r"must not be negative"),
        (True, r"expected seconds, a timedelta or text like '5m', got True"),
        (None, r"expected seconds, a timedelta or text like '5m', got None"),
        ([5], r"expected seconds"),
    ],
)
def test_parse_duration_errors_name_what(value: object, pattern: str) -> None:
    with pytest.raises(InvalidInputError, match=rf"^retry_delay: {pattern}"):
        parse_duration(value, "retry_delay")  # type: ignore[arg-type]


def test_parse_duration_default_name() -> None:
    with pytest.raises(InvalidInputError, match=r"^duration: "):
        parse_duration("soon")


# --- parse_date_or_datetime ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-03-01", date(2024, 3, 1)),
        (" 2024-03-01 ", date(2024, 3, 1)),
        ("2024-02-29", date(2024, 2, 29)),
        ("2024-03-01T02:30", datetime(2024, 3, 1, 2, 30, tzinfo=PARIS)),
        ("2024-03-01 02:30:15", datetime(2024, 3, 1, 2, 30, 15, tzinfo=PARIS)),
        ("2024-03-01T02:30:00Z", datetime(2024, 3, 1, 2, 30, tzinfo=UTC)),
        (
            "2024-03-01T02:30:00+05:30",
            datetime(2024, 3, 1, 2, 30, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        ),
        (
            "2024-03-01T02:30:00-04:00",
            datetime(2024, 3, 1, 2, 30, tzinfo=timezone(timedelta(hours=-4))),
        ),
    ],
)
def test_parse_date_or_datetime(text: str, expected: date | datetime) -> None:
    result = parse_date_or_datetime(text, PARIS)
    assert type(result) is type(expected)
    assert result == expected
    if isinstance(result, datetime):
        assert result.utcoffset() == expected.utcoffset()  # type: ignore[union-attr]


def test_naive_datetime_takes_the_given_zone() -> None:
    result = parse_date_or_datetime("2024-07-01T08:00", PARIS)
    assert isinstance(result, datetime)
    assert result.tzinfo is PARIS
    assert to_utc(result) == datetime(2024, 7, 1, 6, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("2024-02-30", r"bad date '2024-02-30': no such day"),
        ("2023-02-29", r"bad date '2023-02-29': no such day"),
        ("2024-13-01", r"bad date '2024-13-01': no such day"),
        ("2024-02-30T01:00", r"bad date '2024-02-30T01:00': use YYYY-MM-DD"),
        ("2024-03-01T25:00", r"bad date '2024-03-01T25:00'"),
        ("yesterday", r"bad date 'yesterday': use YYYY-MM-DD or an ISO date-time"),
        ("", r"bad date ''"),
        ("01/03/2024", r"bad date '01/03/2024'"),
    ],
)
def test_parse_date_or_datetime_errors(text: str, pattern: str) -> None:
    with pytest.raises(InvalidInputError, match=pattern):
        parse_date_or_datetime(text, PARIS)


def test_invalid_input_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="no such day"):
        parse_date_or_datetime("2024-02-30", PARIS)


# --- small helpers ------------------------------------------------------------------------------


def test_start_of_day_is_local_midnight_in_utc() -> None:
    assert start_of_day(date(2024, 3, 1), PARIS) == datetime(2024, 2, 29, 23, tzinfo=UTC)
    assert start_of_day(date(2024, 7, 1), PARIS) == datetime(2024, 6, 30, 22, tzinfo=UTC)
    assert start_of_day(date(2024, 3, 1), ZoneInfo("UTC")).tzinfo is UTC


def test_start_of_day_when_midnight_does_not_exist() -> None:
    # Santiago skips from 00:00 to 01:00 on 8 September 2024: the day starts at 01:00 -03
    santiago = ZoneInfo("America/Santiago")
    assert start_of_day(date(2024, 9, 8), santiago) == datetime(2024, 9, 8, 4, tzinfo=UTC)


def test_iso_round_trip() -> None:
    moment = datetime(2024, 3, 1, 2, 30, tzinfo=PARIS)
    text = iso(moment)
    assert text == "2024-03-01T01:30:00+00:00"
    assert from_iso(text) == moment
    assert iso(None) is None
    assert from_iso(None) is None
    assert (
        iso(datetime(2024, 3, 1, 2, 30, 0, 500, tzinfo=UTC)) == "2024-03-01T02:30:00.000500+00:00"
    )

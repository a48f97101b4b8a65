"""Tests for cronflow.templates: rendering, errors, shell quoting, and execution-date values."""

from __future__ import annotations

import shlex
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from cronflow.errors import TemplateError
from cronflow.templates import date_context, lookup, placeholders, render
from cronflow.timetable import Schedule

PARIS = ZoneInfo("Europe/Paris")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.fixture
def context() -> dict[str, Any]:
    return {
        "ds": "2024-03-01",
        "ds_nodash": "20240301",
        "flow_id": "ingest",
        "try_number": 2,
        "params": {"station": "north", "src": "my file; rm -rf ~", "list": [1, 2], "n": 0},
        "conf": {"day": "2024-02-29", "nested": {"a": 1}},
        "var": {"api_url": "https://example.test/api?x=1&y=2", "with-dash": "ok"},
    }


# --- render -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("fetch --day {{ ds }}", "fetch --day 2024-03-01"),
        ("{{ds}}", "2024-03-01"),
        ("{{   ds_nodash   }}", "20240301"),
        ("{{ ds }}/{{ ds }}", "2024-03-01/2024-03-01"),
        ("station={{ params.station }}", "station=north"),
        ("{{ conf.day }}", "2024-02-29"),
        ("{{ var.api_url }}", "https://example.test/api?x=1&y=2"),
        ("{{ var.with-dash }}", "ok"),
        ("try {{ try_number }}", "try 2"),
        ("{{ params.n }}", "0"),
        ("{{ params.list }}", "[1, 2]"),
        ("{{ conf.nested }}", '{"a": 1}'),
        ("no placeholders at all", "no placeholders at all"),
        ("", ""),
        ("{ ds } and {{ }} stay", "{ ds } and {{ }} stay"),
        ("{{ ds }", "{{ ds }"),
    ],
)
def test_render(context: dict[str, Any], text: str, expected: str) -> None:
    assert render(text, context) == expected


def test_rendered_values_are_not_rendered_again() -> None:
    context = {"ds": "2024-03-01", "params": {"evil": "{{ ds }}"}}
    assert render("{{ params.evil }}", context) == "{{ ds }}"


def test_unknown_name_lists_the_known_names(context: dict[str, Any]) -> None:
    with pytest.raises(TemplateError) as caught:
        render("fetch {{ dss }}", context)
    message = str(caught.value)
    assert "'{{ dss }}'" in message
    assert f"(known: {', '.join(sorted(context))})" in message


def test_unknown_name_with_a_key_names_the_whole_placeholder(context: dict[str, Any]) -> None:
    with pytest.raises(TemplateError, match=r"unknown template value '\{\{ param\.station \}\}'"):
        render("{{ param.station }}", context)


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("{{ params.stattion }}", r"'\{\{ params\.stattion \}\}': no key 'stattion' in params"),
        ("{{ var.missing }}", r"no key 'missing' in var"),
        ("{{ conf.day2 }}", r"no key 'day2' in conf"),
        ("{{ ds.year }}", r"no key 'year' in ds"),  # a string has no keys
        ("{{ try_number.x }}", r"no key 'x' in try_number"),
    ],
)
def test_unknown_key(context: dict[str, Any], text: str, pattern: str) -> None:
    with pytest.raises(TemplateError, match=pattern):
        render(text, context)


def test_template_error_is_a_value_error(context: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="nope"):
        render("{{ nope }}", context)


def test_lookup_reads_any_mapping() -> None:
    class Lazy(dict[str, str]):
        def __missing__(self, key: str) -> str:
            raise KeyError(key)

    assert lookup("var.a", {"var": Lazy(a="1")}) == "1"
    assert lookup("params", {"params": {"a": 1}}) == {"a": 1}


# --- escape -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{{{ ds }}", "{{ ds }}"),
        ("literal {{{{ and {{ ds }}", "literal {{ and 2024-03-01"),
        ("{{{{{{{{", "{{{{"),
        ("jq '{{{{x: 1}}'", "jq '{{x: 1}}'"),
    ],
)
def test_four_braces_stay_two_literal_braces(
    context: dict[str, Any], text: str, expected: str
) -> None:
    assert render(text, context) == expected


def test_values_are_never_read_as_escapes_or_templates() -> None:
    """A value is put in as it is: a NUL in it was once turned into '{{' (the escape's marker)."""
    values = {"a": "x\0y", "b": "{{{{ {{ a }}"}
    assert render("{{ a }} {{{{ {{ b }}", values) == "x\0y {{ {{{{ {{ a }}"


def test_placeholders_lists_names_but_not_escaped_ones() -> None:
    text = "{{ ds }} {{{{ not_me }} {{params.station}} {{ var.x }}"
    assert placeholders(text) == ["ds", "params.station", "var.x"]


# --- shell quoting ------------------------------------------------------------------------------


def test_quote_keeps_a_value_with_spaces_and_semicolon_one_argument(
    context: dict[str, Any],
) -> None:
    command = render("cp {{ params.src }} /data", context, quote=shlex.quote)
    assert shlex.split(command) == ["cp", "my file; rm -rf ~", "/data"]


def test_quote_leaves_plain_values_readable(context: dict[str, Any]) -> None:
    assert render("fetch {{ ds }}", context, quote=shlex.quote) == "fetch 2024-03-01"


@pytest.mark.parametrize(
    "value",
    [
        "a b; touch {marker}",
        "$(touch {marker})",
        "`touch {marker}`",
        "x' ; touch {marker}; echo '",
        'x" ; touch {marker}; echo "',
        "a && touch {marker} || true",
        "line\ntouch {marker}",
        "*",
        "",
    ],
)
def test_quoted_value_cannot_inject_a_command(tmp_path: Path, value: str) -> None:
    marker = tmp_path / "injected"
    value = value.format(marker=marker)
    command = render("printf '%s\\0' {{ params.x }}", {"params": {"x": value}}, quote=shlex.quote)
    out = subprocess.run(
        ["/bin/sh", "-c", command], capture_output=True, check=True, cwd=tmp_path, timeout=10
    ).stdout
    assert out == value.encode() + b"\0"  # exactly one argument, unchanged
    assert not marker.exists()


def test_quote_applies_to_non_string_values() -> None:
    quoted = render("{{ params.list }}", {"params": {"list": [1, 2]}}, quote=shlex.quote)
    assert shlex.split(quoted) == ["[1, 2]"]


# --- date_context -------------------------------------------------------------------------------


def test_date_context_uses_the_local_date_in_paris() -> None:
    # 23:30 UTC on 1 March is 00:30 on 2 March in Paris: ds is the local date
    logical = utc(2024, 3, 1, 23, 30)
    interval = (utc(2024, 2, 29, 23, 30), logical)
    ctx = date_context(logical, interval, PARIS, None, None)
    assert ctx == {
        "ds": "2024-03-02",
        "ds_nodash": "20240302",
        "ts": "2024-03-02T00:30:00+01:00",
        "ts_nodash": "20240302T003000",
        "logical_date": "2024-03-02T00:30:00+01:00",
        "data_interval_start": "2024-03-01T00:30:00+01:00",
        "data_interval_end": "2024-03-02T00:30:00+01:00",
        "prev_ds": "2024-03-01",
        "next_ds": "2024-03-03",
    }


def test_date_context_in_summer_time() -> None:
    logical = utc(2024, 7, 14, 22, 15)  # 00:15 on 15 July, CEST
    ctx = date_context(logical, (logical - timedelta(days=1), logical), PARIS, None, None)
    assert ctx["ds"] == "2024-07-15"
    assert ctx["ts"] == "2024-07-15T00:15:00+02:00"


def test_date_context_in_utc_is_the_utc_date() -> None:
    logical = utc(2024, 3, 1, 23, 30)
    ctx = date_context(logical, (logical, logical), ZoneInfo("UTC"), None, None)
    assert ctx["ds"] == "2024-03-01"
    assert ctx["ts"] == "2024-03-01T23:30:00+00:00"


@pytest.mark.parametrize(
    ("prev_at", "next_at", "prev_ds", "next_ds"),
    [
        # without a schedule: the day before and the day after
        (None, None, "2024-03-09", "2024-03-11"),
        # weekly schedule: the neighbouring fire times
        (utc(2024, 3, 3, 1), utc(2024, 3, 17, 1), "2024-03-03", "2024-03-17"),
        # neighbours just across local midnight
        (utc(2024, 3, 9, 23, 30), utc(2024, 3, 10, 22, 59), "2024-03-10", "2024-03-10"),
    ],
)
def test_prev_ds_and_next_ds(
    prev_at: datetime | None, next_at: datetime | None, prev_ds: str, next_ds: str
) -> None:
    logical = utc(2024, 3, 10, 1)  # 02:00 in Paris
    ctx = date_context(logical, (logical, logical), PARIS, prev_at, next_at)
    assert ctx["ds"] == "2024-03-10"
    assert (ctx["prev_ds"], ctx["next_ds"]) == (prev_ds, next_ds)


def test_prev_and_next_ds_from_a_schedule_across_the_spring_dst_jump() -> None:
    schedule = Schedule.parse("30 2 * * *", "Europe/Paris")
    logical = schedule.next_after(utc(2024, 3, 30, 12))  # the skipped 02:30 runs at 03:00 CEST
    assert logical is not None
    prev_at, next_at = schedule.prev_before(logical), schedule.next_after(logical)
    ctx = date_context(logical, (logical, logical), PARIS, prev_at, next_at)
    assert (ctx["prev_ds"], ctx["ds"], ctx["next_ds"]) == ("2024-03-30", "2024-03-31", "2024-04-01")


@pytest.mark.parametrize(
    ("logical", "expected"),
    [
        # 00:30 CEST on 27 October, a 25-hour day: 24 hours later is still 27 October
        (utc(2024, 10, 26, 22, 30), ("2024-10-26", "2024-10-27", "2024-10-28")),
        # 23:30 CET on 27 October
        (utc(2024, 10, 27, 22, 30), ("2024-10-26", "2024-10-27", "2024-10-28")),
        # 00:30 CEST on 1 April, after a 23-hour day: 24 hours earlier is 30 March
        (utc(2024, 3, 31, 22, 30), ("2024-03-31", "2024-04-01", "2024-04-02")),
        # 23:30 CET on 30 March, before the 23-hour day: 24 hours later is 1 April
        (utc(2024, 3, 30, 22, 30), ("2024-03-29", "2024-03-30", "2024-03-31")),
    ],
)
def test_default_prev_and_next_ds_are_the_neighbouring_local_days_across_dst(
    logical: datetime, expected: tuple[str, str, str]
) -> None:
    ctx = date_context(logical, (logical, logical), PARIS, None, None)
    assert (ctx["prev_ds"], ctx["ds"], ctx["next_ds"]) == expected


def test_date_context_renders_in_a_command() -> None:
    logical = utc(2024, 3, 1, 23, 30)
    ctx = date_context(logical, (logical, logical), PARIS, None, None)
    assert render("load {{ ds_nodash }} {{ ts }}", ctx, quote=shlex.quote) == (
        "load 20240302 2024-03-02T00:30:00+01:00"
    )

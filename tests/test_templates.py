"""Tests for cronflow.templates (Jinja2, sandboxed, strict, shell-safe) and cronflow.macros
(the date values, macros and filters)."""

from __future__ import annotations

import shlex
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cronflow.errors import TemplateError
from cronflow.macros import LocalDateTime, date_context, ds_add, ds_format
from cronflow.templates import literal, render, template_problems
from cronflow.timetable import Schedule

PARIS = ZoneInfo("Europe/Paris")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.fixture
def context() -> dict[str, Any]:
    logical = utc(2024, 3, 1, 1, 30)  # 02:30 in Paris
    values = date_context(logical, (utc(2024, 2, 29, 1, 30), logical), PARIS, None, None)
    values.update(
        flow_id="ingest",
        try_number=2,
        params={"station": "north", "src": "my file; rm -rf ~", "list": [1, 2], "n": 0},
        conf={"day": "2024-02-29", "nested": {"a": 1}},
        var={"api_url": "https://example.test/api?x=1&y=2", "with-dash": "ok"},
    )
    return values


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
        ("{{ var['with-dash'] }}", "ok"),
        ("try {{ try_number }}", "try 2"),
        ("{{ params.n }}", "0"),
        ("{{ params.list }}", "[1, 2]"),
        ("{{ conf.nested }}", '{"a": 1}'),
        ("no placeholders at all", "no placeholders at all"),
        ("", ""),
        ("{ ds } stays", "{ ds } stays"),
        ("trailing newline\n", "trailing newline\n"),
        # the date values print as before (ISO 8601 with the offset) and are real datetimes
        ("{{ ts }}", "2024-03-01T02:30:00+01:00"),
        ("{{ logical_date }}", "2024-03-01T02:30:00+01:00"),
        ("{{ data_interval_start }}", "2024-02-29T02:30:00+01:00"),
        ("{{ logical_date.strftime('%Y%m%d%H%M') }}", "202403010230"),
        ("{{ logical_date.hour }}", "2"),
        ("{{ '%02d' % logical_date.hour }}", "02"),
        ("{{ logical_date - macros.timedelta(hours=3) }}", "2024-02-29T23:30:00+01:00"),
        ("{{ logical_date.astimezone(macros.timezone.utc) }}", "2024-03-01T01:30:00+00:00"),
        # filters and macros
        ("{{ logical_date | strftime('%Y%m%d%H') }}", "2024030102"),
        ("{{ ts | strftime('%H:%M') }}", "02:30"),
        ("{{ ds | strftime('%d/%m') }}", "01/03"),
        ("{{ ds | ds_add(-1) }}", "2024-02-29"),
        ("{{ macros.ds_add(ds, 7) }}", "2024-03-08"),
        ("{{ macros.ds_format(ds, '%Y-%m-%d', '%d/%m/%Y') }}", "01/03/2024"),
        ("{{ ds | ds_format('%Y-%m-%d', '%Y%j') }}", "2024061"),
        ("{{ data_interval_start | ds }}", "2024-02-29"),
        ("{{ logical_date | ds_nodash }}", "20240301"),
        ("{{ logical_date | ts_nodash }}", "20240301T023000"),
        ("{{ logical_date | ts_nodash_with_tz }}", "20240301T023000+0100"),
        # Jinja's own statements and filters
        ("{% if logical_date.hour < 12 %}am{% else %}pm{% endif %}", "am"),
        ("{% for s in params.list %}{{ s }},{% endfor %}", "1,2,"),
        ("{{ params.missing | default('none') }}", "none"),
        ("{{ params.station | upper }}", "NORTH"),
        ("{% set day = ds | ds_add(1) %}{{ day }}", "2024-03-02"),
        ("{# a comment #}x", "x"),
    ],
)
def test_render(context: dict[str, Any], text: str, expected: str) -> None:
    assert render(text, context) == expected


def test_the_issue_examples(context: dict[str, Any]) -> None:
    ten_minutes = date_context(
        utc(2024, 3, 1, 13, 50), (utc(2024, 3, 1, 13, 40),) * 2, PARIS, None, None
    )
    meteo = "outbox/meteo_{{ logical_date.strftime('%Y%m%d%H%M') }}.csv"
    assert render(meteo, ten_minutes) == "outbox/meteo_202403011450.csv"
    hourly = date_context(utc(2024, 3, 1, 6), (utc(2024, 3, 1, 5),) * 2, PARIS, None, None)
    gnss = "rinex/{{ ds_nodash }}{{ '%02d' % logical_date.hour }}.obs"
    assert render(gnss, hourly) == "rinex/2024030107.obs"
    assert render("rinex/{{ logical_date | strftime('%Y%m%d%H') }}.obs", hourly) == (
        "rinex/2024030107.obs"
    )


def test_rendered_values_are_not_rendered_again() -> None:
    context = {"ds": "2024-03-01", "params": {"evil": "{{ ds }}"}}
    assert render("{{ params.evil }}", context) == "{{ ds }}"


def test_a_key_wins_over_a_method_of_the_same_name() -> None:
    context = {"params": {"items": "mine", "keys": 3}}
    assert render("{{ params.items }} {{ params.keys }}", context) == "mine 3"
    assert render("{{ params.get('nope', 'fallback') }}", context) == "fallback"


def test_compiled_templates_are_cached(context: dict[str, Any]) -> None:
    from cronflow.templates import _compiled

    _compiled.cache_clear()
    for _ in range(3):
        render("fetch {{ ds }} {{ params.station }}", context)
    info = _compiled.cache_info()
    assert (info.misses, info.hits) == (1, 2)
    render("plain text, nothing to render", context)
    assert _compiled.cache_info().misses == 1  # text without '{' never reaches Jinja


# --- errors -------------------------------------------------------------------------------------


def test_unknown_name_lists_the_known_names(context: dict[str, Any]) -> None:
    with pytest.raises(TemplateError) as caught:
        render("fetch {{ dss }}", context)
    message = str(caught.value)
    assert "unknown template value '{{ dss }}'" in message
    assert f"(known: {', '.join(sorted(context))})" in message


def test_internal_context_entries_are_not_template_values(context: dict[str, Any]) -> None:
    context.update(secrets=["s3cr3t-value"], store=object(), settings=object())
    for name in ("secrets", "store", "settings"):
        with pytest.raises(TemplateError, match=f"unknown template value '{{{{ {name} }}}}'"):
            render(f"{{{{ {name} }}}}", context)


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("{{ param.station }}", r"unknown template value '\{\{ param \}\}'"),
        (
            "{{ params.stattion }}",
            r"'\{\{ params\.stattion \}\}': no key 'stattion' in params \(has: list, n, src, station\)",
        ),
        ("{{ var.missing }}", r"no key 'missing' in var"),
        ("{{ conf.day2 }}", r"no key 'day2' in conf"),
        ("{{ ds.year }}", r"'\{\{ ds\.year \}\}': ds has no attribute 'year'"),
        ("{{ dss + 1 }}", r"unknown template value '\{\{ dss \}\}'"),
        ("{{ params.stattion | upper }}", r"no key 'stattion' in params"),
        (
            "{{ ''.__class__.__mro__ }}",
            r"access to attribute '__class__' of 'str' object is unsafe",
        ),
        ("{{ ds | ds_add('x') }}", r"ValueError"),
        ("{{ 1 / 0 }}", r"ZeroDivisionError"),
        (
            "{{ ds | no_such_filter }}",
            r"template syntax error in .*: No filter named 'no_such_filter'",
        ),
        ("{% if ds %}no end", r"template syntax error in .*Unexpected end of template"),
        ("echo ${#list[@]}", r"Missing end of comment tag; for literal .*\{% raw %\}"),
    ],
)
def test_errors_name_what_is_wrong(context: dict[str, Any], text: str, pattern: str) -> None:
    with pytest.raises(TemplateError, match=pattern):
        render(text, context)


def test_a_syntax_error_on_a_later_line_says_which() -> None:
    with pytest.raises(TemplateError, match=r"\(line 2\)"):
        render("echo ok\necho {{ ds ", {"ds": "x"})


def test_template_error_is_a_value_error(context: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="nope"):
        render("{{ nope }}", context)


def test_the_sandbox_refuses_what_a_template_must_not_reach() -> None:
    class Holder:
        def __init__(self) -> None:
            self._private = "hidden"

    context = {"obj": Holder(), "fn": render}
    for text in ("{{ obj._private }}", "{{ fn.__globals__ }}", "{{ obj.__init__.__globals__ }}"):
        with pytest.raises(TemplateError, match="unsafe"):
            render(text, context)


# --- literal braces -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{% raw %}{{ ds }}{% endraw %}", "{{ ds }}"),
        ("{{ '{{' }} ds }}", "{{ ds }}"),
        # `{{{{`, the escape of cronflow's first template language, still reads as `{{`
        ("{{{{ ds }}", "{{ ds }}"),
        ("literal {{{{ and {{ ds }}", "literal {{ and 2024-03-01"),
        ("jq '{{{{x: 1}}'", "jq '{{x: 1}}'"),
        ("{% raw %}{{{{ stays {{{{{% endraw %} {{{{", "{{{{ stays {{{{ {{"),
    ],
)
def test_literal_braces(context: dict[str, Any], text: str, expected: str) -> None:
    assert render(text, context) == expected


def test_values_are_never_read_as_templates() -> None:
    """A value is put in as it is: a NUL in it was once turned into '{{' (the old escape's
    marker), and braces in a value are text, not a template."""
    values = {"a": "x\0y", "b": "{{ a }} {% raw %}"}
    assert render("{{ a }} {{ b }}", values) == "x\0y {{ a }} {% raw %}"


@given(st.text(alphabet="{}%#-+ abraw\n", max_size=40))
def test_literal_renders_back_to_any_text(text: str) -> None:
    assert render(literal(text), {}) == text
    assert render(literal(text), {}, quote=shlex.quote) == text


# --- shell quoting ------------------------------------------------------------------------------


def test_quote_keeps_a_value_with_spaces_and_semicolon_one_argument(
    context: dict[str, Any],
) -> None:
    command = render("cp {{ params.src }} /data", context, quote=shlex.quote)
    assert shlex.split(command) == ["cp", "my file; rm -rf ~", "/data"]


def test_quote_leaves_plain_values_readable(context: dict[str, Any]) -> None:
    assert render("fetch {{ ds }} {{ ts }}", context, quote=shlex.quote) == (
        "fetch 2024-03-01 2024-03-01T02:30:00+01:00"
    )


INJECTIONS = [
    "a b; touch {marker}",
    "$(touch {marker})",
    "`touch {marker}`",
    "x' ; touch {marker}; echo '",
    'x" ; touch {marker}; echo "',
    "a && touch {marker} || true",
    "line\ntouch {marker}",
    "a\n$(touch {marker})\n`touch {marker}`;touch {marker}",
    "*",
    "",
]

# every way a template can print a value: each printed value is quoted whole
PRINTINGS = [
    "{{ params.x }}",
    "{{ params['x'] }}",
    "{{ params.x | trim }}",
    "{{ params.x ~ '' }}",
    "{% for v in [params.x] %}{{ v }}{% endfor %}",
    "{% set v = params.x %}{{ v }}",
    "{{ xcom.pull('t') }}",
]


@pytest.mark.parametrize("printing", PRINTINGS)
@pytest.mark.parametrize("value", INJECTIONS)
def test_quoted_value_cannot_inject_a_command(tmp_path: Path, value: str, printing: str) -> None:
    marker = tmp_path / "injected"
    value = value.format(marker=marker)

    class XCom:
        def pull(self, task_id: str) -> str:
            return value

    context = {"params": {"x": value}, "xcom": XCom()}
    command = render("printf '%s\\0' " + printing, context, quote=shlex.quote)
    out = subprocess.run(
        ["/bin/sh", "-c", command], capture_output=True, check=True, cwd=tmp_path, timeout=10
    ).stdout
    expected = value.strip() if "trim" in printing else value
    assert out == expected.encode() + b"\0"  # exactly one argument, unchanged
    assert not marker.exists()


def test_quote_applies_to_non_string_values() -> None:
    quoted = render("{{ params.list }}", {"params": {"list": [1, 2]}}, quote=shlex.quote)
    assert shlex.split(quoted) == ["[1, 2]"]


def test_the_template_text_itself_is_not_quoted(context: dict[str, Any]) -> None:
    text = "{% if params.n == 0 %}echo zero; ls | wc -l{% endif %}"
    assert render(text, context, quote=shlex.quote) == "echo zero; ls | wc -l"


# --- cronflow check -----------------------------------------------------------------------------


def test_template_problems() -> None:
    known = {"ds", "params", "logical_date"}
    assert template_problems("fetch {{ ds }} {{ params.x }}", known) == []
    assert template_problems("no template", known) == []
    assert template_problems("{{ dss }} {{ tss | upper }} {{ ds }}", known) == [
        "unknown template value '{{ dss }}'",
        "unknown template value '{{ tss }}'",
    ]
    # names the template sets itself, Jinja's globals and macros are known
    text = "{% set d = ds %}{% for i in range(2) %}{{ d }}{{ i }}{% endfor %}{{ macros.ds_add(ds, 1) }}"
    assert template_problems(text, known) == []
    [syntax] = template_problems("{{ ds | nope }}", known)
    assert "No filter named 'nope'" in syntax
    [comment] = template_problems("echo ${#x}", known)
    assert "Missing end of comment tag" in comment


# --- macros -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ds", "days", "expected"),
    [
        ("2024-03-01", -1, "2024-02-29"),
        ("2024-12-31", 1, "2025-01-01"),
        ("2024-03-01", 0, "2024-03-01"),
    ],
)
def test_ds_add(ds: str, days: int, expected: str) -> None:
    assert ds_add(ds, days) == expected


def test_ds_add_on_a_datetime_keeps_the_wall_clock_across_dst() -> None:
    before = LocalDateTime(2024, 3, 30, 12, 0, tzinfo=PARIS)  # the day before the spring jump
    after = ds_add(before, 1)
    assert isinstance(after, LocalDateTime)
    assert str(after) == "2024-03-31T12:00:00+02:00"  # 23 hours later: the same wall clock


def test_ds_format() -> None:
    assert ds_format("2024-03-01", "%Y-%m-%d", "%m-%d-%y") == "03-01-24"
    with pytest.raises(ValueError):
        ds_format("01/03/2024", "%Y-%m-%d", "%d")


def test_jinja_is_imported_only_when_a_template_needs_it() -> None:
    code = (
        "import sys\n"
        "from cronflow.templates import render\n"
        "assert render('plain', {}) == 'plain'\n"
        "assert 'jinja2' not in sys.modules\n"
        "assert render('{{ x }}', {'x': 1}) == '1'\n"
        "assert 'jinja2' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


# --- date_context -------------------------------------------------------------------------------


def test_date_context_uses_the_local_date_in_paris() -> None:
    # 23:30 UTC on 1 March is 00:30 on 2 March in Paris: ds is the local date
    logical = utc(2024, 3, 1, 23, 30)
    interval = (utc(2024, 2, 29, 23, 30), logical)
    ctx = date_context(logical, interval, PARIS, None, None)
    assert {k: str(v) for k, v in ctx.items()} == {
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
    # the dates are aware datetimes in the flow's zone, equal to the instants given
    assert ctx["logical_date"] == logical and ctx["logical_date"].tzinfo is PARIS
    assert ctx["data_interval_start"] == interval[0]
    assert (ctx["logical_date"].hour, ctx["logical_date"].day) == (0, 2)


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

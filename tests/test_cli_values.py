"""Values the CLI refuses, each with one line and exit 2, nothing written: text no task could
take (lone surrogates, NUL, bytes that are not UTF-8) and --conf that is not a plain JSON object."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from clikit import MANUAL, error, invoke, ok, rows, store
from conftest import cli

DEEP = "[" * 3000 + "]" * 3000


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ("", "--conf is empty: give a JSON object"),
        ("   ", "--conf is empty: give a JSON object"),
        ("NaN", "--conf is not valid JSON: NaN is not a JSON value"),
        ('{"a": NaN}', "--conf is not valid JSON: NaN is not a JSON value"),
        ('{"a": Infinity}', "--conf is not valid JSON: Infinity is not a JSON value"),
        ('{"a": [-Infinity]}', "--conf is not valid JSON: -Infinity is not a JSON value"),
        ('{"a": 1e400}', "--conf is not valid JSON: 1e400 is too large for a number"),
        ('{"a": ' + "9" * 5000 + "}", "--conf is not valid JSON: Exceeds the limit"),
        ('{"a": ' + DEEP + "}", "--conf is nested more than 100 levels deep"),
        ('{"a": ' + "[" * 100 + "]" * 100 + "}", "--conf is nested more than 100 levels deep"),
        (
            '{"a": "\\ud800"}',
            '--conf["a"] holds a lone surrogate (U+D800) at character 1, which no task can '
            "take as an argument or environment value; give valid UTF-8 text without NUL",
        ),
        ('{"a": ["ok", "x\\udfff"]}', '--conf["a"][1] holds a lone surrogate (U+DFFF) at char'),
        ('{"a": {"\\udc80": 1}}', 'a key of --conf["a"] holds a lone surrogate (U+DC80)'),
        ('{"a": "x\\u0000"}', '--conf["a"] holds a NUL character (U+0000) at character 2'),
        ('{"a": "\udcff"}', '--conf["a"] holds a lone surrogate (U+DCFF)'),  # argv byte 0xff
    ],
)
def test_trigger_refuses_conf_no_task_could_take(home, write_flow, conf, message):
    write_flow("manual", MANUAL)
    assert error(home, "trigger", "manual", "--conf", conf).startswith(message)
    assert rows(home, "runs", "manual") == []


def test_trigger_takes_conf_at_the_nesting_limit_and_any_unicode_text(home, write_flow):
    write_flow("manual", MANUAL)
    conf = {"deep": json.loads("[" * 99 + "]" * 99), "text": "é ✓ 𝄞 \t\n\x1b"}
    ok(home, "trigger", "manual", "--conf", json.dumps(conf))
    [run] = rows(home, "runs", "manual")
    assert json.loads(store(home).run(run["run_id"])["conf"]) == conf


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("a\x00b", "the value of variable 'v' holds a NUL character (U+0000) at character 2"),
        ("\ud800", "the value of variable 'v' holds a lone surrogate (U+D800) at character 1"),
    ],
)
def test_var_set_refuses_text_no_task_could_take(home, value, message):
    assert error(home, "var", "set", "v", value).startswith(message)
    assert store(home).variable("v") is None


@pytest.mark.parametrize(
    ("uri", "stdin", "message"),
    [
        ("ssh://u:p%00w@h", None, "the password of connection 'c' holds a NUL character"),
        ("ssh://u%00@h", None, "the login of connection 'c' holds a NUL character"),
        ("ssh://u@h?key_file=%00", None, "the extra key_file of connection 'c' holds a NUL"),
        ("ssh://u@h", "p\x00w\n", "the password of connection 'c' holds a NUL character"),
    ],
)
def test_conn_add_refuses_text_no_task_could_take(home, uri, stdin, message):
    args = ["conn", "add", "c", uri, *(["--password-stdin"] if stdin else [])]
    result = invoke(home, *args, input=stdin)
    assert result.exit_code == 2, result.stderr
    assert result.stderr.startswith(f"Error: {message}") and len(result.stderr.splitlines()) == 1
    assert store(home).connection("c") is None


@pytest.mark.parametrize(
    "args",
    [
        ("var", "set", "v", "caf\udce9"),  # the byte 0xe9 of a Latin-1 'é' in argv
        ("conn", "add", "c", "ssh://caf\udce9@host"),
        ("trigger", "manual", "--conf", '{"a": "caf\udce9"}'),
    ],
)
def test_bytes_that_are_not_utf8_on_the_command_line_are_one_line(home, write_flow, args):
    write_flow("manual", MANUAL)
    result = cli(home, *args)  # the real process: its argv holds the byte 0xe9
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("Error: ") and "lone surrogate (U+DCE9)" in line


@pytest.mark.parametrize(
    "command",
    [("var", "set", "v", "--stdin"), ("conn", "add", "c", "ssh://u@h", "--password-stdin")],
)
@pytest.mark.parametrize(
    ("errors", "message"),
    [("strict", "read from stdin is not valid UTF-8"), ("surrogateescape", "(U+DCE9)")],
)
def test_stdin_that_is_not_utf8_is_one_line(home, command, errors, message):
    env = {**os.environ, "CRONFLOW_HOME": str(home), "PYTHONIOENCODING": f"utf-8:{errors}"}
    result = subprocess.run(
        [sys.executable, "-m", "cronflow", *command],
        input=b"caf\xe9\n",
        capture_output=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.decode().splitlines()
    assert line.startswith("Error: ") and message in line

"""Properties (Hypothesis): whatever JSON value comes in through --conf, a variable or an XCom,
and reaches Shell, Python and SSH tasks, the daemon stays alive, every run ends, and nothing
prints a traceback. Values the CLI refuses (lone surrogates, NUL) are also written to the store
directly, as a TriggerFlow, a library call or an older cronflow can: the daemon fails the tasks
that would take them, with the reason in words, and the others succeed.

One real daemon per test serves every example; a few dozen examples, derandomized (the same
examples on every run, no example database), so the tests take seconds and never flake on
a new random draw.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from clikit import invoke
from conftest import DaemonProcess, utc, wait_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cronflow import catalog
from cronflow.config import load_settings
from cronflow.daemon import poke
from cronflow.states import RunType
from cronflow.store import Store
from cronflow.timetable import data_interval

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

PROPERTY_SETTINGS = settings(
    max_examples=10,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

FLOW = """
from cronflow import Flow, Python, Shell, SSHCommand

def show(v, context):
    print("v:", v, "conf:", context["conf"], "var:", context["var"]["pv"])
    value = context["conf"]["v"]
    return value if isinstance(value, str) else {"v": value}  # a string goes on as itself

with Flow("prop"):
    Shell("sh_arg", "printf '%s\\\\n' {{ params.v }} {{ var.pv }}")
    Shell("sh_env", "printenv V W", env={"V": "{{ params.v }}", "W": "{{ var.pv }}"})
    py = Python("py", show, kwargs={"v": "{{ params.v }}"})
    py >> Shell("sh_xcom", "printf '%s\\\\n' {{ xcom.py }}")
    SSHCommand("ssh", "printf '%s\\\\n' {{ params.v }} {{ var.pv }}", conn_id="station",
               env={"V": "{{ params.v }}"})
"""

# Text of every kind, with the characters that break things drawn often: NUL, lone surrogates
# (U+DCxx is also how Python carries bytes that are not UTF-8), quotes, `$`, template braces.
HOSTILE = ["\0", "\ud800", "\udcff", "\udfff", "'", '"', "$(", "`", "\\", "\n", "{{ ds }}", "%"]
TEXT = st.lists(
    st.one_of(st.characters(exclude_categories=()), st.sampled_from(HOSTILE)), max_size=8
).map("".join)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=6,
)


def is_surrogate(char: str) -> bool:
    return 0xD800 <= ord(char) <= 0xDFFF


def any_process_refuses(text: str) -> bool:
    """NUL, or a lone surrogate that is not an escaped byte (U+DC80-U+DCFF)."""
    return any(c == "\0" or (is_surrogate(c) and not 0xDC80 <= ord(c) <= 0xDCFF) for c in text)


def utf8_refuses(text: str) -> bool:
    return any(c == "\0" or is_surrogate(c) for c in text)


def strings_of(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [k, *strings_of(v)]]
    if isinstance(value, list):
        return [s for item in value for s in strings_of(item)]
    return []


def rendered(value: Any) -> str:
    """What `{{ params.v }}` renders for a value (templates.render, written out again)."""
    if isinstance(value, str):
        return value
    return json.dumps(value) if isinstance(value, dict | list) else str(value)


class Home:
    """A home with the flow, a daemon on it, and runs created one per example."""

    def __init__(self, home: Path, write_flow: Any) -> None:
        write_flow("prop", FLOW)
        self.home = home
        settings_ = load_settings(home)
        self.store = Store(settings_.db_path)
        self.flow = catalog.sync(self.store, settings_).get("prop")
        self.count = 0
        self.store.set_variable("pv", "x", is_secret=False)
        self.daemon = DaemonProcess(home).start()

    def next_date(self) -> datetime:
        """A logical date of its own for each example's run."""
        self.count += 1
        return utc(2024, 1, 1) + timedelta(minutes=self.count)

    def trigger_unchecked(self, conf: dict[str, Any]) -> int:
        """A run written as the library writes it: no check of the conf's text."""
        logical_at = self.next_date()
        interval = data_interval(None, logical_at)
        run_id = self.store.create_run(
            "prop", logical_at, RunType.MANUAL, interval, self.flow.raw["tasks"], conf
        )
        poke(self.home)
        return run_id

    def end(self, run_id: int) -> dict[str, dict[str, Any]]:
        """The run's task instances once it ended; fails at once if the daemon died."""

        def ended() -> bool:
            assert self.daemon.proc.poll() is None, self.daemon.output()[-4000:]
            return self.store.run(run_id)["state"] in ("success", "failed")

        wait_for(ended, what=f"run {run_id} to end")
        output = self.daemon.output()
        assert "Traceback" not in output and "event=task_error" not in output, output[-4000:]
        tis = {ti["task_id"]: ti for ti in self.store.tis_of_runs([run_id])}
        for ti in tis.values():
            log = Path(ti["log_path"]).read_text(errors="replace")
            assert "Traceback" not in log, log
            assert ti["reason"] is None or "\n" not in ti["reason"]
        return tis

    def stop(self) -> None:
        self.daemon.stop()
        assert self.daemon.proc.returncode == 0, self.daemon.output()[-4000:]


def check_run(tis: dict[str, dict[str, Any]], param: str, var: str, xcom: str | None) -> None:
    """Each task failed exactly when a value it takes is one it cannot pass on, with a
    reason that says which; every other task succeeded."""
    expected = {
        "sh_arg": any_process_refuses(param) or any_process_refuses(var),
        "sh_env": any_process_refuses(param) or any_process_refuses(var),
        "py": False,
        "sh_xcom": xcom is not None and any_process_refuses(xcom),
        "ssh": utf8_refuses(param) or utf8_refuses(var),
    }
    states = {task_id: ti["state"] for task_id, ti in tis.items()}
    assert states == {t: "failed" if bad else "success" for t, bad in expected.items()}
    for task_id in ("sh_arg", "sh_env", "sh_xcom"):
        if expected[task_id]:
            reason = tis[task_id]["reason"]
            assert reason.startswith("cannot start: ") and "which no process can take" in reason


def test_any_conf_value_ends_its_run_and_the_daemon_lives(home, write_flow, sshd, monkeypatch):
    monkeypatch.setenv("CRONFLOW_CONN_STATION", sshd.uri())
    h = Home(home, write_flow)

    @PROPERTY_SETTINGS
    @given(value=JSON)
    def conf_value(value: Any) -> None:
        conf = {"v": value}
        refused = any(utf8_refuses(s) for s in strings_of(conf))
        result = invoke(
            home, "trigger", "prop", "--date", h.next_date().isoformat(), "--conf", json.dumps(conf)
        )
        if refused:
            assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1, result.stderr
            run_id = h.trigger_unchecked(conf)  # the daemon's own guard, then
        else:
            assert result.exit_code == 0, result.stderr
            run_id = int(result.stdout.split()[1])
        xcom = value if isinstance(value, str) else None
        check_run(h.end(run_id), rendered(value), "x", xcom)

    try:
        conf_value()
    finally:
        h.stop()


def test_any_variable_value_ends_its_run_and_the_daemon_lives(home, write_flow, sshd, monkeypatch):
    monkeypatch.setenv("CRONFLOW_CONN_STATION", sshd.uri())
    h = Home(home, write_flow)
    invoke(home, "var", "set", "token", "s3cr3t-token", "--secret")  # shell tasks: masking filter

    @PROPERTY_SETTINGS
    @given(value=TEXT)
    def variable_value(value: str) -> None:
        result = invoke(home, "var", "set", "pv", value)
        if utf8_refuses(value):
            assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1, result.stderr
            if any(is_surrogate(c) for c in value):
                return  # SQLite holds only UTF-8: no variable can hold it, whoever writes it
            h.store.set_variable("pv", value, is_secret=False)  # NUL: the library can store it
        else:
            assert result.exit_code == 0, result.stderr
        run = invoke(
            home, "trigger", "prop", "--date", h.next_date().isoformat(), "--conf", '{"v": "y"}'
        )
        assert run.exit_code == 0, run.stderr
        check_run(h.end(int(run.stdout.split()[1])), "y", value, "y")

    try:
        variable_value()
    finally:
        h.stop()

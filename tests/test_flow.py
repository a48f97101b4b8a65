"""Tests for cronflow.flow, the shell and python operators, and cronflow.loader."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from cronflow import Flow, FlowDependency, Python, Shell, Task
from cronflow.errors import ConfigError, FlowDefinitionError, FlowLoadError, TemplateError
from cronflow.flow import TASK_DEFAULTS, collecting_flows
from cronflow.loader import LoadResult, describe_file, flow_file_paths, load_files
from cronflow.ops import Launch, launch_for
from cronflow.ops.shell import DEFAULT_SHELL, shell_launch


def upstreams(flow: Flow) -> dict[str, list[str]]:
    return {t["task_id"]: t["upstream"] for t in flow.spec()["tasks"]}


def task_spec(flow: Flow, task_id: str) -> dict[str, Any]:
    return next(t for t in flow.spec()["tasks"] if t["task_id"] == task_id)


def add(x: int, y: int) -> int:
    return x + y


# --- building flows -----------------------------------------------------------------------------


def test_tasks_created_inside_with_belong_to_the_flow() -> None:
    with Flow("ingest") as flow:
        fetch = Shell("fetch", "fetch-station")
        load = Python("load", add, args=[1, 2])
    assert flow.tasks == {"fetch": fetch, "load": load}
    assert fetch.flow is flow and load.flow is flow
    assert [t["kind"] for t in flow.spec()["tasks"]] == ["shell", "python"]


def test_a_task_can_name_its_flow_explicitly() -> None:
    flow = Flow("explicit")
    task = Shell("t", "true", flow=flow)
    assert flow.tasks == {"t": task}


def test_nested_flows_each_get_their_own_tasks() -> None:
    with Flow("outer") as outer:
        Shell("a", "true")
        with Flow("inner") as inner:
            Shell("b", "true")
        Shell("c", "true")
    assert list(outer.tasks) == ["a", "c"]
    assert list(inner.tasks) == ["b"]


def test_a_flow_can_be_entered_again() -> None:
    with Flow("twice") as flow:
        Shell("a", "true")
    with flow:
        Shell("b", "true")
    assert list(flow.tasks) == ["a", "b"]


def test_leaving_a_flow_after_an_exception_restores_the_context() -> None:
    with pytest.raises(RuntimeError), Flow("broken"):
        raise RuntimeError("boom")
    with pytest.raises(FlowDefinitionError, match="not inside a flow"):
        Shell("orphan", "true")


def test_rshift_chain() -> None:
    with Flow("f") as flow:
        a, b, c = Shell("a", "x"), Shell("b", "x"), Shell("c", "x")
        result = a >> b >> c
    assert result is c
    assert upstreams(flow) == {"a": [], "b": ["a"], "c": ["b"]}


def test_rshift_to_a_list_fans_out() -> None:
    with Flow("f") as flow:
        a, b, c = Shell("a", "x"), Shell("b", "x"), Shell("c", "x")
        result = a >> [b, c]
    assert result == [b, c]
    assert upstreams(flow) == {"a": [], "b": ["a"], "c": ["a"]}


def test_list_rshift_task_fans_in() -> None:
    with Flow("f") as flow:
        a, b, c = Shell("a", "x"), Shell("b", "x"), Shell("c", "x")
        result = [a, b] >> c
    assert result is c
    assert upstreams(flow) == {"a": [], "b": [], "c": ["a", "b"]}


def test_lshift_points_the_other_way() -> None:
    with Flow("f") as flow:
        a, b = Shell("a", "x"), Shell("b", "x")
        a << b
    assert upstreams(flow) == {"a": ["b"], "b": []}


def test_lshift_to_a_list_and_list_lshift_task() -> None:
    with Flow("f") as flow:
        a, b, c, d = (Shell(n, "x") for n in "abcd")
        a << [b, c]  # b and c before a
        [b, c] << d  # d before b and c
    assert upstreams(flow) == {"a": ["b", "c"], "b": ["d"], "c": ["d"], "d": []}


def test_diamond_and_repeated_edges_are_recorded_once() -> None:
    with Flow("f") as flow:
        a, b, c, d = (Shell(n, "x") for n in "abcd")
        a >> [b, c] >> d
        a >> b
    assert upstreams(flow) == {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}


@pytest.mark.parametrize("other", ["b", 3, None, ["b"]])
def test_depending_on_something_that_is_not_a_task_is_an_error(other: object) -> None:
    with Flow("f"):
        a = Shell("a", "x")
        with pytest.raises(FlowDefinitionError, match="not a task"):
            a >> other  # type: ignore[operator]


# --- spec ---------------------------------------------------------------------------------------


def test_spec_of_a_flow() -> None:
    with Flow(
        "ingest",
        schedule="30 2 * * *",
        timezone="Europe/Paris",
        start_date="2024-03-01",
        end_date="2024-12-31T23:00",
        catchup=True,
        max_active_runs=3,
        tags=["meteo", "daily"],
        doc="Fetch the stations.",
        params={"station": "north"},
        wait_for=["upstream", FlowDependency("weekly", -7, wait_timeout="2h", soft_fail=True)],
        wait_timeout="6h",
    ) as flow:
        fetch = Shell("fetch", "fetch-station --day {{ ds }}", env={"N": 1}, cwd="/tmp")
        fetch >> Python("count", add, args=[1, 2], params={"k": "v"})
    spec = flow.spec()
    tasks = spec.pop("tasks")
    assert spec == {
        "flow_id": "ingest",
        "schedule": "30 2 * * *",
        "timezone": "Europe/Paris",
        "start_at": "2024-02-29T23:00:00+00:00",  # local midnight, stored in UTC
        "end_at": "2024-12-31T22:00:00+00:00",  # naive date-time: in the flow's timezone
        "catchup": True,
        "max_active_runs": 3,
        "tags": ["meteo", "daily"],
        "doc": "Fetch the stations.",
        "params": {"station": "north"},
        "wait_for": [  # the flow's wait_timeout unless the wait has its own
            {"flow_id": "upstream", "offset_days": 0, "timeout_s": 21600.0, "soft_fail": False},
            {"flow_id": "weekly", "offset_days": -7, "timeout_s": 7200.0, "soft_fail": True},
        ],
    }
    assert tasks == [
        {
            "task_id": "fetch",
            "kind": "shell",
            "upstream": [],
            "params": {},
            **_builtin_resolved(),
            "op": {
                "command": "fetch-station --day {{ ds }}",
                "env": {"N": "1"},
                "cwd": "/tmp",
                "shell": DEFAULT_SHELL,
            },
        },
        {
            "task_id": "count",
            "kind": "python",
            "upstream": ["fetch"],
            "params": {"k": "v"},
            **_builtin_resolved(),
            "op": {"callable": f"{__name__}.add"},
        },
    ]
    assert json.loads(json.dumps(flow.spec())) == flow.spec()


def _builtin_resolved() -> dict[str, Any]:
    return {
        "retries": 0,
        "retry_delay_s": 300.0,
        "retry_exponential_backoff": False,
        "max_retry_delay_s": 3600.0,
        "timeout_s": None,
        "pool": "default",
        "priority": 1,
        "trigger_rule": "all_success",
    }


def test_minimal_flow_spec() -> None:
    spec = Flow("bare").spec()
    assert spec["schedule"] is None
    assert spec["timezone"] == "UTC"
    assert spec["start_at"] is None and spec["end_at"] is None
    assert spec["catchup"] is False and spec["max_active_runs"] == 1
    assert spec["tasks"] == [] and spec["wait_for"] == []


def test_builtin_defaults_are_the_documented_ones() -> None:
    assert TASK_DEFAULTS["trigger_rule"] == "all_success"
    assert TASK_DEFAULTS["retries"] == 0


def test_defaults_merge_task_over_flow_over_builtin() -> None:
    with Flow(
        "f", defaults={"retries": 2, "retry_delay": "1m", "pool": "station", "timeout": "2h"}
    ) as flow:
        Shell("inherits", "x")
        Shell("own", "x", retries=5, pool="other", priority=7, trigger_rule="all_done")
        Shell("zero", "x", retries=0)  # 0 is a value, not "unset"
    inherits, own, zero = (task_spec(flow, t) for t in ("inherits", "own", "zero"))
    assert inherits["retries"] == 2
    assert inherits["retry_delay_s"] == 60.0
    assert inherits["pool"] == "station"
    assert inherits["timeout_s"] == 7200.0
    assert inherits["priority"] == 1  # built-in
    assert inherits["max_retry_delay_s"] == 3600.0  # built-in
    assert own["retries"] == 5
    assert own["pool"] == "other"
    assert own["priority"] == 7
    assert own["trigger_rule"] == "all_done"
    assert own["retry_delay_s"] == 60.0  # from the flow
    assert zero["retries"] == 0


def test_flow_default_of_none_falls_back_to_builtin() -> None:
    with Flow("f", defaults={"retries": None}) as flow:
        Shell("t", "x")
    assert task_spec(flow, "t")["retries"] == 0


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("5m", 300.0),
        ("90s", 90.0),
        ("1h30m", 5400.0),
        ("2d", 172800.0),
        (45, 45.0),
        (1.5, 1.5),
        (timedelta(minutes=2), 120.0),
    ],
)
def test_durations(value: object, seconds: float) -> None:
    with Flow("f") as flow:
        Shell("t", "x", retry_delay=value, max_retry_delay=value, timeout=value)
    spec = task_spec(flow, "t")
    assert spec["retry_delay_s"] == seconds
    assert spec["max_retry_delay_s"] == seconds
    assert spec["timeout_s"] == seconds


def test_trigger_rule_accepts_the_enum() -> None:
    from cronflow import TriggerRule

    with Flow("f") as flow:
        Shell("t", "x", trigger_rule=TriggerRule.ONE_FAILED)
    assert task_spec(flow, "t")["trigger_rule"] == "one_failed"


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        (date(2024, 3, 1), "2024-02-29T23:00:00+00:00"),
        (datetime(2024, 3, 1, 2, 30), "2024-03-01T01:30:00+00:00"),
        (datetime(2024, 3, 1, 2, 30, tzinfo=UTC), "2024-03-01T02:30:00+00:00"),
        ("2024-07-01", "2024-06-30T22:00:00+00:00"),
        ("2024-07-01T08:00:00Z", "2024-07-01T08:00:00+00:00"),
        ("2024-07-01T08:00:00+05:00", "2024-07-01T03:00:00+00:00"),
    ],
)
def test_start_date_forms_are_stored_in_utc(start: object, expected: str) -> None:
    flow = Flow("f", timezone="Europe/Paris", start_date=start)  # type: ignore[arg-type]
    assert flow.spec()["start_at"] == expected
    assert flow.tz == ZoneInfo("Europe/Paris")


def test_flow_params_must_be_json_for_the_loader_but_not_for_spec() -> None:
    flow = Flow("f", params={"when": date(2024, 1, 1)})
    assert flow.spec()["params"] == {"when": date(2024, 1, 1)}


# --- definition errors --------------------------------------------------------------------------


def test_duplicate_task_id_names_flow_and_task() -> None:
    with Flow("ingest"):
        Shell("fetch", "x")
        with pytest.raises(FlowDefinitionError, match="flow 'ingest': duplicate task id 'fetch'"):
            Shell("fetch", "y")


def test_cycle_names_flow_and_tasks() -> None:
    with Flow("ingest") as flow:
        a, b, c = Shell("a", "x"), Shell("b", "x"), Shell("c", "x")
        a >> b >> c >> a
    with pytest.raises(FlowDefinitionError, match="flow 'ingest': dependency cycle: ") as caught:
        flow.spec()
    # the cycle reads the way it was written (the start may be any of its tasks)
    assert str(caught.value).split(": ")[-1] in (
        "a >> b >> c >> a",
        "b >> c >> a >> b",
        "c >> a >> b >> c",
    )


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"schedule": "61 * * * *"}, r"flow 'meteo': .*61"),
        ({"schedule": "not a cron"}, r"flow 'meteo': "),
        ({"schedule": ""}, r"flow 'meteo': schedule is empty; write schedule=None for a flow"),
        ({"schedule": 5}, r"flow 'meteo': schedule must be text or None, not 5"),
        ({"timezone": "Mars/Olympus"}, r"flow 'meteo': unknown timezone 'Mars/Olympus'"),
        ({"timezone": "localtime"}, r"flow 'meteo': unknown timezone 'localtime'"),
        ({"start_date": "2024-02-30"}, r"flow 'meteo': bad date '2024-02-30'"),
        ({"end_date": "someday"}, r"flow 'meteo': bad date 'someday'"),
        (
            {"start_date": "2024-03-02", "end_date": "2024-03-01"},
            r"flow 'meteo': end_date is before start_date",
        ),
        ({"max_active_runs": 0}, r"flow 'meteo': max_active_runs must be"),
        ({"max_active_runs": "2"}, r"flow 'meteo': max_active_runs must be"),
        ({"defaults": {"retry": 3}}, r"flow 'meteo': unknown key in defaults: 'retry'"),
        ({"wait_for": ["bad id"]}, r"bad flow id 'bad id'"),
        ({"wait_timeout": "soon"}, r"flow 'meteo': wait_timeout: "),
        (
            {"wait_for": [FlowDependency("up", wait_timeout=-5)]},
            r"flow 'meteo': wait for 'up': wait_timeout: must not be negative",
        ),
        (
            {"wait_for": [FlowDependency("up", offset_days=0.5)]},  # type: ignore[arg-type]
            r"flow 'meteo': wait for 'up': offset_days must be a whole number",
        ),
    ],
)
def test_bad_flow_arguments(kwargs: dict[str, Any], pattern: str) -> None:
    with pytest.raises(FlowDefinitionError, match=pattern):
        Flow("meteo", **kwargs)


def test_end_date_equal_to_start_date_is_allowed() -> None:
    flow = Flow("f", start_date="2024-03-01", end_date="2024-03-01")
    assert flow.spec()["start_at"] == flow.spec()["end_at"]


@pytest.mark.parametrize(
    ("task_args", "pattern"),
    [
        (
            {"trigger_rule": "all_sucess"},
            r"unknown trigger_rule 'all_sucess' \(known: all_success,",
        ),
        ({"retries": -1}, r"retries must be a whole number >= 0"),
        ({"retries": 1.5}, r"retries must be a whole number >= 0"),
        ({"retries": True}, r"retries must be a whole number >= 0"),
        ({"retry_delay": "5 minutes"}, r"retry_delay: cannot read '5 minutes'"),
        ({"timeout": -5}, r"timeout: must not be negative"),
        ({"max_retry_delay": [1]}, r"max_retry_delay: expected seconds"),
        ({"pool": "my pool"}, r"bad pool id 'my pool'"),
        ({"priority": "high"}, r"priority must be a whole number"),
        ({"priority": 1.5}, r"priority must be a whole number"),
    ],
)
def test_bad_task_settings_name_flow_and_task(task_args: dict[str, Any], pattern: str) -> None:
    with Flow("meteo") as flow:
        Shell("fetch", "x", **task_args)
    with pytest.raises(
        FlowDefinitionError, match=r"^flow 'meteo': task 'fetch' \(line \d+\): " + pattern
    ):
        flow.spec()


def test_bad_setting_in_flow_defaults_names_each_task_it_reaches() -> None:
    with Flow("meteo", defaults={"trigger_rule": "sometimes"}) as flow:
        Shell("fetch", "x")
    with pytest.raises(
        FlowDefinitionError, match=r"flow 'meteo': task 'fetch' \(line \d+\): unknown trigger"
    ):
        flow.spec()


@pytest.mark.parametrize("bad", ["my flow", "a.b", "", "-lead", "été", 42, None])
def test_bad_flow_id(bad: object) -> None:
    with pytest.raises(FlowDefinitionError, match="bad flow id"):
        Flow(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("good", ["a", "A_1", "_x", "daily-report", "0day"])
def test_good_ids(good: str) -> None:
    with Flow(good) as flow:
        Shell(good, "x")
    assert flow.spec()["tasks"][0]["task_id"] == good


@pytest.mark.parametrize("bad", ["my task", "a.b", "", "-lead", 7])
def test_bad_task_id_names_flow_and_task(bad: object) -> None:
    with Flow("meteo"), pytest.raises(FlowDefinitionError) as caught:
        Shell(bad, "x")  # type: ignore[arg-type]
    assert "flow 'meteo'" in str(caught.value)
    assert f"bad task id {bad!r}" in str(caught.value)


def test_task_outside_a_flow() -> None:
    with pytest.raises(FlowDefinitionError, match=r"task 'fetch' is not inside a flow.*with Flow"):
        Shell("fetch", "x")


def test_cross_flow_dependency_names_both_tasks_and_flows() -> None:
    with Flow("first"):
        a = Shell("a", "x")
    with Flow("second"):
        b = Shell("b", "x")
    for attempt in (lambda: a >> b, lambda: b << a, lambda: [a] >> b, lambda: b.set_upstream(a)):
        with pytest.raises(FlowDefinitionError) as caught:
            attempt()
        message = str(caught.value)
        assert "task 'b'" in message and "task 'a'" in message
        assert "flow 'first'" in message and "flow 'second'" in message
        assert "wait_for" in message
    assert b.upstream_ids == []


def test_python_task_needs_a_callable() -> None:
    with Flow("meteo") as flow:
        Python("load", "add")  # type: ignore[arg-type]
    with pytest.raises(
        FlowDefinitionError, match=r"task 'load' \(line \d+\): 'add' is not callable"
    ):
        flow.spec()


def test_a_bare_task_has_no_operator() -> None:
    with Flow("f") as flow:
        Task("plain")
    assert task_spec(flow, "plain")["kind"] == "task"
    assert task_spec(flow, "plain")["op"] == {}


def test_collecting_flows_collects_in_creation_order() -> None:
    with collecting_flows() as flows:
        first = Flow("one")
        second = Flow("two")
    assert flows == [first, second]
    with collecting_flows() as again:
        pass
    assert again == []


# --- operators ----------------------------------------------------------------------------------

CONTEXT: dict[str, Any] = {
    "ds": "2024-03-01",
    "params": {"src": "my file; rm -rf ~", "n": 3},
    "var": {"token": "s3cr3t"},
    "try_number": 2,
}


def test_shell_launch_quotes_values_and_renders_env_and_cwd(tmp_path: Path) -> None:
    op = {
        "command": "printf '%s\\n' {{ params.src }} {{ ds }}",
        "env": {"TOKEN": "{{ var.token }}", "TRY": "{{ try_number }}"},
        "cwd": str(tmp_path / "{{ ds }}"),
        "shell": "/bin/sh",
    }
    command, env, cwd = shell_launch(op, CONTEXT)
    assert shlex.split(command) == ["printf", "%s\\n", "my file; rm -rf ~", "2024-03-01"]
    assert env == {"TOKEN": "s3cr3t", "TRY": "2"}  # env values are not shell text: no quotes
    assert cwd == str(tmp_path / "2024-03-01")
    argv = ["/bin/sh", "-c", command]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=10).stdout
    assert out.splitlines() == ["my file; rm -rf ~", "2024-03-01"]


def test_shell_launch_without_cwd() -> None:
    _, _, cwd = shell_launch({"command": "true", "env": {}, "cwd": None, "shell": "/bin/sh"}, {})
    assert cwd is None


def test_shell_launch_unknown_value_is_a_template_error() -> None:
    op = {"command": "echo {{ dss }}", "env": {}, "cwd": None, "shell": "/bin/sh"}
    with pytest.raises(TemplateError, match="dss"):
        shell_launch(op, CONTEXT)


def test_launch_for_shell_and_python() -> None:
    with Flow("f") as flow:
        Shell("s", "echo {{ ds }}", shell="/bin/sh")
    spec = task_spec(flow, "s")
    launch = launch_for(spec["kind"], spec["op"], CONTEXT)
    # the command goes to the shell by a private file, never on a command line
    assert launch == Launch(["/bin/sh"], {}, None, script="echo 2024-03-01")
    worker = launch_for("python", {"callable": "x.y"}, CONTEXT)
    assert worker.argv == [sys.executable, "-m", "cronflow.worker"]


def test_python_execute_renders_string_arguments_only() -> None:
    seen: dict[str, Any] = {}

    def load(day: str, count: int, *, station: str) -> str:
        seen.update(day=day, count=count, station=station)
        return f"{day}:{station}"

    with Flow("f"):
        task = Python("load", load, args=["{{ ds }}", 5], kwargs={"station": "{{ params.src }}"})
    assert task.execute(CONTEXT) == "2024-03-01:my file; rm -rf ~"
    assert seen == {"day": "2024-03-01", "count": 5, "station": "my file; rm -rf ~"}


def test_python_execute_passes_context_to_functions_that_ask_for_it() -> None:
    def with_context(context: dict[str, Any]) -> str:
        return context["ds"]

    def with_kwargs(**kwargs: Any) -> list[str]:
        return sorted(kwargs)

    with Flow("f"):
        a = Python("a", with_context)
        b = Python("b", with_kwargs, kwargs={"x": 1})
        c = Python("c", add, args=[2, 3])
        d = Python("d", len, args=["{{ ds }}"])  # a builtin: no signature needed
    assert a.execute(CONTEXT) == "2024-03-01"
    assert b.execute(CONTEXT) == ["context", "x"]
    assert c.execute(CONTEXT) == 5
    assert d.execute(CONTEXT) == 10


def test_python_op_spec_names_the_callable() -> None:
    class Loader:
        def __call__(self) -> None:
            return None

        def method(self) -> None:
            return None

    with Flow("f") as flow:
        Python("fn", add)
        Python("method", Loader().method)
    assert task_spec(flow, "fn")["op"] == {"callable": f"{__name__}.add"}
    assert task_spec(flow, "method")["op"]["callable"].endswith("Loader.method")


# --- loader -------------------------------------------------------------------------------------

GOOD = """\
from cronflow import Flow, Shell

with Flow("{flow_id}", schedule="0 3 * * *", timezone="Europe/Paris"):
    Shell("a", "echo a") >> Shell("b", "echo b")
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture
def clean_imports(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """describe_file imports in this process: undo its changes to sys.path and sys.modules."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith("cronflow_flowfile_"):
            del sys.modules[name]


def test_flow_file_paths_skips_private_hidden_and_non_python(tmp_path: Path) -> None:
    for name in ["b.py", "a.py", "_private.py", ".hidden.py", "notes.txt", "a.pyc"]:
        (tmp_path / name).write_text("", encoding="utf-8")
    (tmp_path / "package.py").mkdir()  # a directory, even with a .py name
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "nested.py").write_text("", encoding="utf-8")
    assert flow_file_paths(tmp_path) == [tmp_path / "a.py", tmp_path / "b.py"]


def test_a_missing_or_non_directory_flows_dir_is_an_error_not_an_empty_list(
    tmp_path: Path,
) -> None:
    # "No files" would make the catalog forget every flow, with its pause state and cursor.
    with pytest.raises(ConfigError, match=r"flows directory .*/missing does not exist: create it"):
        flow_file_paths(tmp_path / "missing")
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match=r"flows directory .*/file is not a directory"):
        flow_file_paths(tmp_path / "file")


@pytest.mark.usefixtures("clean_imports")
def test_describe_file_of_a_good_file(tmp_path: Path) -> None:
    path = write(tmp_path, "good.py", GOOD.format(flow_id="good") + GOOD.format(flow_id="good2"))
    result = describe_file(path)
    assert result.error is None
    assert [s["flow_id"] for s in result.specs] == ["good", "good2"]
    assert result.specs[0]["tasks"][1]["upstream"] == ["a"]


@pytest.mark.usefixtures("clean_imports")
def test_describe_file_of_a_file_without_flows(tmp_path: Path) -> None:
    assert describe_file(write(tmp_path, "empty.py", "X = 1\n")) == LoadResult([], None)


@pytest.mark.usefixtures("clean_imports")
def test_describe_file_syntax_error_names_path_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.py", "from cronflow import Flow\n\nx = (\nwith Flow('x'):\n")
    result = describe_file(path)
    assert result.specs == []
    assert result.error is not None
    assert result.error.startswith(f"{path}: line ")
    assert "SyntaxError" in result.error


@pytest.mark.usefixtures("clean_imports")
def test_describe_file_syntax_error_line_is_exact(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.py", "a = 1\nb = 2\nc = = 3\n")
    assert describe_file(path).error == f"{path}: line 3: SyntaxError: invalid syntax"


@pytest.mark.usefixtures("clean_imports")
def test_describe_file_exception_names_path_line_and_type(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "raises.py",
        """\
        import json

        def settings():
            return json.loads("{not json")

        CONFIG = settings()
        """,
    )
    error = describe_file(path).error
    # the deepest line in the flow file itself, not in json's own code
    assert error is not None
    assert error.startswith(f"{path}: line 4: JSONDecodeError: ")


@pytest.mark.usefixtures("clean_imports")
def test_describe_file_flow_definition_error_names_path_flow_and_task(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "dup.py",
        """\
        from cronflow import Flow, Shell

        with Flow("meteo"):
            Shell("fetch", "x")
            Shell("fetch", "y")
        """,
    )
    assert describe_file(path).error == f"{path}: line 5: flow 'meteo': duplicate task id 'fetch'"


def test_every_bad_option_of_every_task_is_named_at_once() -> None:
    from cronflow import FileSensor, Http

    with Flow("meteo") as flow:
        Shell("fetch", "x", retries=-1, priority="high", pool="my pool", timeout="soon")
        FileSensor("wait", "/in/*.csv", mode="push", poke_interval="often", timeout=-1)
        Shell("fine", "true")
        Http("ping", data="a", json={}, on_failure=3)
    with pytest.raises(FlowDefinitionError) as raised:
        flow.spec()
    # each task names the line that created it
    first = int(re.findall(r"\(line (\d+)\)", str(raised.value))[0])
    assert re.findall(r"task '(\w+)' \(line (\d+)\)", str(raised.value)) == [
        ("fetch", str(first)),
        ("wait", str(first + 1)),
        ("ping", str(first + 3)),
    ]
    assert re.sub(r" \(line \d+\)", "", str(raised.value)) == (
        "flow 'meteo': "
        "task 'fetch': retries must be a whole number >= 0; priority must be a whole number; "
        "bad pool id 'my pool': use letters, digits, '_' and '-' (no dots or spaces); "
        "timeout: cannot read 'soon' (use seconds or units like 30s, 5m, 2h, 90d); "
        "task 'wait': mode must be 'poke' or 'reschedule', got 'push'; "
        "poke_interval: cannot read 'often' (use seconds or units like 30s, 5m, 2h, 90d); "
        "timeout: must not be negative, got -1; "
        "task 'ping': give either url or conn_id (+ endpoint); give data or json, not both; "
        "on_failure must be a function, got 3"
    )


@pytest.mark.usefixtures("clean_imports")
def test_describe_file_error_found_by_spec_names_path_flow_and_task(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "rule.py",
        """\
        from cronflow import Flow, Shell

        with Flow("meteo"):
            Shell("fetch", "x", trigger_rule="whenever")
        """,
    )
    error = describe_file(path).error
    assert error is not None
    assert error.startswith(
        f"{path}: flow 'meteo': task 'fetch' (line 4): unknown trigger_rule 'whenever'"
    )


@pytest.mark.usefixtures("clean_imports")
def test_describe_file_params_must_be_json(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "params.py",
        """\
        from datetime import date
        from cronflow import Flow

        Flow("meteo", params={"day": date(2024, 1, 1)})
        """,
    )
    error = describe_file(path).error
    assert error is not None
    assert error.startswith(f"{path}: params are not JSON-serialisable")


@pytest.mark.usefixtures("clean_imports")
def test_describe_file_with_postponed_annotations_and_a_dataclass(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "typed.py",
        """\
        from __future__ import annotations

        from dataclasses import dataclass

        from cronflow import Flow, Shell


        @dataclass
        class Station:
            name: str
            slots: int = 1


        with Flow("typed"):
            Shell("fetch", "fetch " + Station("north").name)
        """,
    )
    result = describe_file(path)
    assert result.error is None
    assert result.specs[0]["tasks"][0]["op"]["command"] == "fetch north"


@pytest.mark.usefixtures("clean_imports")
def test_describe_file_sys_exit_is_an_error_not_an_exit(tmp_path: Path) -> None:
    path = write(tmp_path, "exits.py", "import sys\nsys.exit(3)\n")
    assert describe_file(path).error == f"{path}: line 2: SystemExit: 3"


@pytest.mark.usefixtures("clean_imports")
def test_describe_file_sys_exit_without_code(tmp_path: Path) -> None:
    path = write(tmp_path, "exits.py", "import sys\nsys.exit()\n")
    assert describe_file(path).error == f"{path}: line 2: SystemExit"


def test_load_files_isolates_every_kind_of_bad_file(tmp_path: Path) -> None:
    good1 = write(tmp_path, "a_good.py", GOOD.format(flow_id="first"))
    syntax = write(tmp_path, "b_syntax.py", "with Flow('x')\n    pass\n")
    exits = write(tmp_path, "c_exit.py", "import sys\n\nsys.exit(3)\n")
    good2 = write(tmp_path, "d_good.py", GOOD.format(flow_id="second"))
    hard_exit = write(tmp_path, "e_hard_exit.py", "import os\n\nos._exit(4)\n")
    good3 = write(tmp_path, "f_good.py", GOOD.format(flow_id="third"))
    hangs = write(tmp_path, "g_hang.py", "while True:\n    pass\n")
    loud = write(
        tmp_path,
        "h_loud.py",
        'import sys\n\nsys.stdout.write("x" * 5_000_000)\n' + GOOD.format(flow_id="loud"),
    )
    good4 = write(tmp_path, "j_good.py", GOOD.format(flow_id="fourth"))
    paths = [good1, syntax, exits, good2, hard_exit, good3, hangs, loud, good4]

    results = load_files(paths, timeout_s=1.5)

    assert set(results) == set(paths)
    for path, flow_id in [
        (good1, "first"),
        (good2, "second"),
        (good3, "third"),
        (loud, "loud"),
        (good4, "fourth"),
    ]:
        assert results[path].error is None, results[path].error
        assert [s["flow_id"] for s in results[path].specs] == [flow_id]
    assert all(results[p].specs == [] for p in (syntax, exits, hard_exit, hangs))
    assert results[syntax].error is not None
    assert results[syntax].error.startswith(f"{syntax}: line 1: SyntaxError")
    assert results[exits].error == f"{exits}: line 3: SystemExit: 3"
    assert results[hard_exit].error == f"{hard_exit}: importing it ended the process (exit code 4)"
    assert results[hangs].error == (
        f"{hangs}: import did not finish within 1.5s (import_timeout_s)"
    )


def test_load_files_answers_received_before_a_hang_are_kept(tmp_path: Path) -> None:
    # While the parent reads a long answer, the child answers for the quick files that follow,
    # then blocks: every answer it sent counts, even those that arrived together.
    big = write(
        tmp_path,
        "a_big.py",
        "from cronflow import Flow\nFlow('big', params={'x': 'y' * 3_000_000})\n",
    )
    quick = [write(tmp_path, f"q{n:02}.py", GOOD.format(flow_id=f"q{n}")) for n in range(10)]
    sleeps = write(tmp_path, "zz_sleep.py", "import time\n\ntime.sleep(1000)\n")
    results = load_files([big, *quick, sleeps], timeout_s=1.5)
    assert [p.name for p in [big, *quick] if results[p].error] == []
    assert len(results[big].specs[0]["params"]["x"]) == 3_000_000
    assert results[sleeps].error == (
        f"{sleeps}: import did not finish within 1.5s (import_timeout_s)"
    )


def test_the_import_limit_does_not_count_the_interpreters_start(tmp_path, monkeypatch) -> None:
    # A start slower than the limit (a loaded machine, a slow disk): the file still gets its
    # whole limit. sitecustomize runs at every interpreter start, before cronflow.loader.
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import time\ntime.sleep(2)\n")
    monkeypatch.setenv("PYTHONPATH", str(site))
    good = write(tmp_path, "good.py", GOOD.format(flow_id="good"))
    results = load_files([good], timeout_s=1)
    assert results[good].error is None
    assert [s["flow_id"] for s in results[good].specs] == ["good"]


def test_load_files_of_nothing() -> None:
    assert load_files([], timeout_s=1.5) == {}


def test_load_files_reports_every_hard_exit(tmp_path: Path) -> None:
    # each os._exit kills the child; the loader must tell each one apart, every time
    paths = [write(tmp_path, f"exit{n}.py", f"import os\nos._exit({n})\n") for n in range(1, 6)]
    results = load_files(paths, timeout_s=10)
    for n, path in enumerate(paths, start=1):
        assert results[path].error == f"{path}: importing it ended the process (exit code {n})"


def test_load_files_a_flow_file_can_import_a_helper_next_to_it(tmp_path: Path) -> None:
    helper_name = f"helper_{tmp_path.name.replace('-', '_')}"
    write(tmp_path, f"{helper_name}.py", "STATIONS = ['north', 'south']\n")
    path = write(
        tmp_path,
        "stations.py",
        f"""\
        from cronflow import Flow, Shell
        from {helper_name} import STATIONS

        with Flow("stations"):
            for name in STATIONS:
                Shell(f"fetch_{{name}}", f"fetch {{name}}")
        """,
    )
    result = load_files([path], timeout_s=10)[path]
    assert result.error is None
    assert [t["task_id"] for t in result.specs[0]["tasks"]] == ["fetch_north", "fetch_south"]


def test_load_files_does_not_change_the_parent_process(tmp_path: Path) -> None:
    path = write(tmp_path, "side.py", "import os\nos.environ['CRONFLOW_TEST_SIDE'] = '1'\n")
    path_before, modules_before = list(sys.path), set(sys.modules)
    assert load_files([path], timeout_s=10)[path] == LoadResult([], None)
    assert sys.path == path_before
    assert not any(m.startswith("cronflow_flowfile_") for m in set(sys.modules) - modules_before)
    assert "CRONFLOW_TEST_SIDE" not in __import__("os").environ


def test_an_unreadable_flows_directory_is_an_error_not_an_empty_one(tmp_path: Path) -> None:
    # Read as "no flow files", it would make the daemon forget every flow and its state.
    flows = tmp_path / "flows"
    flows.symlink_to(flows)  # a loop: listing fails even for root, unlike a chmod 0 directory
    with pytest.raises(FlowLoadError, match="cannot list flow files: Too many levels"):
        flow_file_paths(flows)


@pytest.mark.parametrize(
    ("shell_args", "message"),
    [
        ({"command": "echo a\0b"}, "the command holds a NUL character (U+0000) at character 7"),
        ({"command": "echo \ud800"}, "the command holds a lone surrogate (U+D800) at character 6"),
        ({"env": {"A": "x\0"}}, "environment variable A holds a NUL character (U+0000)"),
        ({"env": {"A=B": "x"}}, "bad environment variable name 'A=B': empty or with '='"),
        ({"cwd": "/tmp\0"}, "the working directory holds a NUL character (U+0000)"),
        ({"stdin": "\udfff"}, "the standard input text holds a lone surrogate (U+DFFF)"),
    ],
)
def test_shell_text_no_process_can_take_is_a_flow_error(
    shell_args: dict[str, Any], message: str
) -> None:
    with Flow("meteo") as flow:
        Shell("fetch", **{"command": "true", **shell_args})
    with pytest.raises(FlowDefinitionError) as caught:
        flow.spec()
    assert str(caught.value).startswith(f"flow 'meteo': task 'fetch': {message}")


def test_shell_text_a_process_can_take_is_fine() -> None:
    """NUL in standard input is data; U+DCxx is how Python carries a byte that is not UTF-8."""
    with Flow("meteo") as flow:
        Shell("fetch", "cat > caf\udce9.txt", env={"É": "ü"}, stdin="a\0b")
    assert flow.spec()["tasks"][0]["op"]["stdin"] == "a\0b"

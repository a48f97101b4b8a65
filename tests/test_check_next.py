"""`cronflow next` (coming fire times) and `cronflow check` (flow files, as a CI gate)."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest
from conftest import cli
from typer.testing import CliRunner

from cronflow.checks import check_flows
from cronflow.cli import app

ENV = {"NO_COLOR": "1", "COLUMNS": "200"}

DAILY = """
from cronflow import Flow, Shell
with Flow("daily", schedule="30 2 * * *", timezone="Europe/Paris"):
    Shell("a", "echo {{ ds }}")
"""
BOUNDED = """
from cronflow import Flow, Shell
with Flow("bounded", schedule="0 12 * * *", timezone="UTC",
          start_date="2024-03-30", end_date="2024-04-01T12:00"):
    Shell("a", "true")
"""
MANUAL = """
from cronflow import Flow, Shell
with Flow("manual"):
    Shell("a", "true")
"""
AT_START = """
from cronflow import Flow, Shell
with Flow("at_start", schedule="@reboot"):
    Shell("a", "true")
"""


def write(directory: Path, name: str, source: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    return path


def invoke(home: Path, *args: str):
    return CliRunner().invoke(app, ["--home", str(home), *args], env=ENV)


# --- next ---------------------------------------------------------------------------------------


def test_next_lists_one_flows_fire_times_with_their_offset(home: Path) -> None:
    write(home / "flows", "daily", DAILY)
    result = invoke(home, "next", "daily", "--after", "2024-03-29T12:00", "--limit", "3", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["fire_time"] for r in rows] == [
        "2024-03-30T02:30:00+01:00",
        "2024-03-31T03:00:00+02:00",  # 02:30 does not exist that day: right after the jump
        "2024-04-01T02:30:00+02:00",
    ]
    assert rows[0]["flow"] == "daily" and rows[0]["fire_time_utc"] == "2024-03-30T01:30:00+00:00"
    text = invoke(home, "next", "daily", "--after", "2024-03-29T12:00", "--limit", "1").stdout
    assert "daily: daily at 02:30 Europe/Paris" in text and "2024-03-30T02:30:00+01:00" in text


def test_next_without_a_flow_merges_all_flows_soonest_first(home: Path) -> None:
    for name, source in (("daily", DAILY), ("bounded", BOUNDED), ("manual", MANUAL)):
        write(home / "flows", name, source)
    result = invoke(home, "next", "--after", "2024-03-29T00:00Z", "--limit", "6", "--json")
    rows = json.loads(result.stdout)
    assert [(r["flow"], r["fire_time_utc"][:16]) for r in rows] == [
        ("daily", "2024-03-29T01:30"),
        ("daily", "2024-03-30T01:30"),
        ("bounded", "2024-03-30T12:00"),  # from its start date
        ("daily", "2024-03-31T01:00"),
        ("bounded", "2024-03-31T12:00"),
        ("daily", "2024-04-01T00:30"),
    ]
    after_end = invoke(home, "next", "bounded", "--after", "2024-04-01T12:00Z", "--json")
    assert json.loads(after_end.stdout) == []  # nothing after its end date


def test_next_of_a_day_includes_a_fire_at_its_midnight(home: Path) -> None:
    write(home / "flows", "bounded", BOUNDED.replace("0 12", "0 0"))
    rows = json.loads(invoke(home, "next", "bounded", "--after", "2024-03-31", "--json").stdout)
    assert rows[0]["fire_time"] == "2024-03-31T00:00:00+00:00"


@pytest.mark.parametrize(("name", "source"), [("manual", MANUAL), ("at_start", AT_START)])
def test_next_of_a_flow_without_schedule_says_so(home: Path, name: str, source: str) -> None:
    write(home / "flows", name, source)
    result = invoke(home, "next", name, "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == []
    assert f"flow '{name}' has no schedule" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["next", "nope"], "Error: unknown flow 'nope'"),
        (["next", "daily", "--after", "yesterday"], "Error: bad date 'yesterday'"),
        (["next", "daily", "--limit", "0"], "Error: --limit must be between 1 and 10,000, got 0"),
        (
            ["next", "--limit", "99999999999999999999"],
            "Error: --limit must be between 1 and 10,000, got 99999999999999999999",
        ),
    ],
)
def test_next_errors_exit_2(home: Path, args: list[str], message: str) -> None:
    write(home / "flows", "daily", DAILY)
    result = invoke(home, *args)
    assert result.exit_code == 2
    assert message in result.stderr


# --- check --------------------------------------------------------------------------------------

BROKEN = {
    "syntax": "with Flow(:\n",
    "bad_cron": """
        from cronflow import Flow, Shell
        with Flow("bad_cron", schedule="61 * * * *"):
            Shell("a", "true")
        """,
    "bad_zone": """
        from cronflow import Flow, Shell
        with Flow("bad_zone", schedule="@daily", timezone="Mars/Olympus"):
            Shell("a", "true")
        """,
    "task_cycle": """
        from cronflow import Flow, Shell
        with Flow("task_cycle"):
            a, b = Shell("a", "true"), Shell("b", "true")
            a >> b >> a
        """,
    "waits": """
        from cronflow import Flow, Shell
        with Flow("ping", wait_for=["pong"]):
            Shell("a", "true")
        with Flow("pong", wait_for=["ping", "nowhere"]):
            Shell("a", "true")
        """,
    "twin": """
        from cronflow import Flow, Shell
        with Flow("daily"):
            Shell("a", "true")
        """,
    "tasks": """
        from cronflow import Flow, Shell
        from cronflow.ops.ssh import SSHCommand
        with Flow("tasks"):
            Shell("pooled", "true", pool="gpu")
            Shell("typo", "echo {{ dss }} {{ params.x }} {{ var.y }}")
            SSHCommand("remote", "true", conn_id="station")
            SSHCommand("known", "true", conn_id="web-north")
        """,
    "jinja": """
        from cronflow import Flow, Python, Shell

        def load(path, day):
            pass

        with Flow("jinja"):
            Shell("fine", "echo {{ logical_date.strftime('%H') }} {{ ds | ds_add(-1) }} "
                          "{% raw %}${#x}{% endraw %} {{ macros.ds_format(ds, '%Y-%m-%d', '%d') }}")
            Shell("syntax", "echo {% if ds %}no end", env={"LEN": "${#list[@]}"})
            Shell("filter", "echo {{ ds | nofilter }}")
            Python("args", load, args=["/data/{{ dss }}.csv"], kwargs={"day": "{{ ds }"})
        """,
}


def test_a_clean_directory_passes(tmp_path: Path, home: Path) -> None:
    write(tmp_path / "flows", "daily", DAILY)
    result = invoke(home, "check", str(tmp_path / "flows"))
    assert result.exit_code == 0, result.output
    assert "1 flow files, 1 flows: no problems" in result.stdout


def test_check_lists_every_problem_and_exits_1(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flows = tmp_path / "repo" / "flows"
    write(flows, "daily", DAILY)
    for name, source in BROKEN.items():
        write(flows, name, source)
    monkeypatch.setenv("CRONFLOW_CONN_WEB_NORTH", "ssh://deploy@web.example.com")
    result = invoke(home, "check", str(flows), "--json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["flows"] == ["daily", "jinja", "ping", "pong", "tasks"]
    messages = "\n".join(p["message"] for p in report["problems"])
    paths = [Path(p["path"]).name for p in report["problems"]]
    expected = [
        f"{flows}/syntax.py: line 1: SyntaxError",
        "bad_cron.py: line 3: flow 'bad_cron': bad cron expression '61 * * * *': 61 is out of range",
        "bad_zone.py: line 3: flow 'bad_zone': unknown timezone 'Mars/Olympus'",
        "task_cycle.py: flow 'task_cycle': dependency cycle: ",
        f"flow 'daily' is already defined in {flows}/daily.py",
        "flow 'pong' waits for unknown flow 'nowhere'",
        "flow 'ping' is in a cycle of flow waits: ping -> pong -> ping",
        "flow 'pong' is in a cycle of flow waits: ping -> pong -> ping",
        "flow 'tasks' task 'pooled': pool 'gpu' is not in cronflow.toml (known: default, station)",
        "flow 'tasks' task 'typo': command: unknown template value '{{ dss }}'",
        "flow 'tasks' task 'remote': unknown connection 'station' (known: web_north)",
        "flow 'jinja' task 'syntax': command: template syntax error in 'echo {% if ds %}no end': "
        "Unexpected end of template",
        "flow 'jinja' task 'syntax': env.LEN: template syntax error in '${#list[@]}': Missing "
        "end of comment tag; for literal {{, {% or {# write {% raw %}...{% endraw %}",
        "flow 'jinja' task 'filter': command: template syntax error in 'echo {{ ds | nofilter }}': "
        "No filter named 'nofilter'",
        "flow 'jinja' task 'args': arguments.args[0]: unknown template value '{{ dss }}'",
        "flow 'jinja' task 'args': arguments.day: template syntax error in '{{ ds }': unexpected '}'",
    ]
    for text in expected:
        assert text in messages, text
    assert len(report["problems"]) == len(expected)
    assert (paths.count("twin.py"), paths.count("waits.py"), paths.count("tasks.py")) == (1, 3, 3)
    assert "web-north" not in messages and "params.x" not in messages


def test_check_without_a_home_skips_pools_and_connections(tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    write(flows, "tasks", BROKEN["tasks"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRONFLOW_CONN_")}
    result = CliRunner().invoke(
        app, ["--home", str(tmp_path / "nohome"), "check", str(flows)], env={**env, **ENV}
    )
    assert result.exit_code == 1  # the template typo is still found
    assert "pools not checked: no cronflow.toml" in result.stdout
    assert "connections not checked" in result.stdout
    assert not (tmp_path / "nohome").exists()  # a check creates nothing


def test_check_as_a_ci_step_in_a_subprocess(tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    write(flows, "daily", DAILY)
    assert cli(tmp_path / "nohome", "check", str(flows)).returncode == 0
    write(flows, "broken", "import nonexistent_module\n")
    result = cli(tmp_path / "nohome", "check", str(flows))
    assert result.returncode == 1
    assert "ModuleNotFoundError: No module named 'nonexistent_module'" in result.stdout


def test_check_a_single_file_and_the_homes_flows_by_default(home: Path) -> None:
    path = write(home / "flows", "daily", DAILY)
    assert invoke(home, "check", str(path)).exit_code == 0
    assert invoke(home, "check").exit_code == 0


def test_a_flow_file_that_hangs_is_a_problem_not_a_hang(tmp_path: Path) -> None:
    write(tmp_path, "hangs", "import time\ntime.sleep(600)\n")
    report = check_flows(tmp_path, timeout_s=0.5)
    [problem] = report.problems
    assert "import did not finish within 0.5s" in problem.message


@pytest.mark.parametrize(
    ("target", "message", "code"),
    [("missing", "no such file or directory", 2), ("empty", "no flow files (*.py)", 1)],
)
def test_check_of_nothing(tmp_path: Path, home: Path, target: str, message: str, code: int):
    (tmp_path / "empty").mkdir()
    result = invoke(home, "check", str(tmp_path / target))
    assert result.exit_code == code
    assert message in result.output


def test_list_says_when_a_flow_without_schedule_runs(home: Path) -> None:
    write(home / "flows", "at_start", AT_START)
    write(home / "flows", "manual", MANUAL)
    rows = {r["flow_id"]: r for r in json.loads(invoke(home, "list", "--json").stdout)}
    assert rows["at_start"]["schedule_text"] == "at each daemon start"
    assert rows["manual"]["schedule_text"] == "manual only"


def _age(path: Path, seconds: float) -> Path:
    """Make a file older by `seconds` (its modification time): who was there first."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns - int(seconds * 1e9)))
    return path


TWIN_AND_MORE = """
from cronflow import Flow, Shell
with Flow("daily"):
    Shell("a", "true")
with Flow("extra"):
    Shell("a", "true")
"""


WAITS = """
from cronflow import Flow, FlowDependency, Shell
with Flow("weekly", schedule="0 5 * * 1", start_date="2030-01-07", end_date="2030-06-30"):
    Shell("a", "true")
with Flow("upload"):
    Shell("a", "true")
with Flow("report", schedule="0 7 * * *", start_date="2030-01-01",
          wait_for=["weekly", FlowDependency("upload", offset_days=-1)]):
    Shell("a", "true")
with Flow("daily", schedule="0 3 * * *", start_date="2030-01-01"):
    Shell("a", "true")
with Flow("summary", schedule="0 9 * * *", start_date="2030-01-02",
          wait_for=[FlowDependency("daily", offset_days=-1)]):
    Shell("a", "true")
"""


def test_check_blames_the_newcomer_for_a_duplicate_flow_id(tmp_path: Path, home: Path) -> None:
    flows = tmp_path / "flows"
    original = _age(write(flows, "daily", DAILY), 3600)
    newcomer = write(flows, "a_copy", TWIN_AND_MORE)  # sorts first, but came later
    report = json.loads(invoke(home, "check", str(flows), "--json").stdout)
    assert [(p["path"], p["message"]) for p in report["problems"]] == [
        (str(newcomer), f"{newcomer}: flow 'daily' is already defined in {original}")
    ]
    assert report["flows"] == ["daily"]  # a broken file loads none of its flows, like any other


def test_check_takes_the_owner_of_a_flow_id_from_the_homes_database(home: Path) -> None:
    flows = home / "flows"
    owner = write(flows, "b_owner", DAILY)
    assert invoke(home, "list").exit_code == 0  # the store now has 'daily' from b_owner.py
    older = _age(write(flows, "a_older", DAILY), 3600)  # older, yet not the owner
    report = json.loads(invoke(home, "check", "--json").stdout)
    assert [p["message"] for p in report["problems"]] == [
        f"{older}: flow 'daily' is already defined in {owner}"
    ]


def test_check_reports_unknown_targets_of_trigger_flow_and_flow_sensor(tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    write(flows, "daily", DAILY)
    write(
        flows,
        "between",
        """
        from cronflow import Flow, FlowSensor, TriggerFlow
        with Flow("between"):
            TriggerFlow("kick", "nowhere")
            TriggerFlow("kick_daily", "daily")
            TriggerFlow("kick_param", "{{ params.target }}")  # known only when it runs
            FlowSensor("wait_task", "daily", task="b")
            FlowSensor("wait_flow", "elsewhere")
        """,
    )
    report = check_flows(flows, timeout_s=30)
    assert [p.text for p in report.problems] == [
        f"{flows}/between.py: flow 'between' task 'kick': unknown target flow 'nowhere' "
        "(known: between, daily)",
        f"{flows}/between.py: flow 'between' task 'wait_task': flow 'daily' has no task 'b' "
        "(known: a)",
        f"{flows}/between.py: flow 'between' task 'wait_flow': unknown target flow 'elsewhere' "
        "(known: between, daily)",
    ]


def test_check_lists_every_bad_option_of_a_task(tmp_path: Path) -> None:
    write(
        tmp_path,
        "options",
        """
        from cronflow import Flow, FileSensor
        with Flow("options"):
            FileSensor("wait", "/in/*.csv", mode="push", retries=-1, poke_interval="often")
        """,
    )
    [problem] = check_flows(tmp_path, timeout_s=30).problems
    assert problem.text == (
        f"{tmp_path}/options.py: flow 'options': task 'wait' (line 4): "
        "mode must be 'poke' or 'reschedule', got 'push'; "
        "poke_interval: cannot read 'often' (use seconds or units like 30s, 5m, 2h, 90d); "
        "retries must be a whole number >= 0"
    )


def test_check_notes_the_days_a_wait_has_nothing_to_wait_for(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    write(tmp_path, "waits", WAITS)
    report = check_flows(tmp_path, timeout_s=30, now=datetime(2030, 1, 1, tzinfo=UTC))
    assert not report.problems
    notes = [n for n in report.notes if n.startswith("flow ")]
    assert notes == [
        "flow 'report' waits for 'weekly': its runs before 2030-01-07 have nothing to wait for "
        "(the start date of 'weekly')",
        "flow 'report' waits for 'weekly': its runs after 2030-06-29 have nothing to wait for "
        "(the end date of 'weekly')",
        "flow 'report' waits for 'weekly': 'weekly' does not fire on 149 of the 174 days waited "
        "for in the coming year (first 2030-01-08): those runs have nothing to wait for",
        "flow 'report' waits for 'upload', which has no schedule: each run waits until a run of "
        "'upload' of its day succeeded (at most wait_timeout)",
    ]  # 25 Mondays of 174 days; summary waits for every day of daily: nothing to note
    result = invoke(tmp_path, "check", str(tmp_path))
    assert result.exit_code == 0  # notes are no problems
    assert "note: flow 'report' waits for 'weekly': its runs before 2030-01-07" in result.stdout

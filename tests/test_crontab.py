"""`cronflow import-crontab`: reading crontabs as Debian's cron does, and the flow files made."""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import cli, utc, wait_for
from typer.testing import CliRunner

from cronflow import catalog
from cronflow.cli import app
from cronflow.crontab import LineStatus, parse_env_line, read_crontab, split_command
from cronflow.executor import Attempt, LocalExecutor
from cronflow.flow import Flow
from cronflow.flowfile import ImportStatus, import_crontab
from cronflow.jobnames import flow_name, unique_name
from cronflow.loader import describe_file
from cronflow.scheduler import Scheduler
from cronflow.store import Store
from cronflow.templates import render

ENV = {"NO_COLOR": "1", "COLUMNS": "200", "CRONFLOW_HOME": None}


# --- reading a crontab --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("MAILTO=ops@example.com", ("MAILTO", "ops@example.com")),
        ("PATH = /usr/local/bin:/usr/bin:/bin", ("PATH", "/usr/local/bin:/usr/bin:/bin")),
        ('GREETING="hello world"', ("GREETING", "hello world")),
        ("GREETING='hello world'", ("GREETING", "hello world")),
        ("'QUOTED NAME'=x", ("QUOTED NAME", "x")),
        ("A=b # not a comment", ("A", "b # not a comment")),
        ("A=b   ", ("A", "b")),
        ('A="b  "', ("A", "b")),  # cron strips trailing blanks even inside quotes
        ('MAILTO=""', ("MAILTO", "")),
        ("A==b", ("A", "=b")),
        ("A=", None),  # an empty unquoted value: cron reads a job line (and rejects it)
        ("A B=c", None),
        ('A="b" c', None),
        ("0 * * * * A=b", None),
        ("*/5 * * * * echo x=y", None),
    ],
)
def test_environment_lines(line: str, expected: tuple[str, str] | None) -> None:
    assert parse_env_line(line) == expected


@pytest.mark.parametrize(
    ("raw", "command", "stdin"),
    [
        ("echo hi", "echo hi", None),
        (
            "mail -s hi joe%Joe,%%Where are your kids?%",
            "mail -s hi joe",
            "Joe,\n\nWhere are your kids?\n",
        ),
        ("date +\\%Y-\\%m-\\%d", "date +%Y-%m-%d", None),  # \% is a literal %
        ("cat%a\\%b", "cat", "a%b\n"),
        ("cat%", "cat", None),  # nothing after the %: no input
        ("cat%line\n", "cat", "line\n"),
        ("echo a\\\\b", "echo a\\b", None),  # Debian turns \\ into \ in the command
        ("echo a\\nb", "echo a\\nb", None),  # other backslashes stay
        ("cat%a\\\\b", "cat", "a\\\\b\n"),  # ... and in the input all of them stay
        ("cat%end\\", "cat", "end\\\n"),
    ],
)
def test_percent_signs(raw: str, command: str, stdin: str | None) -> None:
    assert split_command(raw) == (command, stdin)


CRONTAB = """\
# m h dom mon dow command
   # an indented comment

SHELL=/bin/bash
0 2 * * * backup.sh # this is part of the command
MAILTO=ops@example.com
30 4 1,15 * 5 report.sh
@reboot start-thing
"""


def test_a_crontab_is_read_line_by_line_with_the_variables_above_each_job() -> None:
    jobs = read_crontab(CRONTAB)
    assert [(j.line_no, j.schedule, j.command) for j in jobs] == [
        (5, "0 2 * * *", "backup.sh # this is part of the command"),
        (7, "30 4 1,15 * 5", "report.sh"),
        (8, "@reboot", "start-thing"),
    ]
    assert jobs[0].env == {"SHELL": "/bin/bash"}
    assert jobs[1].env == jobs[2].env == {"SHELL": "/bin/bash", "MAILTO": "ops@example.com"}
    assert all(j.status is LineStatus.OK for j in jobs)


@pytest.mark.parametrize(
    ("line", "schedule", "note"),
    [
        ("5-10-12 * * * * x", "5-10 * * * *", "cron reads the minute field '5-10-12' as '5-10'"),
        ("0 0 * * mon#2 x", "0 0 * * mon", "cron reads the day-of-week field 'mon#2' as 'mon'"),
        ("0 1,5-1 * * * x", "0 1 * * *", ""),
        ("0 0 1 * fri-sun x", "0 0 1 * *", "the day-of-week field 'fri-sun' selects no day"),
        ("  0 0 * * * x", "0 0 * * *", ""),  # leading blanks
        ("0\t0 * *\t* x", "0 0 * * *", ""),  # tabs
    ],
)
def test_lines_are_read_as_cron_reads_them(line: str, schedule: str, note: str) -> None:
    [job] = read_crontab(line)
    assert (job.status, job.schedule, job.command) == (LineStatus.OK, schedule, "x")
    assert note in " ".join(job.notes)


def test_system_crontab_lines_have_a_user_field() -> None:
    jobs = read_crontab(
        "17 * * * * root cd / && run-parts --report /etc/cron.hourly\n"
        "@daily   root   logrotate /etc/logrotate.conf\n"
        "0 0 * * * nobody-at-all true\n"
        "0 0 * * *\n",
        system=True,
        user_exists=lambda name: name == "root",
    )
    assert [(j.user, j.command) for j in jobs[:2]] == [
        ("root", "cd / && run-parts --report /etc/cron.hourly"),
        ("root", "logrotate /etc/logrotate.conf"),
    ]
    assert jobs[2].reason == "cron rejects it: bad username: no user 'nobody-at-all' on this system"
    assert jobs[3].status is LineStatus.REJECTED


def test_a_command_cron_would_truncate_is_rejected() -> None:
    [job] = read_crontab("0 0 * * * echo " + "x" * 1000)
    assert job.status is LineStatus.REJECTED
    assert "command too long" in job.reason


def test_a_line_holding_nul_is_rejected_and_shown_escaped() -> None:
    variable, job, fine = read_crontab("A=x\0y\n0 0 * * * echo a\0b\n0 0 * * * true\n")
    for rejected in (variable, job):
        assert rejected.status is LineStatus.REJECTED
        assert rejected.reason == "the line holds a NUL character, which no command can take"
    assert job.line == "0 0 * * * echo a\\0b"
    assert (fine.status, fine.env) == (LineStatus.OK, {})


# --- names --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "name"),
    [
        ("/usr/local/bin/backup-db.sh --full >> /var/log/backup.log 2>&1", "backup_db"),
        ("cd /srv/app && ./manage.py clearsessions", "manage_clearsessions"),
        (
            "test -x /usr/sbin/anacron || ( cd / && run-parts --report /etc/cron.daily )",
            "cron_daily",
        ),
        ("PGPASSWORD=x nice -n 10 pg_dump mydb > /backup/db.sql", "pg_dump"),
        ("timeout 1h flock -n /tmp/lock /opt/sync/run_sync.py", "run_sync"),
        ("python3 /opt/jobs/Fetch Weather.py", "fetch"),
        ('python3 "/opt/jobs/Fetch Weather.py"', "fetch_weather"),
        ("php artisan schedule:run", "artisan_schedule_run"),
        ("echo hello > /tmp/x", "echo"),
        ("[ -f /tmp/flag ] && rm /tmp/flag", "rm"),
        ("curl -fsS https://hc-ping.com/abc", "curl"),
        ("", ""),
        (":", ""),
        ("echo 'unbalanced", "echo"),
    ],
)
def test_flow_names_come_from_the_command(command: str, name: str) -> None:
    assert flow_name(command) == name


def test_names_taken_earlier_in_the_same_import_get_a_number() -> None:
    taken: set[str] = set()
    assert [unique_name("job", taken) for _ in range(3)] == ["job", "job_2", "job_3"]


@pytest.mark.parametrize(
    "text",
    [
        "docker inspect --format '{{.State}}'",
        "a {{{ b }}} {{{{ c",
        "{{ ds }}",
        "}}{{",
        "echo ${#list[@]} {% x %}",
        "a {% endraw %} b {%- endraw -%} {{",
    ],
)
def test_commands_are_written_so_that_templates_leave_them_alone(text: str) -> None:
    from cronflow.templates import literal

    assert render(literal(text), {}) == text
    assert render(literal(text), {}, quote=shlex.quote) == text  # no value, nothing quoted


# --- flow files ---------------------------------------------------------------------------------

FULL = """\
SHELL=/bin/bash
MAILTO=ops@example.com,paul
CRON_TZ=Europe/Paris
TOKEN="a {{ b }}"
30 2 * * 1-5 /usr/local/bin/backup-db.sh --full >> /var/log/backup.log 2>&1
0 22 * * 1-5 mail -s "It's 10pm" joe%Joe,%%Where are your kids?%
@reboot /usr/bin/start-thing
60 * * * * bad
0 0 31 2 * never
"""


def load(path: Path) -> dict:
    result = describe_file(path)
    assert result.error is None, result.error
    [spec] = result.specs
    return spec


def test_each_line_becomes_a_readable_flow_file_that_loads(tmp_path: Path) -> None:
    report = import_crontab(FULL, tmp_path, source="/tmp/ct", timezone="UTC")
    assert [(r.line_no, r.flow, r.status) for r in report.rows] == [
        (5, "backup_db", ImportStatus.CONVERTED),
        (6, "mail", ImportStatus.CONVERTED),
        (7, "start_thing", ImportStatus.CONVERTED),
        (8, None, ImportStatus.REJECTED),
        (9, "never", ImportStatus.NEVER_FIRES),
    ]
    assert not report.complete
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "backup_db.py",
        "mail.py",
        "start_thing.py",
    ]
    text = (tmp_path / "backup_db.py").read_text()
    assert "# 30 2 * * 1-5 /usr/local/bin/backup-db.sh --full >> /var/log/backup.log 2>&1" in text
    spec = load(tmp_path / "backup_db.py")
    assert (spec["flow_id"], spec["schedule"], spec["timezone"]) == (
        "backup_db",
        "30 2 * * 1-5",
        "Europe/Paris",
    )
    assert (spec["catchup"], spec["tags"]) == (False, ["crontab"])
    [task] = spec["tasks"]
    assert task["op"]["command"] == "/usr/local/bin/backup-db.sh --full >> /var/log/backup.log 2>&1"
    assert task["op"]["shell"] == "/bin/bash"
    assert task["op"]["env"] == {
        "SHELL": "/bin/bash",
        "PATH": "/usr/bin:/bin",  # cron's own PATH, since the crontab sets none
        "MAILTO": "ops@example.com,paul",
        "CRON_TZ": "Europe/Paris",
        "TOKEN": "{% raw %}a {{ b }}{% endraw %}",  # renders back to 'a {{ b }}'
    }
    assert render(task["op"]["env"]["TOKEN"], {}) == "a {{ b }}"
    assert task["retries"] == 0
    assert task["email_on_failure"] == ["ops@example.com"]
    assert load(tmp_path / "mail.py")["tasks"][0]["op"]["stdin"] == "Joe,\n\nWhere are your kids?\n"
    reboot = load(tmp_path / "start_thing.py")
    assert (reboot["schedule"], reboot["run_at_daemon_start"]) == (None, True)
    notes = " ".join(report.notes)
    assert "MAILTO paul: local mailboxes" in notes
    assert "Debian's cron ignores a whole crontab" in notes


def test_without_variables_jobs_get_crons_shell_and_path_and_the_default_zone(tmp_path: Path):
    import_crontab("0 3 * * * nightly.sh\n", tmp_path, timezone="Indian/Reunion")
    spec = load(tmp_path / "nightly.py")
    assert spec["timezone"] == "Indian/Reunion"
    assert spec["tasks"][0]["op"]["shell"] == "/bin/sh"
    assert spec["tasks"][0]["op"]["env"] == {"SHELL": "/bin/sh", "PATH": "/usr/bin:/bin"}
    assert "email_on_failure" not in spec["tasks"][0]


def test_existing_flows_are_kept_unless_forced_and_a_dry_run_writes_nothing(tmp_path: Path):
    (tmp_path / "nightly.py").write_text("# mine\n")
    report = import_crontab("0 3 * * * nightly.sh\n", tmp_path, timezone="UTC")
    assert report.rows[0].status is ImportStatus.EXISTS
    assert "use --force" in report.rows[0].reason
    assert (tmp_path / "nightly.py").read_text() == "# mine\n"
    report = import_crontab(
        "0 3 * * * nightly.sh\n", tmp_path / "new", timezone="UTC", dry_run=True
    )
    assert (report.rows[0].status, report.rows[0].written) == (ImportStatus.CONVERTED, False)
    assert not (tmp_path / "new").exists()
    report = import_crontab("0 3 * * * nightly.sh\n", tmp_path, timezone="UTC", force=True)
    assert report.rows[0].written and "# mine" not in (tmp_path / "nightly.py").read_text()


def test_a_flow_that_would_not_load_is_not_written(tmp_path: Path) -> None:
    report = import_crontab(
        "CRON_TZ=Mars/Olympus\n0 3 * * * nightly.sh\n", tmp_path, timezone="UTC"
    )
    assert report.rows[0].status is ImportStatus.REJECTED
    assert "unknown timezone 'Mars/Olympus'" in report.rows[0].reason
    assert not list(tmp_path.iterdir())


def test_reboot_flows_have_no_time_schedule() -> None:
    flow = Flow("at_start", schedule="@reboot")
    assert flow.schedule is None and flow.run_at_daemon_start
    assert flow.spec()["run_at_daemon_start"] is True
    assert "run_at_daemon_start" not in Flow("manual").spec()


# --- the command --------------------------------------------------------------------------------


def test_cli_prints_a_table_and_exits_1_when_a_line_was_not_converted(tmp_path: Path) -> None:
    crontab = tmp_path / "crontab.txt"
    crontab.write_text(FULL)
    out = tmp_path / "flows"
    args = ["import-crontab", str(crontab), "--out", str(out), "--timezone", "UTC"]
    result = CliRunner().invoke(app, args, env=ENV)
    assert result.exit_code == 1, result.output
    for text in ("backup_db", "converted", "rejected", "bad minute", "never_fires", "3 of 5"):
        assert text in result.stdout
    result = CliRunner().invoke(app, [*args, "--json"], env=ENV)
    rows = json.loads(result.stdout)
    assert {"line_no", "line", "flow", "status", "reason"} <= set(rows[0])
    assert [r["status"] for r in rows] == ["exists"] * 3 + ["rejected", "never_fires"]


def test_cli_reads_standard_input_into_the_homes_flows(home: Path) -> None:
    result = cli(home, "import-crontab", "--timezone", "UTC", input="*/5 * * * * poll.sh\n")
    assert result.returncode == 0, result.stderr
    assert (home / "flows" / "poll.py").exists()
    result = cli(home, "next", "poll", "--after", "2024-03-01T00:00Z", "--limit", "2", "--json")
    assert [r["fire_time"] for r in json.loads(result.stdout)] == [
        "2024-03-01T00:05:00+00:00",
        "2024-03-01T00:10:00+00:00",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["import-crontab", "/nonexistent/crontab"], "Error: cannot read the crontab"),
        (["import-crontab", "-", "--timezone", "Mars/Olympus"], "unknown timezone 'Mars/Olympus'"),
    ],
)
def test_cli_errors_are_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str):
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path)], input="", env=ENV)
    assert result.exit_code == 2
    assert message in result.stderr


@pytest.mark.parametrize("errors", ["strict", "surrogateescape"])
def test_standard_input_that_is_not_utf8_is_one_line(home: Path, errors: str) -> None:
    env = {**os.environ, "CRONFLOW_HOME": str(home), "PYTHONIOENCODING": f"utf-8:{errors}"}
    result = subprocess.run(
        [sys.executable, "-m", "cronflow", "import-crontab", "-", "--dry-run"],
        input=b"0 0 * * * echo caf\xe9\n",
        capture_output=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.decode() == (
        "Error: cannot read the crontab on standard input: not UTF-8 text\n"
    )


def test_system_crontabs_are_read_with_their_user_field(tmp_path: Path) -> None:
    crontab = tmp_path / "system"
    crontab.write_text("17 * * * * root cd / && run-parts --report /etc/cron.hourly\n")
    args = ["import-crontab", str(crontab), "--system", "--out", str(tmp_path / "f"), "--json"]
    result = CliRunner().invoke(app, args, env=ENV)
    [row] = json.loads(result.stdout)
    assert (row["flow"], row["status"]) == ("cron_hourly", "converted")
    spec = load(tmp_path / "f" / "cron_hourly.py")
    assert spec["tasks"][0]["op"]["command"] == "cd / && run-parts --report /etc/cron.hourly"


# --- running what was imported ------------------------------------------------------------------


def test_stdin_text_reaches_the_task(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    executor = LocalExecutor(1)
    attempt = Attempt(
        1,
        "t",
        1,
        "default",
        ["/bin/sh", "-c", f"cat > {out}"],
        {},
        None,
        tmp_path / "t.log",
        None,
        "test-marker",
        stdin="a\nb%c\n",
    )
    executor.start(attempt)
    wait_for(lambda: executor.reap(), what="the task to end")
    assert out.read_text() == "a\nb%c\n"


@pytest.mark.slow
def test_reboot_lines_run_at_each_daemon_start_with_their_input(home: Path, daemon) -> None:
    out = home / "out.txt"
    crontab = f"@reboot cat >> {out}%hello%world\n"
    result = cli(home, "import-crontab", "--timezone", "UTC", input=crontab)
    assert result.returncode == 0, result.stdout + result.stderr
    first = daemon()
    wait_for(lambda: out.exists() and out.read_text() == "hello\nworld\n", what="the first run")
    first.stop()
    daemon()
    wait_for(lambda: out.read_text() == "hello\nworld\n" * 2, what="a run at the second start")
    assert stat.S_ISREG(os.stat(out).st_mode)


AT_START = """
from cronflow import Flow, Shell
with Flow("{name}", schedule="@reboot"):
    Shell("a", "true")
"""


def test_each_daemon_start_gets_its_own_run_even_within_one_second(settings, write_flow):
    write_flow("at_start", AT_START.format(name="at_start"))
    write_flow("paused", AT_START.format(name="paused"))
    store = Store(settings.db_path)
    scheduler = Scheduler(store, settings, LocalExecutor(1))
    scheduler.catalog = catalog.sync(store, settings)
    store.set_paused("paused", True)
    start = utc(2024, 3, 1, 12, 0, 0)
    assert scheduler.run_startup_flows(start) == 1
    assert scheduler.run_startup_flows(start.replace(microsecond=500)) == 1
    runs = store.recent_runs("at_start", 5)
    assert sorted(r["logical_date"] for r in runs) == [
        "2024-03-01T12:00:00+00:00",
        "2024-03-01T12:00:01+00:00",  # a restart within the same second: the next free one
    ]
    assert {r["run_type"] for r in runs} == {"manual"}
    assert store.recent_runs("paused", 5) == []

"""The scheduler driven by a fake clock: catch-up, DST, end dates, limits, waits, retries, pools.

Tasks are real processes (the local executor); only time is injected.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from conftest import FakeClock, is_alive, utc, wait_for

from cronflow import catalog, control, supervisor
from cronflow.config import Settings
from cronflow.executor import LocalExecutor
from cronflow.recovery import recover
from cronflow.scheduler import Scheduler
from cronflow.states import TaskState
from cronflow.store import Store


class Harness:
    def __init__(self, settings: Settings, start: datetime) -> None:
        self.store = Store(settings.db_path)
        self.clock = FakeClock(start)
        self.settings = settings
        self.scheduler = Scheduler(
            self.store, settings, LocalExecutor(settings.parallelism), self.clock
        )
        self.sync()

    def sync(self) -> None:
        self.scheduler.catalog = catalog.sync(self.store, self.settings)

    def tick(self) -> datetime:
        return self.scheduler.tick(self.clock.now())

    def at(self, moment: datetime) -> datetime:
        self.clock.current = moment
        return self.tick()

    def settle(self) -> None:
        """Tick (without moving the clock) until no task runs or waits for a slot."""

        def idle() -> bool:
            self.tick()
            busy = self.store.tis_in_states(
                [TaskState.SCHEDULED, TaskState.QUEUED, TaskState.RUNNING]
            )
            return not busy and not self.scheduler.executor.running()

        wait_for(idle, what="the scheduler to settle")

    def runs(self, flow_id: str) -> list[dict]:
        return self.store.runs_between(flow_id, utc(1970, 1, 1), utc(2100, 1, 1))

    def logical_dates(self, flow_id: str) -> list[str]:
        return [r["logical_date"] for r in self.runs(flow_id)]

    def ti(self, flow_id: str, task_id: str, index: int = -1) -> dict:
        run = self.runs(flow_id)[index]
        ti = self.store.ti(run["run_id"], task_id)
        assert ti is not None
        return ti


@pytest.fixture
def make(settings: Settings) -> Callable[[datetime], Harness]:
    return lambda start: Harness(settings, start)


EMPTY_FLOW = """
from cronflow import Flow
Flow("{flow_id}", schedule="{cron}", timezone="{tz}", start_date={start!r}, end_date={end!r},
     catchup={catchup}, max_active_runs={mar})
"""


def empty_flow(
    write_flow,
    flow_id="f",
    cron="30 2 * * *",
    tz="Europe/Paris",
    start="2024-03-28",
    end=None,
    catchup=True,
    mar=16,
) -> None:
    write_flow(
        flow_id,
        EMPTY_FLOW.format(
            flow_id=flow_id, cron=cron, tz=tz, start=start, end=end, catchup=catchup, mar=mar
        ),
    )


def test_catchup_creates_every_missed_run_oldest_first_across_spring_forward(make, write_flow):
    empty_flow(write_flow)
    h = make(utc(2024, 4, 2, 12))
    h.tick()
    assert h.logical_dates("f") == [
        "2024-03-28T01:30:00+00:00",
        "2024-03-29T01:30:00+00:00",
        "2024-03-30T01:30:00+00:00",
        "2024-03-31T01:00:00+00:00",  # 02:30 does not exist: runs once, at the jump (03:00 CEST)
        "2024-04-01T00:30:00+00:00",
        "2024-04-02T00:30:00+00:00",
    ]
    assert [r["run_type"] for r in h.runs("f")] == ["scheduled"] * 6


def test_daily_0230_runs_once_on_fall_back_day(make, write_flow):
    empty_flow(write_flow, start="2024-10-26")
    h = make(utc(2024, 10, 28, 6))
    h.tick()
    assert h.logical_dates("f") == [
        "2024-10-26T00:30:00+00:00",
        "2024-10-27T00:30:00+00:00",  # first 02:30 (CEST) only, not again at 02:30 CET
        "2024-10-28T01:30:00+00:00",
    ]


def test_clock_walking_through_fall_back_day_fires_each_slot_once(make, write_flow):
    """The store's unique (flow, date) key would hide a slot offered twice at one instant, so
    the instants are compared one by one: a wildcard job fires at each half-hour of the 25-hour
    day (both 02:00-03:00 hours), a fixed-time job once, at the first 02:30."""
    empty_flow(write_flow, cron="*/30 * * * *", start="2024-10-27")
    empty_flow(write_flow, flow_id="g", cron="30 2 * * *", start="2024-10-27")
    h = make(utc(2024, 10, 26, 22))
    while h.clock.now() < utc(2024, 10, 27, 23):
        h.clock.advance(minutes=7)
        h.tick()
    half_hours = [utc(2024, 10, 26, 22) + timedelta(minutes=30 * i) for i in range(51)]
    assert h.logical_dates("f") == [t.isoformat() for t in half_hours]  # 00:00 CEST - 00:00 CET
    assert h.logical_dates("g") == ["2024-10-27T00:30:00+00:00"]  # not again at 02:30 CET


def test_catchup_off_runs_only_the_latest_missed_and_logs_the_rest(make, write_flow, caplog):
    empty_flow(write_flow, catchup=False)
    h = make(utc(2024, 4, 2, 12))
    with caplog.at_level("WARNING", logger="cronflow.scheduler"):
        h.tick()
    assert h.logical_dates("f") == ["2024-04-02T00:30:00+00:00"]
    assert "event=missed_fires flow=f count=5" in caplog.text
    h.at(utc(2024, 4, 3, 0, 29))
    assert len(h.runs("f")) == 1
    h.at(utc(2024, 4, 3, 0, 30))
    assert h.logical_dates("f")[-1] == "2024-04-03T00:30:00+00:00"


def test_downtime_is_caught_up_after_restart(make, write_flow):
    empty_flow(write_flow, start="2024-04-01")
    h = make(utc(2024, 4, 1, 12))
    h.tick()
    assert len(h.runs("f")) == 1
    # The daemon is down for three days; a new scheduler on the same store catches up.
    h2 = make(utc(2024, 4, 4, 12))
    h2.tick()
    assert h2.logical_dates("f")[1:] == [
        "2024-04-02T00:30:00+00:00",
        "2024-04-03T00:30:00+00:00",
        "2024-04-04T00:30:00+00:00",
    ]


def test_no_runs_after_end_date(make, write_flow):
    empty_flow(write_flow, start="2024-03-01", end="2024-03-03")
    h = make(utc(2024, 3, 10))
    h.tick()
    assert h.logical_dates("f") == [
        "2024-03-01T01:30:00+00:00",
        "2024-03-02T01:30:00+00:00",
    ]  # 2024-03-03 00:00 Paris is the end: its 02:30 fire is after it
    h.at(utc(2024, 4, 10))
    assert len(h.runs("f")) == 2


def test_flow_without_start_date_starts_from_first_sight(make, write_flow):
    empty_flow(write_flow, start=None, cron="0 * * * *", tz="UTC")
    h = make(utc(2024, 5, 1, 10, 30))
    h.tick()
    assert h.runs("f") == []
    h.at(utc(2024, 5, 1, 11, 0))
    assert h.logical_dates("f") == ["2024-05-01T11:00:00+00:00"]


def test_paused_flow_creates_no_runs(make, write_flow):
    empty_flow(write_flow)
    h = make(utc(2024, 4, 2, 12))
    h.store.set_paused("f", True)
    h.tick()
    assert h.runs("f") == []


SLOW_FLOW = """
from cronflow import Flow, Shell
with Flow("slow", schedule="0 0 * * *", start_date="2024-01-01", catchup=True, max_active_runs=2):
    Shell("work", "sleep 0.2")
"""


def test_max_active_runs_limits_and_keeps_order(make, write_flow):
    write_flow("slow", SLOW_FLOW)
    h = make(utc(2024, 1, 5, 12))
    h.tick()
    runs = h.runs("slow")
    assert [r["logical_date"][:10] for r in runs] == ["2024-01-01", "2024-01-02"]
    assert {r["state"] for r in runs} == {"running"}
    peak = 0

    def all_done() -> bool:
        nonlocal peak
        h.tick()
        states = [r["state"] for r in h.runs("slow")]
        peak = max(peak, sum(s in ("queued", "running") for s in states))
        return states == ["success"] * 5

    wait_for(all_done, what="five runs to succeed")
    assert peak == 2
    runs = h.runs("slow")  # created oldest first: run ids follow logical dates
    assert [r["run_id"] for r in runs] == sorted(r["run_id"] for r in runs)
    starts = [r["started_at"] for r in runs]
    assert starts == sorted(starts)


WAITING_FLOWS = """
from cronflow import Flow, FlowDependency, Shell
with Flow("upstream", schedule="0 1 * * *", start_date="2024-06-01", catchup=True, max_active_runs=5):
    Shell("gate", "test -f {home}/open-{{{{ ds }}}}")
with Flow("downstream", schedule="0 3 * * *", start_date="2024-06-02", catchup=True, max_active_runs=5,
          wait_for=["upstream", FlowDependency("upstream", offset_days=-1)]):
    Shell("use", "true")
"""


def test_inter_flow_wait_for_same_and_previous_day(make, write_flow, home):
    write_flow("pair", WAITING_FLOWS.format(home=home))
    (home / "open-2024-06-01").touch()
    h = make(utc(2024, 6, 2, 12))
    h.tick()
    h.settle()
    states = {r["logical_date"][:10]: r["state"] for r in h.runs("upstream")}
    assert states == {"2024-06-01": "success", "2024-06-02": "failed"}
    down = h.runs("downstream")
    assert [(r["logical_date"][:10], r["state"]) for r in down] == [("2024-06-02", "queued")]
    flow = h.scheduler.catalog.get("downstream")
    assert h.scheduler.unmet_waits(flow, down[0]) == [("upstream", "2024-06-02")]
    # Open the gate and re-run the failed upstream day: the downstream run starts and succeeds.
    (home / "open-2024-06-02").touch()
    up = h.runs("upstream")[1]
    cli_store = Store(h.settings.db_path)  # the CLI's own connection, as in real life
    cli_store.update_ti(up["run_id"], "gate", state=TaskState.NONE)
    from cronflow.states import RunState

    cli_store.set_run_state(up["run_id"], RunState.QUEUED, h.clock.now())
    h.tick()
    h.settle()
    h.tick()
    h.settle()
    assert [r["state"] for r in h.runs("downstream")] == ["success"]


RETRY_FLOW = """
from cronflow import Flow, Shell
with Flow("retry", defaults={{"retry_delay": 60}}):
    flaky = Shell("flaky", "test -f {flag} || {{ touch {flag}; exit 3; }}", retries=2)
    doomed = Shell("doomed", "echo no; exit 1", retries=0)
    after_doomed = Shell("after_doomed", "true")
    cleanup = Shell("cleanup", "true", trigger_rule="all_done")
    doomed >> after_doomed >> cleanup
    flaky >> cleanup
"""


def test_retry_waits_for_its_delay_then_succeeds_and_failures_propagate(make, write_flow, home):
    write_flow("retry", RETRY_FLOW.format(flag=home / "flag"))
    h = make(utc(2024, 1, 1))
    from cronflow import control

    flow = h.scheduler.catalog.get("retry")
    control.trigger(h.store, flow, utc(2024, 1, 1))
    h.tick()
    h.settle()
    flaky = h.ti("retry", "flaky")
    assert flaky["state"] == "up_for_retry"
    assert flaky["next_try_at"] == "2024-01-01T00:01:00+00:00"
    assert flaky["reason"] == "exit code 3"
    assert h.ti("retry", "doomed")["state"] == "failed"
    assert h.ti("retry", "after_doomed")["state"] == "upstream_failed"
    assert h.ti("retry", "cleanup")["state"] == "none"
    h.at(utc(2024, 1, 1, 0, 0, 59))
    assert h.ti("retry", "flaky")["state"] == "up_for_retry"
    h.at(utc(2024, 1, 1, 0, 1))
    h.settle()
    flaky = h.ti("retry", "flaky")
    assert (flaky["state"], flaky["try_number"]) == ("success", 2)
    assert h.ti("retry", "cleanup")["state"] == "success"
    assert h.runs("retry")[0]["state"] == "failed"
    logs = sorted(Path(flaky["log_path"]).parent.glob("try-*.log"))
    assert [p.name for p in logs] == ["try-1.log", "try-2.log"]
    assert "retry at 2024-01-01T00:01:00+00:00 (try 2 of 3)" in logs[0].read_text()


POOL_FLOW = """
from cronflow import Flow, Shell
with Flow("pooled"):
    for i in range(3):
        Shell(f"station{{i}}", "echo $(date +%s.%N) start >> {out}; sleep 0.2; echo $(date +%s.%N) end >> {out}",
              pool="station", priority=i)
"""


def test_pool_slots_and_priority(make, write_flow, home):
    out = home / "pool.txt"
    write_flow("pooled", POOL_FLOW.format(out=out))
    h = make(utc(2024, 1, 1))
    from cronflow import control

    control.trigger(h.store, h.scheduler.catalog.get("pooled"), utc(2024, 1, 1))
    h.tick()
    assert h.scheduler.executor.pool_usage() == {"station": 1}
    assert h.ti("pooled", "station2")["state"] == "running"  # highest priority first
    h.settle()
    events = [line.split()[1] for line in out.read_text().splitlines()]
    assert events == ["start", "end"] * 3  # never two at once in a 1-slot pool


def test_unconfigured_pool_fails_the_task_with_reason(make, write_flow):
    write_flow(
        "nopool",
        """
        from cronflow import Flow, Shell
        with Flow("nopool"):
            Shell("t", "true", pool="nowhere")
    """,
    )
    h = make(utc(2024, 1, 1))
    from cronflow import control

    control.trigger(h.store, h.scheduler.catalog.get("nopool"), utc(2024, 1, 1))
    h.tick()
    ti = h.ti("nopool", "t")
    assert ti["state"] == "failed"
    assert "pool 'nowhere' is not configured" in ti["reason"]


def test_timeout_kills_the_whole_process_group(make, write_flow, home):
    pidfile = home / "grandchild.pid"
    write_flow(
        "hang",
        f"""
        from cronflow import Flow, Shell
        with Flow("hang"):
            Shell("hang", "sleep 300 & echo $! > {pidfile}; wait", timeout=0.5)
    """,
    )
    h = make(utc(2024, 1, 1))
    from cronflow import control

    control.trigger(h.store, h.scheduler.catalog.get("hang"), utc(2024, 1, 1))
    h.tick()
    h.settle()
    ti = h.ti("hang", "hang")
    assert (ti["state"], ti["reason"]) == ("failed", "timed out after 0.5s")
    grandchild = int(pidfile.read_text())
    wait_for(lambda: not is_alive(grandchild), timeout=10, what="the grandchild to be killed")


def test_a_shell_task_starts_with_default_signal_actions_as_under_cron(make, write_flow, home):
    """Python ignores SIGPIPE; a task must not inherit that: `yes | head -1` ends `yes` by
    SIGPIPE (status 141) as in a terminal, instead of an endless 'Broken pipe' error."""
    out = home / "pipe.out"
    write_flow(
        "pipe",
        f"""
        from cronflow import Flow, Shell
        with Flow("pipe"):
            Shell("t", "set -o pipefail; yes | head -1 >/dev/null; echo ${{PIPESTATUS[0]}} > {out}"
                  " ; grep SigIgn /proc/self/status >> {out}")
    """,
    )
    h = make(utc(2024, 1, 1))
    from cronflow import control

    control.trigger(h.store, h.scheduler.catalog.get("pipe"), utc(2024, 1, 1))
    h.tick()
    h.settle()
    status, ignored = out.read_text().splitlines()
    assert status == "141"
    sigpipe, sigxfsz = 1 << (13 - 1), 1 << (25 - 1)  # SigIgn: bit N-1 is signal N
    assert int(ignored.split()[1], 16) & (sigpipe | sigxfsz) == 0


def test_template_error_fails_the_attempt_with_a_clear_reason(make, write_flow):
    write_flow(
        "tpl",
        """
        from cronflow import Flow, Shell
        with Flow("tpl"):
            Shell("t", "echo {{ params.missing }}")
    """,
    )
    h = make(utc(2024, 1, 1))
    from cronflow import control

    control.trigger(h.store, h.scheduler.catalog.get("tpl"), utc(2024, 1, 1))
    h.tick()
    ti = h.ti("tpl", "t")
    assert ti["state"] == "failed"
    assert "no key 'missing' in params" in ti["reason"]
    assert "no key 'missing'" in Path(ti["log_path"]).read_text()


def test_next_wakeup_is_the_next_fire_time(make, write_flow):
    empty_flow(write_flow, start="2024-04-01")
    h = make(utc(2024, 4, 1, 0, 29, 59))
    assert h.tick() == utc(2024, 4, 1, 0, 30)
    assert h.runs("f") == []
    h.at(utc(2024, 4, 1, 0, 30))
    assert h.logical_dates("f") == ["2024-04-01T00:30:00+00:00"]


RECOVERED_FLOW = """
from cronflow import Flow, Shell
with Flow("lost", defaults={"retry_delay": 0}):
    Shell("t", "true", retries=1)
"""


def start_unrecorded_try(
    harness: Harness, command: str, before: Callable[[Path, str], None] | None = None
) -> tuple[int, Path, int]:
    """What a daemon that crashed between starting a try and recording it leaves behind: the
    try's supervised process (started by the executor as the daemon would), a scheduled TI.
    `before(log_path, marker)` runs just before the process starts."""
    from cronflow import control
    from cronflow.executor import Attempt
    from cronflow.logs import attempt_log_path

    run_id = control.trigger(harness.store, harness.scheduler.catalog.get("lost"), utc(2024, 1, 1))
    harness.store.update_ti(run_id, "t", state=TaskState.SCHEDULED)
    run = harness.store.run(run_id)
    log_path = attempt_log_path(harness.settings.logs_dir, "lost", "t", run["logical_date"], 1)
    attempt = Attempt(
        run_id,
        "t",
        1,
        "default",
        ["/bin/sh"],
        {},
        None,
        log_path,
        None,
        harness.scheduler.marker(run_id, "t", 1),
        script=command,
    )
    if before is not None:
        before(log_path, attempt.marker)
    pid = LocalExecutor(1).start(attempt)  # this executor is never asked again: a dead daemon
    # As a try started a while before a crash: its supervisor has set its trap (a SIGTERM in
    # its first milliseconds, before that, would end it with no record to adopt).
    wait_for(lambda: _catches(pid, signal.SIGTERM), what="the supervisor to set its trap")
    return run_id, log_path, pid


def _catches(pid: int, sig: signal.Signals) -> bool:
    """Whether process `pid` has a handler for `sig` (SigCgt in /proc/PID/status)."""
    status = Path(f"/proc/{pid}/status").read_text()
    caught = next(line for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(caught.split()[1], 16) & (1 << (sig - 1)))


def test_recovery_adopts_a_try_started_but_not_yet_recorded(make, write_flow, tmp_path):
    """A crash between starting a process and recording it: the restarted daemon finds the
    try by its marker, records it as running and tracks it to its end, without killing it."""
    write_flow("lost", RECOVERED_FLOW)
    gate = tmp_path / "gate"
    run_id, log_path, pid = start_unrecorded_try(
        make(utc(2024, 1, 1)),
        f"while [ ! -e {gate} ]; do sleep 0.05; done; echo ran once",
    )
    restarted = make(utc(2024, 1, 1))
    assert recover(restarted.scheduler, utc(2024, 1, 1)) == 1
    ti = restarted.store.ti(run_id, "t")
    assert (ti["state"], ti["try_number"], ti["pid"]) == ("running", 1, pid)
    restarted.tick()
    assert is_alive(pid)  # adopted, not killed
    gate.touch()
    restarted.settle()
    ti = restarted.store.ti(run_id, "t")
    assert (ti["state"], ti["try_number"], ti["exit_code"]) == ("success", 1, 0)
    assert log_path.read_text().count("ran once") == 1
    assert not log_path.with_suffix(".status").exists()  # settled: its record is removed
    assert not log_path.with_suffix(".cmd").exists()


def test_recovery_adopts_the_supervisor_not_a_copy_of_it_forked_before_exec(make, write_flow):
    """The `sh` supervisor forks its task, and until that fork execs it shows the supervisor's
    very command line and marker. A daemon that crashed then must not adopt the copy: it would
    take the task's end for the try's and find no exit record yet (lost). The supervisor is
    the one that leads the try's session."""
    from cronflow.executor import MARKER_VAR

    write_flow("lost", RECOVERED_FLOW)
    copies: list[int] = []

    def start_a_copy(log_path: Path, marker: str) -> None:  # first: a lower pid, seen first
        argv = supervisor.supervised(["/bin/sleep", "60"], log_path, 0o022)
        copies.append(os.posix_spawn(argv[0], argv, {**os.environ, MARKER_VAR: marker}))

    try:
        run_id, _, pid = start_unrecorded_try(make(utc(2024, 1, 1)), "sleep 60", start_a_copy)
        restarted = make(utc(2024, 1, 1))
        assert recover(restarted.scheduler, utc(2024, 1, 1)) == 1
        assert restarted.store.ti(run_id, "t")["pid"] == pid != copies[0]
    finally:
        for copy in copies:
            os.kill(copy, signal.SIGKILL)
            os.waitpid(copy, 0)
        with contextlib.suppress(NameError, ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


class Crash(BaseException):
    """The daemon dying where it is raised: its open transaction is never committed."""


def crash_at_first_start_record(harness: Harness) -> None:
    """Make the harness's daemon die just after it started a process, before the tick that
    started it records the start (the window a kill -9 can hit in any tick that starts one)."""

    def crash(start: object) -> None:
        raise Crash

    harness.scheduler._record_start = crash  # type: ignore[method-assign]


def test_a_crash_before_a_start_is_recorded_leaves_the_end_and_the_decision_that_started_it(
    make, write_flow, tmp_path
):
    """A tick records an end and starts what it made ready. What it decided (the upstream's
    end, the downstream TI scheduled) is committed before the process starts, so a crash
    before the start is recorded leaves a scheduled TI whose process the restarted daemon
    adopts: the running task is neither killed as a stray nor run again."""
    gate = tmp_path / "gate"
    write_flow(
        "lost",
        f"""
        from cronflow import Flow, Shell
        with Flow("lost"):
            Shell("t", "true") >> Shell(
                "next", "while [ ! -e {gate} ]; do sleep 0.05; done; echo ran"
            )
        """,
    )
    crashed = make(utc(2024, 1, 1))
    run_id = control.trigger(crashed.store, crashed.scheduler.catalog.get("lost"), utc(2024, 1, 1))
    crashed.tick()  # t starts
    wait_for(lambda: _ended(crashed), what="t to end")
    crash_at_first_start_record(crashed)
    with pytest.raises(Crash):
        crashed.tick()  # t's end recorded, next made ready and started: the crash
    assert (crashed.store.ti(run_id, "t")["state"], crashed.store.ti(run_id, "next")["state"]) == (
        "success",
        "scheduled",
    )
    restarted = restart_adopting_the_one_started(crashed, make(utc(2024, 1, 1)))
    assert restarted.store.ti(run_id, "next")["state"] == "running"
    gate.touch()
    restarted.settle()
    tis = {ti["task_id"]: ti for ti in restarted.store.tis_of_runs([run_id])}
    assert [(tis[t]["state"], tis[t]["try_number"]) for t in ("t", "next")] == [
        ("success", 1),
        ("success", 1),
    ]
    assert Path(tis["next"]["log_path"]).read_text().count("ran") == 1


def test_a_crash_in_a_fire_tick_leaves_the_run_whose_task_it_started(make, write_flow, tmp_path):
    """At a fire time one tick creates the run and starts its first task. The run is committed
    before the process starts: after a crash before the start is recorded, the restarted daemon
    adopts the task in that run rather than killing it and starting it again in a new one."""
    gate = tmp_path / "gate"
    write_flow(
        "hourly",
        f"""
        from cronflow import Flow, Shell
        with Flow("hourly", schedule="0 * * * *", start_date="2024-01-01", timezone="UTC"):
            Shell("t", "while [ ! -e {gate} ]; do sleep 0.05; done; echo ran")
        """,
    )
    crashed = make(utc(2023, 12, 31, 23, 59))
    crashed.tick()
    assert not crashed.runs("hourly")
    crash_at_first_start_record(crashed)
    with pytest.raises(Crash):
        crashed.at(utc(2024, 1, 1))  # the run of 00:00 created, its task started: the crash
    [run] = crashed.runs("hourly")
    assert crashed.store.ti(run["run_id"], "t")["state"] == "scheduled"
    restarted = restart_adopting_the_one_started(crashed, make(utc(2024, 1, 1)))
    gate.touch()
    restarted.settle()
    [run] = restarted.runs("hourly")  # the same one run: none created again
    ti = restarted.store.ti(run["run_id"], "t")
    assert (ti["state"], ti["try_number"]) == ("success", 1)
    assert Path(ti["log_path"]).read_text().count("ran") == 1


def restart_adopting_the_one_started(crashed: Harness, restarted: Harness) -> Harness:
    """The restarted daemon's recovery, and its first tick, after `crashed` died having started
    one process: that process is adopted, not killed as a stray."""
    [attempt] = crashed.scheduler.executor.running()
    pid = crashed.scheduler.executor._running[attempt.key].process.pid
    # As a process started a while before a crash: past its exec (whose first microseconds
    # show no environment, so no marker) and its supervisor's trap.
    wait_for(lambda: _catches(pid, signal.SIGTERM), what="the supervisor to set its trap")
    assert recover(restarted.scheduler, restarted.clock.now()) == 1
    restarted.tick()
    assert is_alive(pid)
    return restarted


def _ended(harness: Harness) -> bool:
    """Whether the one attempt the harness's executor runs has ended (its supervisor is gone,
    not yet reaped)."""
    [attempt] = harness.scheduler.executor.running()
    return not is_alive(harness.scheduler.executor._running[attempt.key].process.pid)


def test_an_adopted_try_times_out_counted_from_its_real_start(make, write_flow, tmp_path):
    write_flow(
        "lost",
        """
        from cronflow import Flow, Shell
        with Flow("lost"):
            Shell("t", "true", timeout=600)
    """,
    )
    first = make(utc(2024, 1, 1))
    run_id, log_path, pid = start_unrecorded_try(first, "sleep 60")
    first.store.update_ti(  # recorded as running since 00:00 by the daemon that crashed
        run_id,
        "t",
        state=TaskState.RUNNING,
        try_number=1,
        log_path=str(log_path),
        pid=pid,
        start_at="2024-01-01T00:00:00+00:00",
    )
    restarted = make(utc(2024, 1, 1, 0, 15))  # back 15 minutes later: 600 s are over
    assert recover(restarted.scheduler, utc(2024, 1, 1, 0, 15)) == 1
    restarted.settle()
    ti = restarted.store.ti(run_id, "t")
    assert (ti["state"], ti["reason"]) == ("failed", "timed out after 600s")


@pytest.mark.parametrize(
    ("command", "state", "exit_code", "reason"),
    [("true", "success", 0, None), ("exit 3", "up_for_retry", 3, "exit code 3")],
)
def test_recovery_settles_an_unrecorded_try_that_ended_from_its_exit_record(
    make, write_flow, command, state, exit_code, reason
):
    write_flow("lost", RECOVERED_FLOW)
    run_id, log_path, _ = start_unrecorded_try(make(utc(2024, 1, 1)), command)
    record = log_path.with_suffix(".status")
    wait_for(lambda: record.exists() and record.read_text(), what="the exit record")
    restarted = make(utc(2024, 1, 1))
    assert recover(restarted.scheduler, utc(2024, 1, 1)) == 1
    restarted.scheduler.reap()  # settles it (a tick would also start the retry)
    ti = restarted.store.ti(run_id, "t")
    assert (ti["state"], ti["try_number"], ti["exit_code"], ti["reason"]) == (
        state,
        1,
        exit_code,
        reason,
    )


def test_recovery_fails_a_try_with_no_process_and_no_exit_record_as_lost(make, write_flow):
    write_flow("lost", RECOVERED_FLOW)
    first = make(utc(2024, 1, 1))
    from cronflow import control

    run_id = control.trigger(first.store, first.scheduler.catalog.get("lost"), utc(2024, 1, 1))
    log_path = first.settings.logs_dir / "lost-t-try-1.log"
    first.store.update_ti(
        run_id, "t", state=TaskState.RUNNING, try_number=1, log_path=str(log_path), pid=None
    )
    restarted = make(utc(2024, 1, 1))
    assert recover(restarted.scheduler, utc(2024, 1, 1)) == 1
    restarted.scheduler.reap()
    ti = restarted.store.ti(run_id, "t")
    lost = "lost: the daemon stopped and the task left no exit status"
    assert (ti["state"], ti["try_number"], ti["reason"], ti["exit_code"]) == (
        "up_for_retry",
        1,
        lost,
        None,
    )
    assert "try 1 ended" in log_path.read_text() and lost in log_path.read_text()


def test_the_planner_records_each_flows_next_fire_for_cronflow_list(make, write_flow):
    from cronflow.overview import flow_rows
    from cronflow.timeparse import iso

    empty_flow(write_flow, start="2024-04-01")  # daily at 02:30 Paris = 00:30 UTC in April
    h = make(utc(2024, 4, 1))
    h.tick()
    row = h.store.flow("f")
    assert row["schedule_text"] == "daily at 02:30 Europe/Paris"  # stored by the loader
    assert (row["next_fire_from"], row["next_fire_at"]) == (
        iso(utc(2024, 4, 1)),
        iso(utc(2024, 4, 1, 0, 30)),
    )
    h.at(utc(2024, 4, 1, 0, 30))  # the run is created; the next fire is tomorrow's
    assert h.store.flow("f")["next_fire_at"] == iso(utc(2024, 4, 2, 0, 30))

    # `list` takes the stored fire while it holds: from the moment it was recorded until it
    # passes. A stored value that cannot come from the schedule shows which one is used.
    timing = h.scheduler.catalog.flows["f"].timing
    h.store.record_next_fires({"f": (timing, utc(2024, 4, 1, 1), utc(2024, 4, 1, 1, 7))})

    def listed(now: datetime) -> str:
        rows = flow_rows(h.store, h.scheduler.catalog, now)
        return next(r["next_fire_at"] for r in rows if r["flow_id"] == "f")

    assert listed(utc(2024, 4, 1, 1, 5)) == iso(utc(2024, 4, 1, 1, 7))
    assert listed(utc(2024, 4, 1, 0, 59)) == iso(utc(2024, 4, 2, 0, 30))  # before: worked out
    assert listed(utc(2024, 4, 1, 1, 7)) == iso(utc(2024, 4, 2, 0, 30))  # passed: worked out

    # A reloaded file keeps the stored fire while its timing holds, and drops it when not.
    empty_flow(write_flow, start="2024-04-01", mar=3)
    h.sync()
    assert h.store.flow("f")["next_fire_at"] == iso(utc(2024, 4, 1, 1, 7))
    empty_flow(write_flow, start="2024-04-01", cron="45 3 * * *")
    h.sync()
    row = h.store.flow("f")
    assert (row["next_fire_at"], row["schedule_text"]) == (None, "daily at 03:45 Europe/Paris")
    assert listed(utc(2024, 4, 1, 1, 5)) == iso(utc(2024, 4, 1, 1, 45))
    h.at(utc(2024, 4, 1, 1, 5))
    assert h.store.flow("f")["next_fire_at"] == iso(utc(2024, 4, 1, 1, 45))

    # A paused flow's next fire time is kept too (list shows it), and one past its end date
    # is recorded as none, so that `list` need not work either out.
    h.store.set_paused("f", True)
    h.at(utc(2024, 4, 1, 1, 46))
    assert h.store.flow("f")["next_fire_at"] == iso(utc(2024, 4, 2, 1, 45))
    assert h.runs("f")[-1]["logical_date"] == iso(utc(2024, 4, 1, 0, 30))  # paused: no run
    empty_flow(write_flow, start="2024-04-01", end="2024-04-02", cron="45 3 * * *")
    h.sync()
    h.at(utc(2024, 4, 3))
    row = h.store.flow("f")
    assert (row["next_fire_from"], row["next_fire_at"]) == (iso(utc(2024, 4, 3)), None)
    assert listed(utc(2024, 4, 5)) is None


def test_a_run_ending_makes_the_scheduler_look_again_at_once(make, write_flow):
    # A catch-up held to one run at a time: when a run ends, the next one is due now, not at the
    # idle wake-up 5 s later (which made such a catch-up create one run every 5 s).
    write_flow(
        "one_by_one",
        """
        from cronflow import Flow, Shell
        with Flow("one_by_one", schedule="0 3 * * *", timezone="UTC", start_date="2024-03-01",
                  catchup=True, max_active_runs=1):
            Shell("t", "true")
        """,
    )
    h = make(utc(2024, 3, 3, 12))
    seen = []

    def second_run_created() -> bool:
        before = sum(r["state"] == "success" for r in h.runs("one_by_one"))
        wake = h.tick()
        after = sum(r["state"] == "success" for r in h.runs("one_by_one"))
        if after > before:
            seen.append(wake)
        return len(h.runs("one_by_one")) >= 2

    wait_for(second_run_created, what="the first run to end and the second to be created")
    assert seen == [h.clock.now()]


# --- starting ready tasks early (issue 18 §3) -----------------------------------------------
TWO_IN_A_POOL = """
from cronflow import Flow, Shell
with Flow("two"):
    Shell("a", {a!r}, pool="station", priority=2)
    Shell("b", "true", pool="station", priority=1)
"""


def two_in_a_pool(make, write_flow, a: str = "true") -> Harness:
    """`a` running, `b` ready but held by the 1-slot pool."""
    from cronflow import control

    write_flow("two", TWO_IN_A_POOL.format(a=a))
    h = make(utc(2024, 1, 1))
    control.trigger(h.store, h.scheduler.catalog.get("two"), utc(2024, 1, 1))
    h.tick()
    assert (h.ti("two", "a")["state"], h.ti("two", "b")["state"]) == ("running", "scheduled")
    return h


def wait_exited(pid: int | None) -> None:
    """Until a task's process has exited, without reaping it (the next tick does)."""
    assert pid is not None
    wait_for(lambda: not is_alive(pid), what=f"process {pid} to exit")


def events(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        " ".join(r.getMessage().split()[:3:2])  # "event=... task=..."
        for r in caplog.records
        if r.getMessage().startswith(("event=task_started", "event=task_ended"))
    ]


def test_a_ready_task_starts_in_the_freed_slot_before_the_end_is_recorded(make, write_flow, caplog):
    # The next start waits for neither the end's bookkeeping nor the planning and resolving.
    h = two_in_a_pool(make, write_flow)
    wait_exited(h.ti("two", "a")["pid"])
    with caplog.at_level("INFO", logger="cronflow.scheduler"):
        h.tick()
    assert events(caplog) == ["event=task_started task=b", "event=task_ended task=a"]
    assert (h.ti("two", "a")["state"], h.ti("two", "b")["state"]) == ("success", "running")


def test_a_task_marked_by_another_connection_is_never_started_early(
    make, write_flow, settings, caplog
):
    # The cache still says b is scheduled; the store (the CLI's mark) says success. The slot
    # a frees must not go to b from that stale cache: the tick reads the store first.
    from cronflow import repair

    h = two_in_a_pool(make, write_flow)
    cli_store = Store(settings.db_path)
    flow = h.scheduler.catalog.get("two")
    repair.mark(cli_store, flow, "b", "2024-01-01", "success", False, utc(2024, 1, 1))
    cli_store.close()
    wait_exited(h.ti("two", "a")["pid"])
    with caplog.at_level("INFO", logger="cronflow.scheduler"):
        h.tick()
    assert events(caplog) == ["event=task_ended task=a"]
    b = h.ti("two", "b")
    assert (b["state"], b["try_number"]) == ("success", 0)
    assert not h.scheduler.executor.running()
    assert not list((settings.logs_dir / "two" / "b").rglob("try-*.log"))  # never begun


def test_a_replayed_task_starts_again_only_after_its_old_try_is_recorded(
    make, write_flow, settings
):
    # Replayed while running: its old try is stopped, and its end goes to that try's log
    # before the next try starts (not started early in the slot the old try frees).
    from cronflow import repair

    h = two_in_a_pool(make, write_flow, a="sleep 60")
    pid = h.ti("two", "a")["pid"]  # the replay clears it
    cli_store = Store(settings.db_path)
    flow = h.scheduler.catalog.get("two")
    repair.replay(
        cli_store,
        repair.plan_replay(cli_store, flow, "2024-01-01", task_ids=["a"]),
        utc(2024, 1, 1),
    )
    cli_store.close()
    h.tick()  # sees the replay: stops try 1, a is scheduled again but held while it is stopped
    assert h.ti("two", "a")["state"] == "scheduled"
    wait_exited(pid)
    h.tick()
    a = h.ti("two", "a")
    assert (a["state"], a["try_number"]) == ("running", 2)
    first = Path(a["log_path"]).with_name("try-1.log").read_text()
    assert "try 1 ended" in first
    assert "ended" not in Path(a["log_path"]).read_text()


def test_a_slot_freed_by_a_task_with_downstream_goes_by_priority_as_before(make, write_flow):
    # b becomes ready as a ends and outranks c, which was ready already: b gets the slot.
    from cronflow import control

    write_flow(
        "after",
        """
        from cronflow import Flow, Shell
        with Flow("after"):
            a = Shell("a", "true", pool="station", priority=3)
            a >> Shell("b", "true", pool="station", priority=5)
            Shell("c", "true", pool="station", priority=1)
        """,
    )
    h = make(utc(2024, 1, 1))
    control.trigger(h.store, h.scheduler.catalog.get("after"), utc(2024, 1, 1))
    h.tick()
    assert (h.ti("after", "a")["state"], h.ti("after", "c")["state"]) == ("running", "scheduled")
    wait_exited(h.ti("after", "a")["pid"])
    h.tick()
    assert (h.ti("after", "b")["state"], h.ti("after", "c")["state"]) == ("running", "scheduled")

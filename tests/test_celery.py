"""The Celery executor against real servers: a redis-server of our own (append-only), the
scheduler daemon in one home and `cronflow worker` processes in homes of their own, each with
its own copy of the flow files (nothing is shared through the filesystem but the test's view).

Waits are conditions with deadlines; nothing here sleeps to let time pass.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import DaemonProcess, wait_for
from servers import RedisServer

pytest.importorskip("celery")
import redis

from cronflow.store import Store

pytestmark = pytest.mark.slow

BROKER_ENV = "CRONFLOW_TEST_BROKER_URL"
SECRET = "sekrit-token-4711"
WAIT_S = 60.0


class Worker:
    def __init__(
        self, home: Path, name: str, queues: str, env: dict[str, str], concurrency: int = 2
    ) -> None:
        self.home, self.name, self.queues, self.env = home, name, queues, env
        self.concurrency = concurrency
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = home / f"worker-{name}-{time.monotonic_ns()}.out"

    def start(self, client: redis.Redis) -> Worker:
        self.log_path = self.home / f"worker-{self.name}-{time.monotonic_ns()}.out"
        argv = [sys.executable, "-m", "cronflow", "--home", str(self.home), "worker"]
        argv += [
            "--queues",
            self.queues,
            "--name",
            self.name,
            "--concurrency",
            str(self.concurrency),
        ]
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=self.env)
        wait_for(
            lambda: "ready" in self.output() or self.proc.poll() is not None,  # type: ignore[union-attr]
            WAIT_S,
            f"worker {self.name} to start",
        )
        assert self.proc.poll() is None, self.output()
        return self

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Farm:
    """A scheduler home and worker homes around one Redis."""

    def __init__(self, tmp_path: Path, redis_server: RedisServer, **celery: float | str) -> None:
        self.tmp_path = tmp_path
        self.redis = redis_server
        self.home = tmp_path / "scheduler"
        settings = {"heartbeat_timeout_s": 3, **celery}
        lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in settings.items())
        self.config = f'[celery]\nbroker_url_env = "{BROKER_ENV}"\n{lines}\n'
        self._init(self.home, 'executor = "celery"\nparallelism = 4\ngrace_period_s = 5\n')
        self.env = {**os.environ, BROKER_ENV: redis_server.url}
        self.workers: list[Worker] = []
        self.daemons: list[DaemonProcess] = []
        self.client = redis.Redis.from_url(redis_server.url)

    def _init(self, home: Path, top: str) -> None:
        (home / "flows").mkdir(parents=True)
        (home / "cronflow.toml").write_text(top + self.config)

    def write_flow(self, name: str, source: str, *, homes: list[Path] | None = None) -> None:
        """The same flow file in the scheduler's home and every worker's (or only `homes`)."""
        for home in homes or [self.home, *(w.home for w in self.workers)]:
            (home / "flows" / f"{name}.py").write_text(textwrap.dedent(source))

    def worker(self, name: str, queues: str, concurrency: int = 2) -> Worker:
        home = self.tmp_path / f"worker-{name}"
        self._init(home, "")
        for flow in (self.home / "flows").glob("*.py"):
            (home / "flows" / flow.name).write_text(flow.read_text())
        env = {**self.env, "CRONFLOW_VAR_token": SECRET, "WORKER_NAME": name}
        worker = Worker(home, name, queues, env, concurrency).start(self.client)
        self.workers.append(worker)
        wait_for(lambda: self.client.hget("cronflow:workers", name), WAIT_S, f"{name}'s first beat")
        return worker

    def daemon(self) -> DaemonProcess:
        saved = dict(os.environ)
        os.environ[BROKER_ENV] = self.redis.url
        try:
            process = DaemonProcess(self.home).start()
        finally:
            os.environ.clear()
            os.environ.update(saved)
        self.daemons.append(process)
        return process

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The real `cronflow` command on the scheduler's home, the broker URL in its env."""
        env = {**self.env, "CRONFLOW_HOME": str(self.home), "NO_COLOR": "1", "COLUMNS": "200"}
        argv = [sys.executable, "-m", "cronflow", *args]
        return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)

    def trigger(self, flow: str) -> int:
        result = self.cli("trigger", flow)
        assert result.returncode == 0, result.stderr
        store = self.store()
        try:
            return max(r["run_id"] for r in store.runs_of_flow(flow))
        finally:
            store.close()

    def store(self) -> Store:
        return Store(self.home / "cronflow.db")

    def ti(self, run_id: int, task_id: str) -> dict[str, Any]:
        store = self.store()
        try:
            return store.ti(run_id, task_id) or {}
        finally:
            store.close()

    def wait_state(self, run_id: int, task_id: str, *states: str) -> dict[str, Any]:
        wait_for(
            lambda: self.ti(run_id, task_id).get("state") in states,
            WAIT_S,
            f"{task_id} to be {'/'.join(states)} (daemon: {self.daemon_output()[-2000:]})",
        )
        return self.ti(run_id, task_id)

    def run_state(self, run_id: int) -> str:
        store = self.store()
        try:
            return str(store.run(run_id)["state"])
        finally:
            store.close()

    def daemon_output(self) -> str:
        return "".join(d.output() for d in self.daemons)

    def log(self, run_id: int, task_id: str) -> str:
        path = self.ti(run_id, task_id).get("log_path")
        return Path(path).read_text(errors="replace") if path and Path(path).exists() else ""

    def close(self) -> None:
        for process in self.daemons:
            process.stop()
        for worker in self.workers:
            worker.stop()
        self.client.close()


@pytest.fixture
def farm(tmp_path: Path, redis_server: RedisServer) -> Iterator[Farm]:
    farm = Farm(tmp_path, redis_server)
    yield farm
    farm.close()


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    """Where the test's tasks leave traces (pids, counts, gates)."""
    path = tmp_path / "spool"
    path.mkdir()
    return path


PIPELINE = """\
    import os
    from cronflow import Flow, Python, Shell

    def produce(context):
        print("token is", os.environ["CRONFLOW_VAR_token"], flush=True)
        return {"rows": 42, "worker": os.environ["WORKER_NAME"], "home": os.environ["CRONFLOW_HOME"]}

    def consume(context):
        value = context["xcom"].pull("a")
        print("got", value["rows"], "from", value["worker"], flush=True)
        return {"rows": value["rows"] + 1, "worker": os.environ["WORKER_NAME"]}

    with Flow("pipeline", schedule=None):
        a = Python("a", produce, queue="A")
        b = Python("b", consume, queue="B")
        c = Shell("c", "echo local got {{ xcom.b.rows }} on $CRONFLOW_HOME")
        a >> b >> c
"""


def test_a_flow_over_two_workers_passes_xcom_and_masks_on_the_worker(farm: Farm) -> None:
    farm.write_flow("pipeline", PIPELINE)
    farm.worker("wa", "A")
    farm.worker("wb", "B")
    farm.daemon()
    run_id = farm.trigger("pipeline")
    wait_for(lambda: farm.run_state(run_id) in ("success", "failed"), WAIT_S, "the run to end")
    assert farm.run_state(run_id) == "success", farm.daemon_output()
    store = farm.store()
    a_value = store.pull_xcom(run_id, "a")
    b_value = store.pull_xcom(run_id, "b")
    store.close()
    # a ran on wa, in a scratch home of the worker's, not in the scheduler's home
    assert a_value["worker"] == "wa"
    assert a_value["home"].startswith(str(farm.tmp_path / "worker-wa"))
    assert b_value == {"rows": 43, "worker": "wb"}
    # the logs came home, masked on the worker
    a_log = farm.log(run_id, "a")
    assert "token is ***" in a_log
    assert SECRET not in a_log
    assert "running on worker wa" in a_log
    assert "got 42 from wa" in farm.log(run_id, "b")
    assert f"local got 43 on {farm.home}" in farm.log(run_id, "c")
    assert farm.ti(run_id, "a")["host"].startswith("wa")
    assert farm.ti(run_id, "c")["host"] == os.uname().nodename


def _pid_in(path: Path) -> int:
    wait_for(lambda: path.exists() and path.read_text().strip(), WAIT_S, f"{path} to be written")
    return int(path.read_text().strip())


def _dead(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split()[2] == "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone, even while being read
        return True


def test_retry_timeout_and_mark_stop_remote_tasks(farm: Farm, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    farm.write_flow(
        "rules",
        f"""\
        from cronflow import Flow, Shell

        with Flow("rules", schedule=None, queue="A"):
            Shell("flaky", "[ -e {spool}/flag ] || {{ touch {spool}/flag; echo first try fails; exit 3; }}",
                  retries=1, retry_delay=0)
            Shell("slow", "echo $$ > {spool}/slow.pid; sleep 300", timeout=2)
            Shell("long", "echo $$ > {spool}/long.pid; echo long started; sleep 300", queue="B")
        """,
    )
    farm.worker("wa", "A")
    farm.worker("wb", "B")
    farm.daemon()
    run_id = farm.trigger("rules")

    flaky = farm.wait_state(run_id, "flaky", "success")
    assert flaky["try_number"] == 2
    first = Path(flaky["log_path"]).with_name("try-1.log").read_text()
    assert "first try fails" in first
    assert "exit code 3: first try fails; retry at" in first

    slow = farm.wait_state(run_id, "slow", "failed")
    assert slow["reason"] == "timed out after 2s"
    assert _dead(_pid_in(spool / "slow.pid"))

    long_pid = _pid_in(spool / "long.pid")
    # its output reaches the try's log on the scheduler's host while it runs (logs -f)
    wait_for(lambda: "long started" in farm.log(run_id, "long"), WAIT_S, "the live log")
    follow = subprocess.Popen(
        [sys.executable, "-m", "cronflow", "--home", str(farm.home), "logs", "rules.long", "-f"],
        stdout=subprocess.PIPE,
        text=True,
    )
    logical = farm.store().run(run_id)["logical_date"]
    marked = farm.cli("mark", "rules.long", "--date", logical, "--state", "failed")
    assert marked.returncode == 0, marked.stderr
    wait_for(lambda: _dead(long_pid), 30, "the marked remote task's process to be killed")
    assert farm.wait_state(run_id, "long", "failed")["try_number"] == 1
    wait_for(lambda: "stopped: its state was changed" in farm.log(run_id, "long"), 30, "the note")
    followed, _ = follow.communicate(timeout=WAIT_S)  # -f ends with the try
    assert "long started" in followed and "stopped: its state was changed" in followed


def test_a_queue_no_live_worker_serves_waits_saying_so(farm: Farm) -> None:
    farm.write_flow(
        "lonely",
        """\
        from cronflow import Flow, Shell

        with Flow("lonely", schedule=None):
            Shell("here", "echo on the scheduler")
            Shell("there", "echo on a worker of B", queue="B")
        """,
    )
    farm.daemon()
    status = farm.cli("status")
    assert (
        f"broker: {farm.redis.url.rsplit('/', 1)[0]}/0 reachable, append-only on" in status.stdout
    )
    assert "workers: none" in status.stdout
    farm.worker("wa", "A")
    status = farm.cli("status")
    assert "worker wa on " in status.stdout and "live, queues A, 0/2 busy" in status.stdout
    doctor = farm.cli("doctor")
    assert "live: wa (A)" in doctor.stdout, doctor.stdout
    run_id = farm.trigger("lonely")
    farm.wait_state(run_id, "here", "success")
    wait_for(
        lambda: (
            farm.ti(run_id, "there").get("reason") == "waiting: no live worker serves queue 'B'"
        ),
        WAIT_S,
        "the reason of the task nobody serves",
    )
    held = farm.ti(run_id, "there")
    assert held["state"] == "scheduled" and held["queued_at"]  # since when it has waited
    assert farm.client.llen("cronflow:B") == 0  # nothing was published
    # status, top and tasks say which queue it waits on, how many wait there, since when
    unserved = json.loads(farm.cli("status", "--json").stdout)["farm"]["unserved_queues"]
    assert [(q["queue"], q["tasks"], q["waiting_since"]) for q in unserved] == [
        ("B", 1, held["queued_at"])
    ]
    assert unserved[0]["waited_s"] >= 0
    line = f"queue 'B': no live worker serves it, 1 task waits since {held['queued_at']} ("
    assert line in farm.cli("status").stdout
    top = farm.cli("top", "--once")
    assert line in top.stdout and "worker wa on " in top.stdout, top.stdout + top.stderr
    assert "farm" in json.loads(farm.cli("top", "--json").stdout)
    doctor = farm.cli("doctor")
    assert line in doctor.stdout and "warn" in doctor.stdout, doctor.stdout
    rows = json.loads(farm.cli("tasks", "lonely", "--json").stdout)
    assert {r["task"]: r["queue"] for r in rows} == {"here": None, "there": "B"}
    table = farm.cli("tasks", "lonely").stdout.splitlines()
    header = next(t for t in table if t.lstrip().startswith("task"))
    assert header.split()[6] == "queue", header
    assert next(t for t in table if t.lstrip().startswith("there")).split()[6] == "B", table
    farm.worker("wb", "B")
    there = farm.wait_state(run_id, "there", "success")
    assert there["try_number"] == 1 and there["reason"] is None
    assert "echo on a worker of B" not in farm.log(run_id, "there")
    assert "on a worker of B" in farm.log(run_id, "there")
    status = json.loads(farm.cli("status", "--json").stdout)
    assert status["farm"]["unserved_queues"] == []


def test_a_flow_file_changed_on_one_worker_only_fails_the_try(farm: Farm) -> None:
    farm.write_flow(
        "code",
        """\
        from cronflow import Flow, Shell

        with Flow("code", schedule=None, queue="A"):
            Shell("t", "echo same code")
        """,
    )
    worker = farm.worker("wa", "A")
    (worker.home / "flows" / "code.py").write_text(
        (worker.home / "flows" / "code.py").read_text() + "# edited on the worker\n"
    )
    farm.daemon()
    run_id = farm.trigger("code")
    t = farm.wait_state(run_id, "t", "failed")
    assert "the flow file code.py on worker wa differs from the scheduler's" in t["reason"]
    assert "same code" not in farm.log(run_id, "t").replace("echo same code", "")


def _published(farm: Farm, task_id: str, try_number: int) -> str:
    """The id the scheduler gave one attempt (from its log)."""
    pattern = re.compile(
        rf"event=attempt_published attempt=(\w+) queue=\w+ run=\d+ task={task_id} try={try_number}\b"
    )
    found = wait_for(lambda: pattern.search(farm.daemon_output()), WAIT_S, "the publication")
    return found.group(1)  # type: ignore[union-attr]


def test_a_worker_killed_mid_task_loses_the_attempt_once(farm: Farm, spool: Path) -> None:
    farm.write_flow(
        "victim",
        f"""\
        from cronflow import Flow, Shell

        with Flow("victim", schedule=None):
            Shell("job", "echo $$ >> {spool}/pids; [ -e {spool}/flag ] && exit 0; touch {spool}/flag; sleep 300",
                  queue="A", retries=1, retry_delay=0)
        """,
    )
    worker = farm.worker("wa", "A")
    farm.daemon()
    run_id = farm.trigger("victim")
    orphan = _pid_in(spool / "pids")
    first_id = _published(farm, "job", 1)
    assert worker.proc is not None
    worker.proc.kill()  # kill -9: its task goes on, in a session of its own
    worker.proc.wait()
    assert not _dead(orphan)
    # no heartbeat for heartbeat_timeout_s: try 1 is a counted failure, retried once a worker
    # serves A again
    job = farm.wait_state(run_id, "job", "scheduled", "up_for_retry")
    try_1 = Path(job["log_path"] or "").with_name("try-1.log")
    wait_for(
        lambda: farm.ti(run_id, "job").get("reason") == "waiting: no live worker serves queue 'A'",
        WAIT_S,
        "the wait",
    )
    assert (
        "try 1 ended" in try_1.read_text()
        and "lost: worker wa stopped reporting at" in try_1.read_text()
    )
    assert not _dead(orphan)  # nothing on this host kills it but the worker's next start
    worker.start(farm.client)
    wait_for(lambda: _dead(orphan), WAIT_S, "the restarted worker to kill its dead self's task")
    job = farm.wait_state(run_id, "job", "success")
    assert job["try_number"] == 2
    # the first message, delivered again, is dropped: the attempt is claimed
    from cronflow.celery.broker import make_app, publish

    publish(make_app(farm.redis.url, "cronflow"), "A", {"attempt_id": first_id})
    wait_for(
        lambda: f"event=attempt_dropped attempt={first_id}" in worker.output(), WAIT_S, "the drop"
    )
    assert len((spool / "pids").read_text().split()) == 2  # the task started exactly twice


def test_an_attempt_nobody_takes_is_dispatched_again_without_counting(
    tmp_path: Path, redis_server: RedisServer, spool: Path
) -> None:
    farm = Farm(tmp_path, redis_server, queued_timeout_s=2)
    try:
        farm.write_flow(
            "busy",
            f"""\
            from cronflow import Flow, Shell

            with Flow("busy", schedule=None, queue="A"):
                Shell("first", "while [ ! -e {spool}/gate ]; do sleep 0.1; done")
                Shell("second", "echo second ran >> {spool}/second")
            """,
        )
        farm.worker("wa", "A", concurrency=1)
        farm.daemon()
        run_id = farm.trigger("busy")
        wait_for(
            lambda: "event=task_interrupted flow=busy task=second" in farm.daemon_output(),
            WAIT_S,
            "the queued attempt to be given back",
        )
        (spool / "gate").touch()
        second = farm.wait_state(run_id, "second", "success")
        assert farm.wait_state(run_id, "first", "success")["try_number"] == 1
        assert (spool / "second").read_text() == "second ran\n"  # once
        assert second["max_tries"] > 1  # each try given back was not counted
        logs = Path(second["log_path"]).parent
        assert (
            "not taken from queue 'A' within 2s; dispatched again"
            in (logs / "try-1.log").read_text()
        )
    finally:
        farm.close()


def test_redis_restarted_while_tasks_wait_and_run_each_ends_once(
    farm: Farm, redis_server: RedisServer, spool: Path
) -> None:
    tasks = ["t1", "t2", "t3", "t4"]
    body = "\n".join(
        f'    Shell("{t}", "echo {t} >> {spool}/ran; while [ ! -e {spool}/gate ]; do sleep 0.1; done")'
        for t in tasks
    )
    farm.write_flow(
        "outage",
        'from cronflow import Flow, Shell\n\nwith Flow("outage", schedule=None, queue="A"):\n'
        + body
        + "\n",
    )
    farm.worker("wa", "A", concurrency=2)
    daemon = farm.daemon()
    run_id = farm.trigger("outage")
    wait_for(lambda: len(_lines(spool / "ran")) == 2, WAIT_S, "two tasks to run")
    wait_for(lambda: farm.client.llen("cronflow:A") == 2, WAIT_S, "two messages to wait")
    farm.client.close()
    redis_server.stop()
    wait_for(lambda: "event=broker_unreachable" in daemon.output(), WAIT_S, "the daemon to notice")
    status = farm.cli("status")
    assert status.returncode == 0 and "UNREACHABLE" in status.stdout  # the daemon runs on
    redis_server.start()
    (spool / "gate").touch()
    wait_for(lambda: farm.run_state(run_id) in ("success", "failed"), 90, "the run to end")
    assert farm.run_state(run_id) == "success", farm.daemon_output()
    assert sorted(_lines(spool / "ran")) == tasks  # each ran exactly once
    for t in tasks:
        assert farm.ti(run_id, t)["try_number"] == 1
    assert daemon.proc is not None and daemon.proc.poll() is None


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_a_reschedule_sensor_pokes_on_a_worker(farm: Farm, spool: Path) -> None:
    farm.write_flow(
        "sensing",
        f"""\
        from cronflow import FileSensor, Flow

        with Flow("sensing", schedule=None):
            FileSensor("arrival", "{spool}/data.csv", queue="A", mode="reschedule", poke_interval=1)
        """,
    )
    farm.worker("wa", "A")
    farm.daemon()
    run_id = farm.trigger("sensing")
    farm.wait_state(run_id, "arrival", "up_for_reschedule")
    assert "data.csv" in farm.ti(run_id, "arrival")["reason"]  # the worker's words
    (spool / "data.csv").write_text("x\n")
    arrival = farm.wait_state(run_id, "arrival", "success")
    assert arrival["try_number"] == 1  # pokes are not tries
    assert farm.log(run_id, "arrival").count("running on worker wa") >= 2


def test_a_daemon_killed_while_a_remote_task_runs_adopts_it(farm: Farm, spool: Path) -> None:
    farm.write_flow(
        "adopted",
        f"""\
        from cronflow import Flow, Shell

        with Flow("adopted", schedule=None):
            Shell("job", "echo before; while [ ! -e {spool}/gate ]; do sleep 0.1; done; echo after >> {spool}/ran; echo after",
                  queue="A")
        """,
    )
    farm.worker("wa", "A")
    daemon = farm.daemon()
    run_id = farm.trigger("adopted")
    wait_for(lambda: "before" in farm.log(run_id, "job"), WAIT_S, "the task to start")
    assert daemon.proc is not None
    daemon.proc.kill()  # a crash: the task goes on, on its worker
    daemon.proc.wait()
    (spool / "gate").touch()
    wait_for(lambda: (spool / "ran").exists(), WAIT_S, "the task to end without a daemon")
    farm.daemon()
    job = farm.wait_state(run_id, "job", "success")
    assert job["try_number"] == 1
    assert (spool / "ran").read_text() == "after\n"
    log = farm.log(run_id, "job")
    assert log.index("before") < log.index("after") < log.index("try 1 ended")
    assert "event=attempt_adopted" in farm.daemon_output()


def test_a_daemon_stop_stops_remote_tasks_and_gives_their_tries_back(
    farm: Farm, spool: Path
) -> None:
    farm.write_flow(
        "stopping",
        f"""\
        from cronflow import Flow, Shell

        with Flow("stopping", schedule=None):
            Shell("job", "echo $$ > {spool}/pid; sleep 300", queue="A")
        """,
    )
    farm.worker("wa", "A")
    daemon = farm.daemon()
    run_id = farm.trigger("stopping")
    pid = _pid_in(spool / "pid")
    daemon.signal(signal.SIGTERM)  # grace_period_s = 5, then its tasks are stopped
    assert daemon.wait(WAIT_S) == 0, daemon.output()
    assert _dead(pid)
    job = farm.ti(run_id, "job")
    assert job["state"] == "up_for_retry"
    assert job["max_tries"] == 2  # given back: the next start runs it again, uncounted
    assert "interrupted by the daemon's shutdown" in job["reason"]


def test_a_worker_refuses_a_try_from_another_cronflow_version(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """The worker's side alone, against the real Redis: the message a scheduler of another
    version sent is claimed, refused with that reason, and nothing runs."""
    from cronflow.celery.broker import Keys, connect
    from cronflow.celery.runner import WorkerIdentity, file_digest, run_message
    from cronflow.config import load_settings

    home = tmp_path / "worker"
    (home / "flows").mkdir(parents=True)
    flow_file = home / "flows" / "f.py"
    flow_file.write_text(f"# would run: touch {tmp_path}/ran\n")
    client = connect(redis_server.url)
    worker = WorkerIdentity("w1", "inc1", "host1", load_settings(home), client, Keys("cronflow"))
    worker.make_template()
    payload = {
        "attempt_id": "a1",
        "version": "0.0.0-other",
        "flow_id": "f",
        "task_id": "t",
        "try_number": 1,
        "flow_file": "f.py",
        "flow_sha256": file_digest(flow_file),
        "spec": {"timezone": "UTC"},
    }
    run_message(worker, payload)
    result = json.loads(client.get("cronflow:attempt:a1:result"))
    assert result["exit_code"] == 1
    assert result["reason"].startswith("worker w1 runs cronflow ")
    assert "the scheduler 0.0.0-other: install the same version on both" in result["reason"]
    log = b"".join(client.lrange("cronflow:attempt:a1:log", 0, -1)).decode()
    assert "the scheduler 0.0.0-other" in log
    assert client.get("cronflow:attempt:a1:claim") == b"w1|inc1|host1"
    assert not (tmp_path / "ran").exists()
    client.close()


MAPPED = """\
    from cronflow import Flow, Python, Shell

    def listing(context):
        return ["a.csv", "b.csv", "c.csv"]

    def load(path, context):
        return path.upper()

    with Flow("mapped", schedule=None):
        each = Python("load", load, queue="A").map(over=Python("listing", listing), arg="path")
        each >> Shell("report", "echo {{ xcom.load | join(',') }}")
"""


def test_mapped_instances_run_on_a_worker_each_with_its_item(farm: Farm) -> None:
    farm.write_flow("mapped", MAPPED)
    farm.worker("wa", "A")
    farm.daemon()
    run_id = farm.trigger("mapped")
    wait_for(lambda: farm.run_state(run_id) in ("success", "failed"), WAIT_S, "the run to end")
    assert farm.run_state(run_id) == "success", farm.daemon_output()
    assert farm.ti(run_id, "load[2]")["host"].startswith("wa")
    assert "A.CSV,B.CSV,C.CSV" in farm.log(run_id, "report")

"""Kill the daemon with SIGKILL at random instants while chains of short tasks run, restart it
each time, and check what the crash rules promise: every try started once, none lost, every
task instance finished. The evidence behind "a daemon crash never changes what a task did" at
instants no deterministic test aims at; not part of the test suite (it takes a minute or two
and its instants are random).

    .venv/bin/python bench/crash_soak.py [--kills 200] [--runs 25] [--seed 1]

Each task appends "RUN TASK TRY" to a file when it starts: a line seen twice is a try that ran
twice (a crash made the next daemon kill it as a stray and start it again). Every third task
is a Python task (started warm), and every fourth fails its first try and is retried at once. Exits 1 when any
try started twice or was lost, or when a task instance did not finish.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHAIN = """
import os, time
from cronflow import Flow, Python, Shell

def step(path):
    with open(path, "a") as out:
        out.write(" ".join(os.environ[v] for v in ("CRONFLOW_RUN_ID", "CRONFLOW_TASK_ID", "CRONFLOW_TRY_NUMBER")) + "\\n")
    time.sleep(0.03)

with Flow("chain", defaults={{"retries": 3, "retry_delay": 0}}):
    previous = None
    for i in range(12):
        if i % 3 == 2:  # a Python task, started warm by the fork server
            task = Python(f"t{{i}}", step, args=[{starts!r}])
        else:  # a shell task; every fourth fails its first try, retried at once
            fail = 'test "$CRONFLOW_TRY_NUMBER" = 1 && exit 1; ' if i % 4 == 3 else ""
            task = Shell(
                f"t{{i}}",
                'echo "$CRONFLOW_RUN_ID $CRONFLOW_TASK_ID $CRONFLOW_TRY_NUMBER" >> {starts}; '
                + fail + "sleep 0.03",
            )
        if previous is not None:
            previous >> task
        previous = task
"""


def cronflow(home: Path, *args: str) -> None:
    env = {**os.environ, "CRONFLOW_HOME": str(home)}
    subprocess.run(
        [sys.executable, "-m", "cronflow", *args], env=env, check=True, capture_output=True
    )


def daemon(home: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "CRONFLOW_HOME": str(home)}
    return subprocess.Popen(
        [sys.executable, "-m", "cronflow", "daemon"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def unfinished(db: sqlite3.Connection) -> int:
    return db.execute(
        "SELECT count(*) FROM runs WHERE state NOT IN ('success', 'failed')"
    ).fetchone()[0]


def soak(home: Path, kills: int, runs: int) -> tuple[int, dict, list, int]:
    """Kill the daemon until the runs are done (or `kills` times), then let one finish them:
    (kills made, task instances by state and by try number, tries started twice, tries lost)."""
    cronflow(home, "init")
    config = home / "cronflow.toml"
    config.write_text(config.read_text().replace("parallelism = ", "parallelism = 4  # was "))
    starts = home / "starts.txt"
    (home / "flows").mkdir(exist_ok=True)
    (home / "flows" / "chain.py").write_text(CHAIN.format(starts=str(starts)))
    cronflow(home, "list")
    for day in range(1, runs + 1):
        cronflow(home, "trigger", "chain", "--date", f"2024-01-{day:02d}")
    db = sqlite3.connect(home / "cronflow.db")
    made = 0
    while unfinished(db) and made < kills:
        process = daemon(home)
        time.sleep(random.uniform(0.35, 0.8))  # its start takes about 0.3 s
        process.send_signal(signal.SIGKILL)
        process.wait()
        made += 1
    process = daemon(home)
    deadline = time.monotonic() + 300
    while unfinished(db) and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    process.wait(120)
    seen = collections.Counter(tuple(line.split()) for line in starts.read_text().splitlines())
    twice = sorted(key for key, count in seen.items() if count > 1)
    states = dict(
        collections.Counter(row[0] for row in db.execute("SELECT state FROM task_instances"))
    )
    lost = db.execute("SELECT count(*) FROM task_instances WHERE reason LIKE 'lost%'").fetchone()[0]
    tries = db.execute("SELECT try_number, count(*) FROM task_instances GROUP BY 1").fetchall()
    return made, states | {f"try {number}": count for number, count in tries}, twice, lost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=200, help="at most this many SIGKILLs")
    parser.add_argument("--runs", type=int, default=25, help="runs of the 12-task chain")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    random.seed(args.seed)
    root = Path(tempfile.mkdtemp(prefix="cronflow-soak-"))
    try:
        made, states, twice, lost = soak(root / "home", args.kills, args.runs)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(
        f"{made} kills; task instances {states}; tries started twice: {len(twice)} "
        f"{twice[:5]}; lost: {lost}"
    )
    finished = (
        states.get("success")
        == args.runs * 12
        == sum(count for key, count in states.items() if key.startswith("try "))
    )
    sys.exit(0 if finished and not twice and not lost else 1)


if __name__ == "__main__":
    main()

"""The home and its database when something is wrong with them: only `init` creates a home, and
every failure (no home, someone else's home, a read-only, damaged or locked database, a flows
directory that is a file or missing) is one line and exit 2, `doctor` included, on real files,
real permissions and a real second SQLite connection.

Permission tests run the CLI as root without its capabilities (setpriv), against files owned by
another user or without write bits: the kernel then refuses as it refuses any user.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from clikit import DAILY, error, invoke, ok
from conftest import DaemonProcess, cli

from cronflow.errors import StoreCorruptError, StoreLockedError
from cronflow.store import Store

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="changes file owners (tests run as root)")
NOBODY = 65534


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0].removeprefix("Error: ")


def without_privileges(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`cronflow ARGS` as root stripped of every capability: file permissions apply to it."""
    env = {**os.environ, "CRONFLOW_HOME": str(home), "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run(
        [
            "setpriv",
            "--inh-caps=-all",
            "--bounding-set=-all",
            sys.executable,
            "-m",
            "cronflow",
            *args,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


@pytest.fixture
def initialised(tmp_path: Path) -> Path:
    """A home made by `cronflow init`, with a flow that has a run."""
    home = tmp_path / "home"
    ok(home, "init")
    (home / "flows" / "daily.py").write_text(DAILY)
    ok(home, "backfill", "daily", "--from", "2024-03-01", "--to", "2024-03-02")
    return home


# --- only init creates a home --------------------------------------------------------------------

COMMANDS = [
    ["list"],
    ["status"],
    ["runs", "daily"],
    ["show", "daily"],
    ["tasks", "daily"],
    ["trigger", "daily"],
    ["backfill", "daily", "--from", "2024-03-01", "--to", "2024-03-02"],
    ["pause", "daily"],
    ["why", "daily"],
    ["logs", "daily.a"],
    ["var", "list"],
    ["var", "set", "token", "x"],
    ["conn", "list"],
    ["top", "--once"],
    ["next"],
    ["db", "backup", "/dev/null/copy.db"],
    ["db", "clean", "--older-than", "1d"],
    ["doctor"],
    ["test", "daily"],
    ["import-crontab", "/dev/null"],
]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda args: " ".join(args[:2]))
def test_every_command_but_init_refuses_a_path_that_is_no_home(tmp_path: Path, args) -> None:
    typo = tmp_path / "cronflwo"
    assert error(typo, *args) == f"no cronflow home at {typo} (run `cronflow init`)"
    assert not typo.exists()
    typo.mkdir()  # an existing directory is no home either, until `init` makes it one
    assert error(typo, *args) == f"no cronflow home at {typo} (run `cronflow init`)"
    assert list(typo.iterdir()) == []


def test_check_needs_no_home_and_install_service_makes_its_own(tmp_path: Path) -> None:
    flows = tmp_path / "repo" / "flows"
    flows.mkdir(parents=True)
    (flows / "daily.py").write_text(DAILY)
    nowhere = tmp_path / "nowhere"
    assert "1 flow files, 1 flows: no problems" in ok(nowhere, "check", str(flows)).stdout
    assert "ExecStart=" in ok(nowhere, "install-service", "--user", "--dry-run").stdout
    assert not nowhere.exists()


def test_init_makes_the_config_and_flows_owner_only(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ok(home, "init")
    modes = {p: stat.S_IMODE(os.stat(home / p).st_mode) for p in ("", "cronflow.toml", "flows")}
    assert modes == {"": 0o700, "cronflow.toml": 0o600, "flows": 0o700}
    report = json.loads(invoke(home, "doctor", "--json").stdout)
    assert ("permissions", "ok") in {(f["check"], f["status"]) for f in report}


def test_doctor_warns_about_a_config_or_flows_open_to_others(initialised: Path) -> None:
    os.chmod(initialised / "cronflow.toml", 0o644)
    os.chmod(initialised / "flows", 0o755)
    report = json.loads(invoke(initialised, "doctor", "--json").stdout)
    (finding,) = [f for f in report if f["check"] == "permissions"]
    assert finding["status"] == "warn"
    assert f"{initialised / 'cronflow.toml'} (0o644)" in finding["detail"]
    assert f"{initialised / 'flows'} (0o755)" in finding["detail"]


def test_the_daemon_refuses_a_missing_home_and_a_directory_that_is_not_one(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "cronflwo"
    assert one_line_error(cli(missing, "daemon")) == (
        f"no cronflow home at {missing} (run `cronflow init`)"
    )
    assert not missing.exists()
    foreign = tmp_path / "documents"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert one_line_error(cli(foreign, "daemon")) == (
        f"no cronflow home at {foreign} (the directory holds no cronflow.toml nor cronflow.db) "
        "(run `cronflow init`)"
    )
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]


def test_the_daemon_sets_up_an_existing_empty_directory_as_systemd_makes_it(
    tmp_path: Path,
) -> None:
    state_directory = tmp_path / "state"
    state_directory.mkdir(mode=0o700)
    daemon = DaemonProcess(state_directory)
    daemon.log_path = tmp_path / "daemon.out"  # not in the directory: it must be empty
    try:
        daemon.start()
        assert (state_directory / "cronflow.db").exists()
        assert stat.S_IMODE(os.stat(state_directory / "cronflow.toml").st_mode) == 0o600
        assert stat.S_IMODE(os.stat(state_directory / "flows").st_mode) == 0o700
        assert not (state_directory / "flows" / "example.py").exists()
    finally:
        daemon.stop()
    assert daemon.proc is not None and daemon.proc.returncode == 0, daemon.output()


# --- flows_dir -----------------------------------------------------------------------------------


def test_a_missing_flows_dir_is_an_error_for_the_daemon_and_a_failure_in_doctor(
    initialised: Path,
) -> None:
    config = initialised / "cronflow.toml"
    config.write_text('flows_dir = "flwos"\n')
    expected = (
        f"the flows directory {initialised / 'flwos'} does not exist: create it "
        f"(mkdir -m 700 {initialised / 'flwos'}), or fix flows_dir in cronflow.toml"
    )
    assert one_line_error(cli(initialised, "daemon")) == expected
    assert error(initialised, "list") == expected
    assert not (initialised / "flwos").exists()
    doctor = cli(initialised, "doctor", "--json")
    assert doctor.returncode == 1 and "Traceback" not in doctor.stderr
    assert {"check": "flows", "status": "fail", "detail": expected} in json.loads(doctor.stdout)
    # The flows known before are still in the store: nothing was forgotten.
    assert [r["flow_id"] for r in Store(initialised / "cronflow.db").flows()] == [
        "daily",
        "example",
    ]


def test_a_flows_dir_pointing_at_a_file_is_one_line_everywhere(initialised: Path) -> None:
    (initialised / "cronflow.toml").write_text('flows_dir = "cronflow.toml"\n')
    target = initialised / "cronflow.toml"
    expected = f"the flows directory {target} is not a directory: fix flows_dir in cronflow.toml"
    assert one_line_error(cli(initialised, "daemon")) == expected
    assert error(initialised, "list") == expected
    assert error(initialised, "init") == (
        f"{target}: flows_dir {target} is not a directory; fix flows_dir"
    )
    doctor = cli(initialised, "doctor")
    assert doctor.returncode == 1 and "Traceback" not in doctor.stderr
    assert f"FAIL  flows        {expected}" in doctor.stdout


# --- someone else's home, a read-only database ---------------------------------------------------


@as_root
@pytest.mark.parametrize("args", [["list"], ["doctor"], ["daemon"], ["init"], ["var", "list"]])
def test_a_home_of_another_user_is_one_line(tmp_path: Path, args: list[str]) -> None:
    home = tmp_path / "home"
    ok(home, "init")
    for path in [home, *home.rglob("*")]:
        os.chown(path, NOBODY, NOBODY)
    result = without_privileges(home, *args)
    assert one_line_error(result) == (
        f"cannot use {home}: permission denied (owner nobody, mode 0700; you are root); "
        "run cronflow as the home's owner, or fix its permissions"
    )


@as_root
def test_a_read_only_database_is_one_line_and_doctor_fails_on_it(initialised: Path) -> None:
    db = initialised / "cronflow.db"
    before = db.read_bytes()
    os.chmod(db, 0o400)
    result = without_privileges(initialised, "var", "set", "token", "x")
    assert one_line_error(result) == (
        f"cannot use the state database {db}: attempt to write a readonly database; "
        "run cronflow as the owner of the home, or make the database and its directory writable"
    )
    assert db.read_bytes() == before
    listing = without_privileges(initialised, "runs", "daily", "--json")  # reading still works
    assert listing.returncode == 0 and len(json.loads(listing.stdout)) == 2
    doctor = without_privileges(initialised, "doctor", "--json")
    assert doctor.returncode == 1, doctor.stderr
    assert {
        "check": "permissions",
        "status": "fail",
        "detail": f"not writable by you: {db}; run cronflow as the home's owner, or fix them",
    } in json.loads(doctor.stdout)


# --- a damaged database --------------------------------------------------------------------------


def damage(db: Path, first_page: int, last_page: int | None = None) -> None:
    """Overwrite real pages of the database file (1 = the first) with garbage, once every
    page is in the file itself (none left in the write-ahead log to shadow the damage)."""
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
    conn.close()
    size = os.path.getsize(db)
    page = 4096
    last = size // page if last_page is None else last_page
    with open(db, "r+b") as handle:
        for number in range(first_page, last + 1):
            handle.seek((number - 1) * page)
            handle.write(b"\xde\xad\xbe\xef" * (page // 4))


def recover_advice(db: Path, detail: str) -> str:
    return (
        f"the state database {db} is damaged ({detail}): stop the daemon, then restore a copy "
        f"made by `cronflow db backup`, or recover what is left: "
        f"sqlite3 {db} .recover | sqlite3 recovered.db"
    )


@pytest.mark.parametrize(
    "args", [["list"], ["runs", "daily"], ["var", "set", "a", "b"], ["db", "backup", "COPY"]]
)
def test_damaged_pages_are_one_line_saying_what_to_do(initialised: Path, args) -> None:
    db = initialised / "cronflow.db"
    damage(db, 2)
    copy = initialised.parent / "copy.db"
    result = cli(initialised, *[str(copy) if arg == "COPY" else arg for arg in args])
    assert not copy.exists()
    assert one_line_error(result) == recover_advice(db, "database disk image is malformed")


def test_a_file_that_is_no_database_is_one_line(initialised: Path) -> None:
    db = initialised / "cronflow.db"
    damage(db, 1, 1)
    assert one_line_error(cli(initialised, "list")) == recover_advice(db, "file is not a database")


def test_doctor_reports_damaged_pages_and_runs_its_other_checks(initialised: Path) -> None:
    db = initialised / "cronflow.db"
    with sqlite3.connect(db) as conn:
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'runs'").fetchone()
    damage(db, root[0], root[0])
    result = cli(initialised, "doctor", "--json")
    assert result.returncode == 1 and result.stderr == ""
    findings = {f["check"]: f for f in json.loads(result.stdout)}
    assert findings["database"]["status"] == "fail"
    assert findings["database"]["detail"] == recover_advice(db, "database disk image is malformed")
    assert findings["disk"]["status"] == "ok" and "logs" in findings


def test_doctor_lists_what_quick_check_finds(initialised: Path) -> None:
    db = initialised / "cronflow.db"
    with sqlite3.connect(db) as conn:
        (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'runs'").fetchone()
    damage(db, 1, 0)  # nothing damaged: only the write-ahead log folded into the file
    with open(db, "r+b") as handle:  # a freelist whose trunk is a page in use by a table
        handle.seek(32)
        handle.write(struct.pack(">II", root, 1))
    result = cli(initialised, "doctor", "--json")
    assert result.returncode == 1 and result.stderr == ""
    (finding,) = [f for f in json.loads(result.stdout) if f["check"] == "database"]
    assert finding["status"] == "fail"
    assert finding["detail"].startswith(f"the state database {db} is damaged (quick_check found ")
    assert "freelist" in finding["detail"] and ".recover" in finding["detail"]


# --- a locked database ---------------------------------------------------------------------------

HOLD_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()  # until the test closes our stdin
"""


@pytest.fixture
def writer(initialised: Path):
    """Another process holding the database's write lock (BEGIN IMMEDIATE) until the end."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(initialised / "cronflow.db")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "locked\n"
    yield proc
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(30)


def test_a_write_past_the_busy_timeout_raises_a_typed_error(initialised: Path, writer) -> None:
    store = Store(initialised / "cronflow.db", busy_timeout_s=0.2)
    assert store.runs_of_flow("daily")  # reading goes on beside a writer (WAL)
    with pytest.raises(StoreLockedError) as raised:
        store.set_variable("token", "x")
    assert str(raised.value) == (
        f"the state database {initialised / 'cronflow.db'} stayed locked by another writer "
        "for 0.2 s: retry, and look for what holds it (an open `sqlite3` shell, a copy in "
        "progress)"
    )


def test_a_cli_write_past_the_busy_timeout_is_one_line(initialised: Path, writer) -> None:
    result = cli(initialised, "var", "set", "token", "x", timeout=120)  # waits 30 s
    message = one_line_error(result)
    assert message.startswith(
        f"the state database {initialised / 'cronflow.db'} stayed locked by another writer "
        "for 30 s: retry"
    )


def test_a_damaged_store_opened_by_the_library_is_typed(initialised: Path) -> None:
    damage(initialised / "cronflow.db", 2)
    with pytest.raises(StoreCorruptError):
        Store(initialised / "cronflow.db").flows()


# --- db backup -----------------------------------------------------------------------------------


def test_db_backup_to_a_directory_is_one_line_and_writes_nothing(
    initialised: Path, tmp_path: Path
) -> None:
    target = tmp_path / "backups"
    target.mkdir()
    assert error(initialised, "db", "backup", str(target)) == (
        f"{target} is a directory: name the copy's file, e.g. {target / 'cronflow.db'}"
    )
    assert list(target.iterdir()) == [] and not (tmp_path / "backups.partial").exists()

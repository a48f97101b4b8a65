"""An offline station is "not yet", not a failure: a remote FileSensor whose host refuses the
connection, never answers or has a name that does not resolve keeps poking (in poke and in
reschedule mode) until its timeout, then soft_fail applies; a refused login or an unknown host key
fails at once with that reason. Against a real sshd, a port with nothing listening, a port that
never answers, and a name under .invalid."""

from __future__ import annotations

import re
import subprocess

import pytest
from clikit import invoke
from conftest import wait_for
from opskit import Runner

from cronflow.store import Store

# The sensor's timeout is wall-clock time in its worker: 8 s leaves room for a slow first poke
# (an interpreter start and a 1 s connect timeout) on a loaded machine.
RESCHEDULE_FLOW = """
from cronflow import Flow, FileSensor, Shell
with Flow("offline", defaults={{"retries": 2, "retry_delay": 60}}):
    wait = FileSensor("wait", "{outbox}/readings-{{{{ ds_nodash }}}}.csv", conn_id="station",
                      poke_interval="1m", timeout=8, soft_fail=True, mode="reschedule")
    wait >> Shell("after", "true")
"""


def _station(home, sshd, host: str, port: int, conn_id: str = "station") -> None:  # type: ignore[no-untyped-def]
    """A connection to the test sshd's user with its key, at host:port (1 s to connect)."""
    Store(home / "cronflow.db").set_connection(
        conn_id,
        "sftp",
        host,
        port,
        sshd.user,
        None,
        {"key_file": str(sshd.key_file), "known_hosts": str(sshd.known_hosts), "timeout": "1"},
    )


@pytest.fixture(params=["refused", "silent", "unknown_host"])
def offline(request, refused_port):  # type: ignore[no-untyped-def]
    """(host, port, the words of its error) for each way a station is offline."""
    if request.param == "refused":
        return "127.0.0.1", refused_port, f"connection refused by 127.0.0.1:{refused_port}"
    if request.param == "silent":
        port = request.getfixturevalue("silent_port")
        return "127.0.0.1", port, f"no answer from 127.0.0.1:{port} within 1s"
    return "nohost.invalid", 22, "cannot resolve the host name 'nohost.invalid': "


def test_an_offline_station_is_not_yet_until_the_timeout_in_reschedule_mode(
    home, write_flow, sshd, tmp_path, offline, caplog
):
    host, port, words = offline
    _station(home, sshd, host, port)
    write_flow("offline", RESCHEDULE_FLOW.format(outbox=tmp_path))
    r = Runner(home)
    caplog.set_level("INFO", logger="cronflow")
    run_id = r.run("offline")
    ti = r.ti(run_id, "wait")
    assert (ti["state"], ti["try_number"]) == ("up_for_reschedule", 0)  # a poke, not a try
    assert ti["reason"].startswith(f"not yet: connection 'station': {words}")
    first_reason = ti["reason"]
    why = invoke(home, "why", "offline", "--task", "wait").stdout
    assert f"- wait: waiting to check again at 2024-03-02 12:01 UTC ({ti['reason']})\n" in why

    def pokes_until_it_gives_up() -> bool:
        r.advance(60)
        return r.state(run_id, "wait") != "up_for_reschedule"

    wait_for(pokes_until_it_gives_up, what="the sensor's timeout")
    ti = r.ti(run_id, "wait")
    assert (ti["state"], ti["try_number"]) == ("skipped", 1)  # soft_fail; no retry was used
    assert re.fullmatch(
        rf"skipped: connection 'station': {re.escape(words)}.*; gave up after \d+s \(timeout\)",
        ti["reason"],
    )
    assert r.state(run_id, "after") == "skipped"
    ended = [m for m in caplog.messages if m.startswith("event=task_ended flow=offline task=wait")]
    assert ended[-1].endswith(f"state=skipped reason={ti['reason']!r}")
    assert ended[0].endswith(f"state=up_for_reschedule reason={first_reason!r}")
    log = r.log(run_id, "wait")
    assert log.count(f"not yet: connection 'station': {words}") >= 2  # each poke, with why


# "gone" times out (wall clock, in its worker) after several pokes, even on a loaded machine.
POKE_FLOW = """
from cronflow import Flow, FileSensor
with Flow("offline"):
    FileSensor("back", "{outbox}/readings-{{{{ ds_nodash }}}}.csv", conn_id="comes_back",
               poke_interval=0.1, timeout=120)
    FileSensor("gone", "{outbox}/readings-{{{{ ds_nodash }}}}.csv", conn_id="stays_away",
               poke_interval=0.1, timeout=8, soft_fail=True)
"""


def test_an_offline_station_is_not_yet_in_poke_mode_until_it_is_back_or_the_timeout(
    home, write_flow, sshd, tmp_path, refused_port, silent_port
):
    (tmp_path / "readings-20240301.csv").write_text("x")
    _station(home, sshd, "127.0.0.1", refused_port, "comes_back")
    _station(home, sshd, "127.0.0.1", silent_port, "stays_away")
    write_flow("offline", POKE_FLOW.format(outbox=tmp_path))
    r = Runner(home)
    run_id = r.trigger("offline")
    refused = f"not yet: connection 'comes_back': connection refused by 127.0.0.1:{refused_port}"

    def refused_once() -> bool:
        r.scheduler.tick(r.clock.now())
        ti = r.ti(run_id, "back")
        return bool(ti["log_path"]) and refused in r.log(run_id, "back")

    wait_for(refused_once, what="a poke of the offline station")
    _station(home, sshd, "127.0.0.1", sshd.port, "comes_back")  # the station is back online
    r.settle()
    back = r.ti(run_id, "back")
    assert (back["state"], back["try_number"]) == ("success", 1)
    assert r.xcom(run_id, "back") == [f"{tmp_path}/readings-20240301.csv"]
    assert "satisfied: 1 file(s) match" in r.log(run_id, "back")
    gone = r.ti(run_id, "gone")
    assert gone["state"] == "skipped"
    assert re.fullmatch(
        rf"skipped: connection 'stays_away': no answer from 127\.0\.0\.1:{silent_port} within "
        r"1s; gave up after \d+s \(timeout\)",
        gone["reason"],
    )
    assert f"no answer from 127.0.0.1:{silent_port} within 1s; next poke in" in r.log(
        run_id, "gone"
    )


REFUSED_ACCESS_FLOW = """
from cronflow import Flow, FileSensor
with Flow("locked"):
    FileSensor("stranger", "/outbox/x.csv", conn_id="stranger", poke_interval="1m",
               timeout="1h", soft_fail=True, mode="{mode}")
    FileSensor("unknown_key", "/outbox/x.csv", conn_id="unknown_key", poke_interval="1m",
               timeout="1h", soft_fail=True, mode="{mode}")
"""


@pytest.mark.parametrize("mode", ["poke", "reschedule"])
def test_a_refused_login_or_an_unknown_host_key_fails_a_sensor_at_once(
    home, write_flow, sshd, tmp_path, mode
):
    stranger_key, empty = tmp_path / "stranger", tmp_path / "empty_known_hosts"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger_key)], check=True
    )
    empty.write_text("")
    store = Store(home / "cronflow.db")
    for conn_id, extra in {
        "stranger": {"key_file": str(stranger_key), "known_hosts": str(sshd.known_hosts)},
        "unknown_key": {"key_file": str(sshd.key_file), "known_hosts": str(empty)},
    }.items():
        store.set_connection(conn_id, "sftp", "127.0.0.1", sshd.port, sshd.user, None, extra)
    write_flow("locked", REFUSED_ACCESS_FLOW.format(mode=mode))
    r = Runner(home)
    run_id = r.run("locked")
    assert r.states(run_id) == {"stranger": "failed", "unknown_key": "failed"}
    assert r.ti(run_id, "stranger")["reason"].startswith(
        f"connection 'stranger': authentication failed for {sshd.user}@127.0.0.1:{sshd.port}"
    )
    assert r.ti(run_id, "unknown_key")["reason"].startswith(
        f"connection 'unknown_key': the host key of [127.0.0.1]:{sshd.port} (ssh-ed25519 SHA256:"
    )

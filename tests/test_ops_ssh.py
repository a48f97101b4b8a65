"""SSHCommand, SFTPGet/SFTPPut and the remote FileSensor against a real OpenSSH sshd on
127.0.0.1 (tests/servers.py starts it with its own host key, user key and config)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from clikit import invoke
from opskit import Runner

from cronflow.store import Store

SSH_FLOW = """
from cronflow import Flow, SSHCommand
with Flow("remote"):
    SSHCommand("hello", "echo out-{{ ds }} {{ params.word }}; echo to-stderr >&2",
               conn_id="station", params={"word": "two words; rm -rf /tmp/nothing"})
    SSHCommand("env_cwd", "pwd; echo $GREETING", conn_id="station", cwd="/tmp",
               env={"GREETING": "hi {{ ds_nodash }}"})
    SSHCommand("fails", "echo about to fail; exit 3", conn_id="station")
"""


def test_ssh_command_output_and_exit_code_go_to_the_task_log(home, write_flow, sshd, monkeypatch):
    monkeypatch.setenv("CRONFLOW_CONN_STATION", sshd.uri())
    write_flow("remote", SSH_FLOW)
    r = Runner(home)
    run_id = r.run("remote")
    assert r.states(run_id) == {"hello": "success", "env_cwd": "success", "fails": "failed"}
    hello = r.log(run_id, "hello")
    assert "out-2024-03-01 two words; rm -rf /tmp/nothing\n" in hello  # quoted: one argument
    assert "to-stderr\n" in hello
    assert f"on {sshd.user}@127.0.0.1:{sshd.port}:" in hello
    assert "remote exit code 0" in hello
    assert "/tmp\nhi 20240301\n" in r.log(run_id, "env_cwd")
    fails = r.log(run_id, "fails")
    assert "about to fail" in fails and "remote exit code 3" in fails
    assert "cronflow: remote exit code 3: about to fail" in fails
    assert r.ti(run_id, "fails")["reason"] == "remote exit code 3: about to fail"


HOST_KEY_FLOW = """
from cronflow import Flow, SSHCommand
with Flow("keys"):
    SSHCommand("unknown", "true", conn_id="unknown_host")
    SSHCommand("changed", "true", conn_id="changed_host")
    SSHCommand("unchecked", "echo unchecked ok", conn_id="unchecked")
"""


def test_unknown_and_changed_host_keys_are_clear_errors(home, write_flow, sshd, tmp_path):
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    other_key = tmp_path / "other"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other_key)], check=True
    )
    changed = tmp_path / "changed_known_hosts"
    changed.write_text(f"[127.0.0.1]:{sshd.port} {(tmp_path / 'other.pub').read_text()}")
    store = Store(home / "cronflow.db")
    base = {"key_file": str(sshd.key_file)}
    for conn_id, extra in {
        "unknown_host": {**base, "known_hosts": str(empty)},
        "changed_host": {**base, "known_hosts": str(changed)},
        "unchecked": {**base, "known_hosts": str(changed), "host_key_check": "false"},
    }.items():
        store.set_connection(conn_id, "ssh", "127.0.0.1", sshd.port, sshd.user, None, extra)
    write_flow("keys", HOST_KEY_FLOW)
    r = Runner(home)
    run_id = r.run("keys")
    assert r.states(run_id) == {"unknown": "failed", "changed": "failed", "unchecked": "success"}
    unknown = r.log(run_id, "unknown")
    assert (
        f"cronflow: connection 'unknown_host': the host key of [127.0.0.1]:{sshd.port} "
        "(ssh-ed25519 SHA256:" in unknown
    )
    assert (
        f"is not in {empty}; check the fingerprint with the server's admin, then add it with "
        f"`ssh-keyscan -p {sshd.port} 127.0.0.1 >> {empty}`, or set host_key_check=false "
        "on the connection" in unknown
    )
    changed_log = r.log(run_id, "changed")
    assert (
        f"cronflow: connection 'changed_host': the host key of [127.0.0.1]:{sshd.port} has "
        f"CHANGED: {changed} has ssh-ed25519 SHA256:" in changed_log
    )
    assert f"`ssh-keygen -R '[127.0.0.1]:{sshd.port}' -f {changed}`" in changed_log
    unchecked = r.log(run_id, "unchecked")
    assert "host key checking is off (host_key_check=false)" in unchecked
    assert "unchecked ok" in unchecked


def test_wrong_user_key_is_an_authentication_error(home, write_flow, sshd, tmp_path, monkeypatch):
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    monkeypatch.setenv("CRONFLOW_CONN_STATION", sshd.uri(key_file=str(stranger)))
    write_flow("remote", SSH_FLOW)
    r = Runner(home)
    run_id = r.run("remote")
    assert (
        f"cronflow: connection 'station': authentication failed for {sshd.user}@127.0.0.1:"
        f"{sshd.port}" in r.log(run_id, "hello")
    )


def test_sftp_get_and_put_with_globs(home, write_flow, sshd, tmp_path, monkeypatch):
    outbox = tmp_path / "station" / "outbox"  # "remote": sshd serves this machine's files
    outbox.mkdir(parents=True)
    for name, text in {
        "a-20240301.csv": "a\n",
        "b-20240301.csv": "b\n",
        "c-20240301.txt": "c",
    }.items():
        (outbox / name).write_text(text)
    (outbox / "d-20240301.csv").mkdir()  # a directory never matches
    staging, inbox = tmp_path / "staging", tmp_path / "station" / "inbox"
    inbox.mkdir()
    (staging / "out").mkdir(parents=True)
    (staging / "out" / "report-2024-03-01.txt").write_text("report")
    (staging / "out" / "report-2024-03-01.png").write_bytes(b"\x89PNG")
    monkeypatch.setenv("CRONFLOW_CONN_STATION", sshd.uri().replace("ssh://", "sftp://"))
    write_flow(
        "transfer",
        f"""
        from cronflow import Flow, SFTPGet, SFTPPut
        with Flow("transfer"):
            SFTPGet("get", conn_id="station", remote="{outbox}/*-{{{{ ds_nodash }}}}.csv",
                    local_dir="{staging}/in/{{{{ ds }}}}")
            SFTPPut("put", conn_id="station", local="{staging}/out/report-{{{{ ds }}}}.*",
                    remote_dir="{inbox}")
            SFTPGet("none", conn_id="station", remote="{outbox}/*.xml", local_dir="{staging}")
            SFTPGet("none_ok", conn_id="station", remote="{outbox}/*.xml", local_dir="{staging}",
                    allow_empty=True)
            SFTPGet("bad_glob", conn_id="station", remote="{outbox}/*/x.csv", local_dir="{staging}")
        """,
    )
    r = Runner(home)
    run_id = r.run("transfer")
    assert r.states(run_id) == {
        "get": "success",
        "put": "success",
        "none": "failed",
        "none_ok": "success",
        "bad_glob": "failed",
    }
    got = staging / "in" / "2024-03-01"
    assert sorted(p.name for p in got.iterdir()) == ["a-20240301.csv", "b-20240301.csv"]
    assert (got / "a-20240301.csv").read_text() == "a\n"
    assert r.xcom(run_id, "get") == [str(got / "a-20240301.csv"), str(got / "b-20240301.csv")]
    assert sorted(p.name for p in inbox.iterdir()) == [
        "report-2024-03-01.png",
        "report-2024-03-01.txt",
    ]
    assert (inbox / "report-2024-03-01.png").read_bytes() == b"\x89PNG"
    assert r.xcom(run_id, "put") == [
        f"{inbox}/report-2024-03-01.png",
        f"{inbox}/report-2024-03-01.txt",
    ]
    assert (
        f"cronflow: nothing matches {outbox}/*.xml on {sshd.user}@127.0.0.1:{sshd.port} "
        "(allow_empty=True accepts that)" in r.log(run_id, "none")
    )
    assert r.xcom(run_id, "none_ok") == []
    assert "only the file name may hold wildcards, not the directory" in r.log(run_id, "bad_glob")


def test_transfers_write_a_temporary_name_then_rename(
    home, write_flow, sshd, tmp_path, monkeypatch
):
    """A directory squatting on the temporary name makes the write fail: so the data went
    there first, and the final name never held a partial file."""
    remote_dir, local_dir = tmp_path / "remote", tmp_path / "local"
    remote_dir.mkdir()
    local_dir.mkdir()
    (remote_dir / "day.csv").write_text("remote data")
    (local_dir / ".day.csv.part").mkdir()
    (tmp_path / "upload.csv").write_text("upload")
    (remote_dir / ".upload.csv.part").mkdir()
    monkeypatch.setenv("CRONFLOW_CONN_STATION", sshd.uri())
    write_flow(
        "tmpnames",
        f"""
        from cronflow import Flow, SFTPGet, SFTPPut
        with Flow("tmpnames"):
            SFTPGet("get", conn_id="station", remote="{remote_dir}/day.csv", local_dir="{local_dir}")
            SFTPPut("put", conn_id="station", local="{tmp_path}/upload.csv", remote_dir="{remote_dir}")
        """,
    )
    r = Runner(home)
    run_id = r.run("tmpnames")
    assert r.states(run_id) == {"get": "failed", "put": "failed"}
    assert not (local_dir / "day.csv").exists()
    assert not (remote_dir / "upload.csv").exists()
    assert ".day.csv.part" in r.log(run_id, "get")
    (local_dir / ".day.csv.part").rmdir()
    (remote_dir / ".upload.csv.part").rmdir()
    r.store.clear_tis({run_id: {"get": 0, "put": 0}}, r.clock.now())
    r.settle()
    assert r.states(run_id) == {"get": "success", "put": "success"}
    assert (local_dir / "day.csv").read_text() == "remote data"
    assert (remote_dir / "upload.csv").read_text() == "upload"
    assert sorted(p.name for p in remote_dir.iterdir()) == ["day.csv", "upload.csv"]


def test_remote_file_sensor_over_sftp_in_reschedule_mode(
    home, write_flow, sshd, tmp_path, monkeypatch
):
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    monkeypatch.setenv("CRONFLOW_CONN_STATION", sshd.uri())
    write_flow(
        "remote_wait",
        f"""
        from cronflow import Flow, FileSensor
        with Flow("remote_wait"):
            FileSensor("wait", "{outbox}/readings-{{{{ ds_nodash }}}}.csv", conn_id="station",
                       poke_interval="10m", timeout="8h", mode="reschedule")
        """,
    )
    r = Runner(home)
    run_id = r.run("remote_wait")
    ti = r.ti(run_id, "wait")
    assert ti["state"] == "up_for_reschedule"
    assert ti["reason"] == (
        f"not yet: no file matches {outbox}/readings-20240301.csv on {sshd.user}@127.0.0.1:"
        f"{sshd.port}"
    )
    (outbox / "readings-20240301.csv").write_text("x")
    r.advance(600)
    assert r.state(run_id, "wait") == "success"
    assert r.xcom(run_id, "wait") == [f"{outbox}/readings-20240301.csv"]


def test_conn_cli_against_sshd(home, sshd, tmp_path):
    assert invoke(home, "conn", "add", "station", sshd.uri()).exit_code == 0
    result = invoke(home, "conn", "test", "station")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith(
        f"ok: connected to {sshd.user}@127.0.0.1:{sshd.port} (host key ssh-ed25519 SHA256:"
    )
    empty = tmp_path / "none"
    empty.write_text("")
    invoke(home, "conn", "add", "stranger", sshd.uri(known_hosts=str(empty)))
    result = invoke(home, "conn", "test", "stranger")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: connection 'stranger': the host key of [127.0.0.1]:")


def test_ssh_command_values_cannot_inject_a_remote_command(
    home, write_flow, sshd, monkeypatch, tmp_path
):
    """Each value a Jinja template prints is shell-quoted for the remote shell too."""
    marker = tmp_path / "injected"
    evil = f"a'b\"c $(touch {marker}) `touch {marker}`; touch {marker}\ntouch {marker} &&"
    monkeypatch.setenv("CRONFLOW_CONN_STATION", sshd.uri())
    write_flow(
        "inject",
        f"""
        from cronflow import Flow, SSHCommand
        with Flow("inject"):
            SSHCommand("say", "printf '<%s>' {{{{ params.evil }}}} "
                       "{{% for v in [params.evil] %}}{{{{ v | upper }}}}{{% endfor %}}",
                       conn_id="station", params={{"evil": {evil!r}}})
        """,
    )
    r = Runner(home)
    run_id = r.run("inject")
    assert r.states(run_id) == {"say": "success"}, r.log(run_id, "say")
    assert f"<{evil}><{evil.upper()}>" in r.log(run_id, "say")
    assert not marker.exists() and not Path(str(marker).upper()).exists()


def test_a_secret_in_an_ssh_command_is_not_on_the_remote_command_line(
    home, write_flow, sshd, monkeypatch, tmp_path
):
    """The remote shell reads the command from stdin: the remote host's `ps` shows no rendered
    value. The command itself lists every command line on the (here: same) host as it runs."""
    secret = "Sup3r-s3cret-remote-token"
    Store(home / "cronflow.db").set_variable("token", secret, is_secret=True)
    scan = tmp_path / "command-lines"
    monkeypatch.setenv("CRONFLOW_CONN_STATION", sshd.uri())
    write_flow(
        "remote_secret",
        f"""
        from cronflow import Flow, SSHCommand
        with Flow("remote_secret"):
            SSHCommand("use", "echo {{{{ var.token }}}} > /dev/null; "
                       "for f in /proc/[0-9]*/cmdline; do tr '\\\\0' ' ' < $f; echo; done "
                       "> {scan}; echo scanned", conn_id="station")
        """,
    )
    r = Runner(home)
    run_id = r.run("remote_secret")
    assert r.states(run_id) == {"use": "success"}, r.log(run_id, "use")
    lines = scan.read_text(errors="replace")
    assert secret not in lines
    assert "head -c" in lines  # the remote shell was seen, reading its command
    assert secret not in r.log(run_id, "use") and "scanned" in r.log(run_id, "use")

"""`chunkvault run` as users run it: real inotify on a real tree, real HTTP S3 peers, the
CLI as subprocesses. Every change must reach the vault and restore byte-identical."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from support.cli import CLI, init_vault, run_cli
from support.moto_peers import unique_bucket
from support.unprivileged import permissions_apply, preexec

PW = {"CHUNKVAULT_PASSPHRASE": "agent passphrase"}


class Daemon:
    def __init__(
        self, config: Path, log: Path, env: dict[str, str] | None = None, restricted: bool = False
    ) -> None:
        self.config = config
        self.log = log
        self.env = env
        self.restricted = restricted  # file permissions apply to it, even as root
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = self.env or {k: v for k, v in os.environ.items() if not k.startswith("CHUNKVAULT_")}
        env = env | PW
        offset = self.log.stat().st_size if self.log.exists() else 0  # a restart's log
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [CLI, "--config", str(self.config), "run"], env=env, stdout=log, stderr=log,
                preexec_fn=preexec() if self.restricted else None,
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while b"watching" not in self.log.read_bytes()[offset:]:
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, float]:
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=20)
        return code, time.monotonic() - started


@pytest.fixture
def agent(tmp_path: Path, moto_peers):
    config, inbox = init_vault(
        tmp_path, moto_peers.endpoints, unique_bucket(), PW,
        watch={"settle_seconds": 0.3, "rescan_seconds": 0},
        chunking={"min_size": "64KiB", "avg_size": "256KiB", "max_size": "1MiB"},
        api={"enabled": False},
    )  # fmt: skip
    (inbox / "existing.log").write_text("line 1\n")  # before the agent starts
    daemon = Daemon(config, tmp_path / "agent.log")
    daemon.start()
    yield daemon, config, inbox
    if daemon.proc and daemon.proc.poll() is None:
        daemon.proc.kill()
        daemon.proc.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def vault_files(config: Path, deleted: bool = False) -> dict[str, dict]:
    args = ["ls", "--json"] + (["--deleted"] if deleted else [])
    result = run_cli(config, *args, env=PW)
    assert result.returncode == 0, result.stderr
    return {entry["path"]: entry for entry in json.loads(result.stdout)}


def wait_for(predicate, timeout: float = 40.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def in_vault(config: Path, inbox: Path, paths: list[str]) -> bool:
    """Every path is in the vault with the size and mtime it has on disk now."""
    files = vault_files(config)
    for rel in paths:
        st = (inbox / rel).stat()
        entry = files.get(rel)
        if entry is None or entry["size"] != st.st_size or entry["mtime_ns"] != st.st_mtime_ns:
            return False
    return True


def assert_restores(config: Path, inbox: Path, tmp_path: Path, paths: list[str]) -> None:
    out = tmp_path / f"restore-{time.monotonic_ns()}"
    result = run_cli(config, "restore", *paths, "--to", str(out), env=PW)
    assert result.returncode == 0, result.stderr
    for rel in paths:
        assert (out / rel).read_bytes() == (inbox / rel).read_bytes(), rel


def test_changes_anywhere_in_the_tree_reach_the_vault(agent, tmp_path):
    _daemon, config, inbox = agent
    # A file written right after mkdir -p (the inotify race).
    (inbox / "a" / "b" / "c" / "d").mkdir(parents=True)
    (inbox / "a" / "b" / "c" / "d" / "fresh.bin").write_bytes(os.urandom(300_000))
    # cp -r of a 40-file tree.
    source = tmp_path / "src-tree"
    for i in range(40):
        path = source / f"dir{i % 4}" / f"sub{i % 3}" / f"file{i}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"file number {i}\n" * (i + 1))
    subprocess.run(["cp", "-r", str(source), str(inbox / "copied")], check=True)
    # A tree mv-ed in from outside the watched directory.
    outside = tmp_path / "outside"
    (outside / "x" / "y").mkdir(parents=True)
    (outside / "x" / "y" / "moved-in.bin").write_bytes(os.urandom(200_000))
    (outside / "top.txt").write_text("moved in\n")
    os.rename(outside, inbox / "moved")
    # An append to a file that existed before the agent started.
    with open(inbox / "existing.log", "a") as f:
        f.write("line 2\n")
    # Files matching the ignore globs.
    (inbox / "notes.txt.swp").write_text("editor swap")
    (inbox / "download.part").write_text("partial")

    expected = ["a/b/c/d/fresh.bin", "existing.log", "moved/x/y/moved-in.bin", "moved/top.txt"] + [
        p.relative_to(inbox).as_posix() for p in (inbox / "copied").rglob("*.txt")
    ]
    assert len(expected) == 44
    wait_for(lambda: in_vault(config, inbox, expected), what="all files in the vault")
    files = vault_files(config)
    assert "notes.txt.swp" not in files and "download.part" not in files
    assert_restores(config, inbox, tmp_path, expected)


def test_editor_save_and_delete(agent, tmp_path):
    _daemon, config, inbox = agent
    doc = inbox / "doc.txt"
    doc.write_text("first draft\n")
    wait_for(lambda: in_vault(config, inbox, ["doc.txt"]), what="first draft")
    # Editor-style atomic save: write a temp file, rename it over the original.
    tmp = inbox / ".doc.txt.swp"
    tmp.write_text("second draft, saved atomically\n")
    os.replace(tmp, doc)
    wait_for(lambda: in_vault(config, inbox, ["doc.txt"]), what="atomic save")
    assert vault_files(config)["doc.txt"]["versions"] == 2
    assert_restores(config, inbox, tmp_path, ["doc.txt"])
    # Delete: shown as deleted and still restorable.
    content = doc.read_bytes()
    doc.unlink()
    wait_for(lambda: vault_files(config, deleted=True).get("doc.txt", {}).get("deleted"),
             what="tombstone")  # fmt: skip
    assert "doc.txt" not in vault_files(config)
    out = tmp_path / "deleted-restore"
    result = run_cli(config, "restore", "doc.txt", "--deleted", "--to", str(out), env=PW)
    assert result.returncode == 0, result.stderr
    assert (out / "doc.txt").read_bytes() == content


def test_rename_repoints_without_resending(agent, tmp_path):
    daemon, config, inbox = agent
    (inbox / "old-name.bin").write_bytes(os.urandom(500_000))
    wait_for(lambda: in_vault(config, inbox, ["old-name.bin"]), what="original")
    log_before = daemon.log.read_text()
    os.rename(inbox / "old-name.bin", inbox / "new-name.bin")
    wait_for(lambda: in_vault(config, inbox, ["new-name.bin"]), what="renamed")
    files = vault_files(config, deleted=True)
    assert files["old-name.bin"]["deleted"] is True
    new_log = daemon.log.read_text()[len(log_before) :]
    assert "moved new-name.bin" in new_log, new_log
    assert_restores(config, inbox, tmp_path, ["new-name.bin"])


def test_sigterm_stops_within_ten_seconds(agent):
    daemon, _config, inbox = agent
    (inbox / "busy.bin").write_bytes(os.urandom(2_000_000))
    time.sleep(0.2)
    code, took = daemon.stop(signal.SIGTERM)
    assert code == 0, daemon.log.read_text()
    assert took < 10


def test_sigkill_mid_ingest_then_restart_loses_nothing(agent, tmp_path):
    daemon, config, inbox = agent
    names = []
    for i in range(30):
        rel = f"batch/f{i:02d}.bin"
        (inbox / "batch").mkdir(exist_ok=True)
        (inbox / rel).write_bytes(os.urandom(400_000))
        names.append(rel)
    time.sleep(0.5)  # the agent has started on them
    daemon.stop(signal.SIGKILL)
    # Changes while it is down are picked up by the startup scan.
    (inbox / "batch" / "while-down.txt").write_text("written while the agent was dead\n")
    names.append("batch/while-down.txt")
    daemon.start()
    wait_for(lambda: in_vault(config, inbox, names), timeout=60, what="every file after restart")
    assert_restores(config, inbox, tmp_path, names)


def test_poll_mode_flows_hooks_and_status(tmp_path, moto_peers):
    """No inotify at all (watch.mode: poll), flow rules, exec hooks, JSON logs, status."""
    hook_log = tmp_path / "hooks.log"
    hook = tmp_path / "hook.sh"
    hook.write_text(f'#!/bin/sh\necho "$CHUNKVAULT_EVENT $CHUNKVAULT_REL_PATH" >> {hook_log}\n')
    hook.chmod(0o755)
    config, inbox = init_vault(
        tmp_path, moto_peers.endpoints, unique_bucket(), PW,
        watch={"mode": "poll", "poll_seconds": 0.5, "settle_seconds": 0.2},
        api={"enabled": False},
        log={"format": "json"},
        replication={"replicas": 2},
        flows=[
            {"match": "**/*.iso", "ignore": True},
            {"match": "photos/**", "replicas": 3, "on_delete": "keep", "exec": [str(hook)]},
            {"match": "scratch/**", "on_delete": "purge"},
            {"match": "**"},
        ],
    )  # fmt: skip
    (inbox / "photos").mkdir()
    (inbox / "scratch").mkdir()
    daemon = Daemon(config, tmp_path / "agent.log")
    daemon.start()
    try:
        (inbox / "photos" / "cat.jpg").write_bytes(os.urandom(100_000))
        (inbox / "scratch" / "tmp.dat").write_bytes(os.urandom(1000))
        (inbox / "disk.iso").write_bytes(b"iso" * 1000)
        paths = ["photos/cat.jpg", "scratch/tmp.dat"]
        wait_for(lambda: in_vault(config, inbox, paths), what="poll mode picks files up")
        assert "disk.iso" not in vault_files(config, deleted=True)
        wait_for(lambda: hook_log.exists() and "stored photos/cat.jpg" in hook_log.read_text(),
                 what="exec hook")  # fmt: skip

        def status() -> dict:
            return json.loads(run_cli(config, "status", "--json", env=PW).stdout)

        # A poll scan can re-queue a file it saw mid-upload: the queue drains to 0 soon.
        wait_for(lambda: status()["queue_depth"] == 0, what="an empty queue")
        report = status()
        assert report["under_replicated"] == 0
        assert {p["name"] for p in report["peers"] if p["up"]} == {"p0", "p1", "p2"}
        # Deletes follow each flow's on_delete.
        (inbox / "photos" / "cat.jpg").unlink()
        (inbox / "scratch" / "tmp.dat").unlink()
        wait_for(lambda: "scratch/tmp.dat" not in vault_files(config, deleted=True),
                 what="purge")  # fmt: skip
        files = vault_files(config, deleted=True)
        assert files["photos/cat.jpg"]["deleted"] is False  # keep
        log_lines = [
            json.loads(line) for line in daemon.log.read_text().splitlines() if line.startswith("{")
        ]
        assert any("stored photos/cat.jpg" in e["message"] for e in log_lines)
        assert all({"time", "level", "logger", "message"} <= e.keys() for e in log_lines)
    finally:
        code, took = daemon.stop()
    assert code == 0 and took < 10


def test_work_waits_and_retries_while_peers_are_down(tmp_path, moto_peer_factory):
    servers = [moto_peer_factory() for _ in range(2)]
    config, inbox = init_vault(
        tmp_path, [s.endpoint for s in servers], "cvretry", PW,
        watch={"settle_seconds": 0.2, "rescan_seconds": 0},
        # One failure marks a peer down: the recovery below must go through the health
        # tracker's cool-off and probe, not just a lucky retry.
        transfer={"timeout_seconds": 1, "retries": 0, "down_after_failures": 1,
                  "down_seconds": 1},
        replication={"replicas": 2, "min_replicas": 1},
        api={"enabled": False},
    )  # fmt: skip
    daemon = Daemon(config, tmp_path / "agent.log")
    daemon.start()
    try:
        for server in servers:
            server.stop()  # every peer hangs
        (inbox / "patient.bin").write_bytes(os.urandom(50_000))

        def failing() -> bool:
            status = run_cli(config, "status", "--json", env=PW)
            report = json.loads(status.stdout)
            return any(f["path"] == "patient.bin" for f in report["extra"]["failing"])

        wait_for(failing, timeout=30, what="the file to show as failing in status")
        assert "patient.bin" not in vault_files(config)
        for server in servers:
            server.cont()
        wait_for(lambda: in_vault(config, inbox, ["patient.bin"]), timeout=40, what="retry")
        assert_restores(config, inbox, tmp_path, ["patient.bin"])
    finally:
        for server in servers:
            server.cont()
        daemon.stop()


def test_directory_rename_repoints_every_file(agent, tmp_path):
    daemon, config, inbox = agent
    (inbox / "proj" / "src").mkdir(parents=True)
    (inbox / "proj" / "src" / "main.py").write_text("print('hi')\n")
    (inbox / "proj" / "data.bin").write_bytes(os.urandom(200_000))
    old = ["proj/src/main.py", "proj/data.bin"]
    wait_for(lambda: in_vault(config, inbox, old), what="project stored")
    os.rename(inbox / "proj", inbox / "project")
    new = ["project/src/main.py", "project/data.bin"]
    wait_for(lambda: in_vault(config, inbox, new), what="renamed project")
    files = vault_files(config, deleted=True)
    assert all(files[p]["deleted"] for p in old)
    log = daemon.log.read_text()
    assert "moved project/src/main.py" in log and "moved project/data.bin" in log
    assert_restores(config, inbox, tmp_path, new)


def test_sigterm_within_ten_seconds_even_with_hung_peers(tmp_path, moto_peer_factory):
    servers = [moto_peer_factory() for _ in range(2)]
    config, inbox = init_vault(
        tmp_path, [s.endpoint for s in servers], "cvhang", PW,
        watch={"settle_seconds": 0.1},
        # A hung write would take 4 x 5 s to give up on its own.
        transfer={"timeout_seconds": 5, "retries": 3},
        api={"enabled": False},
    )  # fmt: skip
    daemon = Daemon(config, tmp_path / "agent.log")
    daemon.start()
    try:
        for server in servers:
            server.stop()
        (inbox / "stuck.bin").write_bytes(os.urandom(100_000))
        time.sleep(1.5)  # the worker is now blocked writing to a hung peer
        code, took = daemon.stop(signal.SIGTERM)
    finally:
        for server in servers:
            server.cont()
    assert code == 0 and took < 10, (code, took, daemon.log.read_text()[-2000:])
    # The change is still queued: the next start stores it.
    daemon.start()
    wait_for(lambda: in_vault(config, inbox, ["stuck.bin"]), what="stored after restart")
    daemon.stop()


def test_exec_hooks_get_a_minimal_environment_without_secrets(tmp_path, moto_peers):
    """The agent's environment holds the passphrase, peer credentials and the API token;
    a hook gets exactly PATH, HOME, the locale, TZ and what happened."""
    dumps = tmp_path / "hook-env.jsonl"
    hook = tmp_path / "dump_env.py"
    hook.write_text(
        "import json, os, sys\n"
        "with open(sys.argv[1], 'a') as f:\n"
        "    f.write(json.dumps(dict(os.environ)) + '\\n')\n"
    )
    config, inbox = init_vault(
        tmp_path, moto_peers.endpoints, unique_bucket(), PW,
        watch={"settle_seconds": 0.2, "rescan_seconds": 0},
        api={"enabled": False},
        flows=[{"match": "**", "exec": [sys.executable, str(hook), str(dumps)]}],
    )  # fmt: skip
    passphrase_file = tmp_path / "passphrase"
    passphrase_file.write_text(PW["CHUNKVAULT_PASSPHRASE"])
    agent_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CHUNKVAULT_", "LC_", "LANG")) and k not in ("HOME", "TZ")
    } | {
        "HOME": str(tmp_path / "home"),
        "LANG": "C.UTF-8",
        "LC_TIME": "C",
        "TZ": "UTC",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "CHUNKVAULT_PASSPHRASE_FILE": str(passphrase_file),
        "CHUNKVAULT_NEW_PASSPHRASE": "next secret",
        "CHUNKVAULT_API_TOKEN": "api-token-secret",
        "MY_APP_DB_PASSWORD": "hunter2",
    }
    daemon = Daemon(config, tmp_path / "agent.log", env=agent_env)
    daemon.start()
    try:
        (inbox / "sub").mkdir()
        (inbox / "sub" / "hooked.txt").write_text("run my hook\n")
        wait_for(lambda: dumps.exists() and dumps.read_text().strip(), what="the hook to run")
    finally:
        daemon.stop()

    seen = json.loads(dumps.read_text().splitlines()[0])
    assert seen == {
        "PATH": agent_env["PATH"],
        "HOME": str(tmp_path / "home"),
        "LANG": "C.UTF-8",
        "LC_TIME": "C",
        "TZ": "UTC",
        "CHUNKVAULT_PATH": str(inbox / "sub" / "hooked.txt"),
        "CHUNKVAULT_REL_PATH": "sub/hooked.txt",
        "CHUNKVAULT_EVENT": "stored",
    }


def _set_watch(config: Path, **watch: object) -> None:
    data = yaml.safe_load(config.read_text())
    data["watch"].update(watch)
    config.write_text(yaml.safe_dump(data))


def test_unreadable_dirs_are_warned_once_counted_and_picked_up_when_readable(tmp_path, moto_peers):
    """The agent runs with file permissions applying to it (root reads everything)."""
    if not permissions_apply(tmp_path):
        pytest.fail("cannot run the agent with file permissions applying to it (prctl refused)")
    port = free_port()
    config, inbox = init_vault(
        tmp_path, moto_peers.endpoints, unique_bucket(), PW,
        watch={"settle_seconds": 0.2, "rescan_seconds": 1},
        api={"listen": f"127.0.0.1:{port}", "token": "unreadable-token"},
    )  # fmt: skip
    (inbox / "locked" / "sub").mkdir(parents=True)
    (inbox / "locked" / "old.txt").write_text("stored while readable\n")
    assert run_cli(config, "push", env=PW).returncode == 0
    (inbox / "locked").chmod(0)
    daemon = Daemon(config, tmp_path / "agent.log", restricted=True)
    daemon.start()
    try:
        # Rescans every second: still one warning, and nothing in it is marked deleted.
        time.sleep(3.5)
        log = daemon.log.read_text()
        assert log.count("cannot read directory locked (permission denied)") == 1, log
        assert vault_files(config, deleted=True)["locked/old.txt"]["deleted"] is False
        report = json.loads(run_cli(config, "status", "--json", env=PW).stdout)
        assert report["extra"]["unreadable_dirs"] == 1
        assert report["extra"]["unreadable"] == ["locked"]
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/status",
            headers={"Authorization": "Bearer unreadable-token"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert json.loads(answer.read())["extra"]["unreadable_dirs"] == 1
    finally:
        code, _took = daemon.stop()
    assert code == 0, daemon.log.read_text()

    # No periodic rescan from here on: only the chmod itself (IN_ATTRIB) can reveal the dir.
    _set_watch(config, rescan_seconds=0)
    daemon.start()
    try:
        (inbox / "locked" / "new.txt").write_text("written while unreadable to the agent\n")
        (inbox / "locked" / "sub" / "deep.txt").write_text("deeper\n")
        (inbox / "locked").chmod(0o755)
        paths = ["locked/new.txt", "locked/sub/deep.txt", "locked/old.txt"]
        wait_for(lambda: in_vault(config, inbox, paths), timeout=15, what="the dir picked up")
        # Its subdirectories are watched now: a later change there is seen at once.
        (inbox / "locked" / "sub" / "later.txt").write_text("after the pick-up\n")
        wait_for(lambda: in_vault(config, inbox, ["locked/sub/later.txt"]), timeout=15,
                 what="a change in a subdirectory of the picked-up dir")  # fmt: skip
        wait_for(lambda: "directory locked is readable again" in daemon.log.read_text(),
                 timeout=15, what="the all-clear in the log")  # fmt: skip
        report = json.loads(run_cli(config, "status", "--json", env=PW).stdout)
        assert report["extra"]["unreadable_dirs"] == 0

        # A tree moved in with an unreadable (0000) and an unsearchable (0444) dir: warned
        # about at once, not when a rescan comes; no endless retries of files in them.
        outside = tmp_path / "outside"
        for name in ("noread", "nosearch"):
            (outside / name).mkdir(parents=True)
            (outside / name / "inside.txt").write_text("cannot be read by the agent\n")
        (outside / "ok.txt").write_text("readable\n")
        (outside / "noread").chmod(0)
        (outside / "nosearch").chmod(0o444)
        os.rename(outside, inbox / "moved")
        wait_for(lambda: in_vault(config, inbox, ["moved/ok.txt"]), timeout=15, what="ok.txt")
        wait_for(lambda: all(f"cannot read directory moved/{name} " in daemon.log.read_text()
                             for name in ("noread", "nosearch")),
                 timeout=15, what="warnings about the moved-in dirs")  # fmt: skip
        report = json.loads(run_cli(config, "status", "--json", env=PW).stdout)
        assert report["extra"]["unreadable"] == ["moved/noread", "moved/nosearch"]
        time.sleep(1)
        assert "inside.txt" not in daemon.log.read_text()  # no failed attempt, no retry
    finally:
        daemon.stop()
    assert_restores(config, inbox, tmp_path, [*paths, "locked/sub/later.txt", "moved/ok.txt"])


def test_deleting_the_state_dir_stops_the_agent_and_a_restart_stores_everything(
    tmp_path, moto_peers
):
    """`rm -rf state` under a running agent: it must not go on committing to a catalog no
    one can see. It stops with a clear message; the restart rebuilds from the peers."""
    config, inbox = init_vault(
        tmp_path, moto_peers.endpoints, unique_bucket(), PW,
        watch={"settle_seconds": 0.2, "rescan_seconds": 0},
        api={"enabled": False},
    )  # fmt: skip
    (inbox / "before.txt").write_text("stored before the state dir went away\n")
    daemon = Daemon(config, tmp_path / "agent.log")
    daemon.start()
    wait_for(lambda: in_vault(config, inbox, ["before.txt"]), what="the first file")
    shutil.rmtree(tmp_path / "state")
    (inbox / "after-state-rm.txt").write_text("written after the state dir was deleted\n")
    assert daemon.proc is not None
    code = daemon.proc.wait(timeout=10)
    log = daemon.log.read_text()
    assert code == 1, log
    assert (f"error: the state dir {tmp_path / 'state'} was changed under the running agent: "
            "catalog.db was deleted; it stopped") in log  # fmt: skip
    assert "start it again, or let a supervisor restart it" in log
    assert "Traceback" not in log

    daemon.start()  # as a supervisor would: the catalog is rebuilt from the peers
    try:
        paths = ["before.txt", "after-state-rm.txt"]
        wait_for(lambda: in_vault(config, inbox, paths), timeout=30, what="both files")
    finally:
        code, _took = daemon.stop()
    assert code == 0
    assert "catalog rebuilt from peers" in daemon.log.read_text()
    assert_restores(config, inbox, tmp_path, paths)


def vault_names(config: Path) -> dict[bytes, dict]:
    """`ls --json` by each file's exact name (bytes)."""
    result = run_cli(config, "ls", "--json", env=PW)
    assert result.returncode == 0, result.stderr
    return {
        base64.b64decode(e["path_b64"]) if "path_b64" in e else e["path"].encode(): e
        for e in json.loads(result.stdout)
    }


def test_names_that_are_not_utf8_reach_the_vault_and_logs_stay_one_line(tmp_path, moto_peers):
    """A Latin-1 name once broke every rescan and lost the inotify events read with it."""
    config, inbox = init_vault(
        tmp_path, moto_peers.endpoints, unique_bucket(), PW,
        watch={"settle_seconds": 0.3, "rescan_seconds": 1}, api={"enabled": False},
    )  # fmt: skip
    top = os.fsencode(inbox)
    files: dict[bytes, bytes] = {}

    def write(rel: bytes, data: bytes) -> None:
        os.makedirs(os.path.dirname(top + b"/" + rel), exist_ok=True)
        with open(top + b"/" + rel, "wb") as f:
            f.write(data)
        files[rel] = data

    write(b"before-caf\xe9.txt", b"there before the agent started\n")  # the startup scan
    write(b"old-\xff/inner.txt", b"in a directory that is not UTF-8\n")
    log = tmp_path / "agent.log"
    daemon = Daemon(config, log)
    daemon.start()
    try:
        write(b"live-caf\xe9.txt", b"written while the agent runs\n")  # inotify
        os.mkdir(top + b"/new-\xfe")  # a directory inotify must watch by its bytes
        write(b"new-\xfe/deeper-\xe9.bin", os.urandom(100_000))
        write(b"line\nbreak.txt", b"a newline in the name\n")
        write(b"plain.txt", b"read in the same batch as the others\n")
        os.rename(top + b"/before-caf\xe9.txt", top + b"/renamed-\xe9.txt")
        files[b"renamed-\xe9.txt"] = files.pop(b"before-caf\xe9.txt")

        wait_for(lambda: set(vault_names(config)) == set(files), what="every name stored")
        time.sleep(2.5)  # at least two periodic rescans over the odd names
    finally:
        code, _ = daemon.stop()
    assert code == 0
    text = log.read_text(errors="replace")
    assert "Traceback" not in text and "failed" not in text, text
    assert "not watching" not in text, text
    stored = [line for line in text.splitlines() if " stored " in line or " moved " in line]
    assert any(r"stored live-caf\xe9.txt" in line for line in stored), text
    assert any(r"stored line\nbreak.txt (" in line for line in stored), text  # one line

    out = tmp_path / "restored"
    result = run_cli(config, "restore", "--to", str(out), env=PW)
    assert result.returncode == 0, result.stderr
    for rel, data in files.items():
        with open(os.fsencode(out) + b"/" + rel, "rb") as f:
            assert f.read() == data, rel

"""`make run`'s demo: local peers + vault + agent come up; a file in ./inbox round-trips."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.cli import run_cli


@pytest.mark.slow
def test_demo_comes_up_and_a_dropped_file_restores(tmp_path: Path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "chunkvault.demo"], cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    output = []
    try:
        deadline = time.monotonic() + 60
        while not any("/upload" in line for line in output):  # the tour's last line
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "".join(output)
            output.append(line)
            assert time.monotonic() < deadline, "".join(output)
        text = "".join(output)
        assert "DEMO ONLY" in text and "Ctrl-C" in text
        config = tmp_path / ".demo" / "chunkvault.yaml"
        env = {"CHUNKVAULT_PASSPHRASE_FILE": str(tmp_path / ".demo" / "passphrase")}
        inbox = tmp_path / "inbox"
        (inbox / "a" / "b").mkdir(parents=True)
        (inbox / "a" / "b" / "dropped.bin").write_bytes(os.urandom(3 * 1024 * 1024))
        # The agent watches ./inbox: no push needed.
        deadline = time.monotonic() + 30
        while "a/b/dropped.bin" not in run_cli(config, "ls", env=env, cwd=tmp_path).stdout:
            assert time.monotonic() < deadline, "dropped file never reached the vault"
            time.sleep(0.3)
        out = tmp_path / "restored"
        result = run_cli(config, "restore", "--to", str(out), env=env, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert (out / "a" / "b" / "dropped.bin").read_bytes() == (
            inbox / "a" / "b" / "dropped.bin"
        ).read_bytes()
    finally:
        if proc.poll() is None:
            # Ctrl-C in a terminal: SIGINT to the whole process group, the demo and its
            # agent (which the demo then sends a second one). Our own session: only what
            # this test started.
            os.killpg(proc.pid, signal.SIGINT)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # our own session: only what we started
            raise
        rest = proc.stdout.read()
        proc.stdout.close()
    assert code == 0, rest
    assert "demo stopped" in rest
    assert "Traceback" not in rest and "Error" not in rest, rest  # the agent's output too

"""`make run`'s demo: local peers + vault + agent come up; a file in ./inbox round-trips;
the tour (README and printed) runs as written and leaves the agent working."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from support.cli import run_cli

REPO = Path(__file__).resolve().parents[2]


def readme_tour() -> str:
    """The shell block of the README's "60-second tour"."""
    text = (REPO / "README.md").read_text()
    match = re.search(r"## 60-second tour.*?```sh\n(.*?)```", text, re.S)
    assert match, "README has no tour block"
    return match.group(1)


def printed_tour(output: str) -> str:
    """The commands `make run` prints after "Try, in another terminal"."""
    lines = output.split("Try, in another terminal in this directory:\n", 1)[1].splitlines()
    return "\n".join(line[2:] for line in lines if line.startswith("  ")) + "\n"


def run_tour(script: str, cwd: Path, wait: Callable[[], None]) -> None:
    """Run a tour as a user would, from ``cwd`` (its /tmp paths go there), calling ``wait``
    where the user waits ("a second later") before the restore step."""
    lines = script.replace("/tmp/", f"{cwd}/tour-").replace("\\\n", "").splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(".venv") and "restore" in line)
    for part in (lines[:at], [lines[0], *lines[at:]]):  # lines[0]: the export line
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", "\n".join(part)], cwd=cwd,
                                capture_output=True, text=True, timeout=120)  # fmt: skip
        assert result.returncode == 0, (part, result.stdout, result.stderr)
        if part[-1] != lines[-1]:
            wait()


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

        # The tours, as written: they must restore "from the peers alone" without breaking
        # the running agent (deleting its state dir did: it logged files as stored that
        # `ls` never showed).
        (tmp_path / ".venv").symlink_to(Path(sys.executable).parent.parent)
        shutil.copytree(REPO / "docs", tmp_path / "docs")
        docs = [p.relative_to(tmp_path).as_posix() for p in (tmp_path / "docs").rglob("*")
                if p.is_file()]  # fmt: skip

        def docs_stored() -> None:
            deadline = time.monotonic() + 30
            while not set(docs) <= set(run_cli(config, "ls", env=env, cwd=tmp_path).stdout
                                       .split()):  # fmt: skip
                assert proc.poll() is None, "the demo stopped during the tour"
                assert time.monotonic() < deadline, "the tour's files never reached the vault"
                time.sleep(0.3)

        run_tour(readme_tour(), tmp_path, docs_stored)
        shutil.rmtree(tmp_path / ".demo" / "new-machine", ignore_errors=True)  # a fresh demo
        run_tour(printed_tour(text), tmp_path, docs_stored)
        (inbox / "after-the-tour.txt").write_text("the agent still works\n")
        deadline = time.monotonic() + 30
        while "after-the-tour.txt" not in run_cli(config, "ls", env=env, cwd=tmp_path).stdout:
            assert proc.poll() is None, "the demo stopped during the tour"
            assert time.monotonic() < deadline, "a file written after the tour never shows"
            time.sleep(0.3)
        assert proc.poll() is None
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


def _child_running(parent: int, *args: str) -> int:
    """The PID of ``parent``'s child whose command line ends with ``args``."""
    for task in Path(f"/proc/{parent}/task").iterdir():
        for pid in (task / "children").read_text().split():
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
            if [part.decode() for part in cmdline[-len(args) :]] == list(args):
                return int(pid)
    raise AssertionError(f"no child of {parent} runs {args}")


@pytest.mark.slow
def test_an_agent_stopped_before_the_demo_notices_its_own_ctrl_c_is_a_clean_stop(
    tmp_path: Path,
):
    """Ctrl-C reaches the demo and its agent at once, and the agent may be gone first (it
    leaves with os._exit): that is a stop, exit 0, not "the agent failed"."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "chunkvault.demo"], cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    output: list[str] = []
    try:
        deadline = time.monotonic() + 60
        # The tour, and the agent's "watching" line: it is up.
        while not ("/upload" in "".join(output) and "chunkvault.run: vault" in "".join(output)):
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "".join(output)
            output.append(line)
            assert time.monotonic() < deadline, "".join(output)
        # The agent alone gets the Ctrl-C, as when it wins the race for it.
        os.kill(_child_running(proc.pid, "-m", "chunkvault", "run"), signal.SIGINT)
        code = proc.wait(timeout=30)
        rest = proc.stdout.read()
        assert code == 0, rest
        assert "demo stopped" in rest
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # our own session: only what we started
            proc.wait()
        proc.stdout.close()

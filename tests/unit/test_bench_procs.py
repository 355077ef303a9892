"""Measuring a child process: its own peak RSS (not the harness's), its exit, a timeout."""

from __future__ import annotations

import sys

import pytest

from chunkvault.bench.procs import CommandFailed, clean_env, run_measured, vm_hwm

MiB = 1024 * 1024
ALLOCATE = "import time; b = bytearray({n}); b[::4096] = b'x' * len(b[::4096]); time.sleep(0.3)"


def test_peak_rss_is_the_childs_own() -> None:
    big = run_measured([sys.executable, "-c", ALLOCATE.format(n=200 * MiB)]).check("big")
    small = run_measured([sys.executable, "-c", ALLOCATE.format(n=MiB)]).check("small")
    assert big.peak_rss >= 200 * MiB
    assert small.peak_rss < 100 * MiB  # not the 200 MiB before it, nor pytest's own size
    assert big.returncode == 0 and big.seconds > 0


def test_failure_is_reported_with_stderr() -> None:
    code = "import sys; print('what went wrong', file=sys.stderr); sys.exit(3)"
    measured = run_measured([sys.executable, "-c", code])
    assert measured.returncode == 3
    with pytest.raises(CommandFailed, match="tool exited 3: what went wrong"):
        measured.check("tool")


def test_timeout_kills_the_child() -> None:
    with pytest.raises(CommandFailed, match="did not finish"):
        run_measured([sys.executable, "-c", "import time; time.sleep(60)"], timeout=0.5)


def test_vm_hwm_of_a_missing_process_is_none() -> None:
    assert vm_hwm(2**22 + 12345) is None  # above the default pid_max


def test_clean_env_drops_chunkvault_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHUNKVAULT_PASSPHRASE", "secret")
    env = clean_env({"X": "1"})
    assert "CHUNKVAULT_PASSPHRASE" not in env and env["X"] == "1"
    assert "127.0.0.1" in env["NO_PROXY"]


def test_peak_rss_counts_the_processes_the_child_started() -> None:
    """A program with a helper process (chunkvault's seal workers) is measured whole."""
    helper = ALLOCATE.format(n=150 * MiB)
    parent = (
        "import subprocess, sys, time\n"
        f"p = subprocess.Popen([sys.executable, '-c', {helper!r}])\n"
        "p.wait()\n"
    )
    measured = run_measured([sys.executable, "-c", parent]).check("parent")
    assert measured.peak_rss >= 150 * MiB

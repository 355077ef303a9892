"""Run the `chunkvault` CLI as a subprocess and measure its peak memory (RSS).

``os.wait4`` returns the resource usage of exactly that child, so other processes the test
session started (moto servers, earlier CLI runs) cannot blur the figure, as they would in
``getrusage(RUSAGE_CHILDREN)``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import threading
from pathlib import Path

from support.cli import CLI


def run_cli_measured(
    config: Path, *args: str, env: dict[str, str], timeout: float = 120
) -> tuple[subprocess.CompletedProcess[str], int]:
    """Like ``support.cli.run_cli``; also returns the child's peak RSS in bytes."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CHUNKVAULT_")} | env
    command = [CLI, "--config", str(config), *args]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=full_env
        )
        lock = threading.Lock()
        state = {"reaped": False, "killed": False}

        def expire() -> None:
            with lock:  # only while unreaped: the PID is still our child's
                if not state["reaped"]:
                    os.kill(proc.pid, signal.SIGKILL)
                    state["killed"] = True

        timer = threading.Timer(timeout, expire)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
            with lock:
                state["reaped"] = True
                proc.returncode = os.waitstatus_to_exitcode(status)
        finally:
            timer.cancel()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if state["killed"]:
        raise subprocess.TimeoutExpired(command, timeout, stdout, stderr)
    result = subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)
    return result, usage.ru_maxrss * 1024  # Linux reports KiB

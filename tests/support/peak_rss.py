"""Run the `chunkvault` CLI as a subprocess and measure its peak memory (RSS) and, with
:func:`run_cli_usage`, its resource usage (``ru_minflt``: fresh pages it faulted in).

Not ``ru_maxrss``: Linux carries a process's high-water mark across ``exec``, so a child
forked from a large pytest process reports at least pytest's RSS (seen: 360 MiB late in
the suite for a restore that peaked at 90 MiB). The child reports ``VmHWM`` of its own
address space (``/proc/self/status``, reset by ``exec``) at exit instead: the CLI runs
through a two-line wrapper around the same ``main`` the installed command calls.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

_WRAPPER = """
import atexit, os, sys
def _report():
    with open("/proc/self/status") as status:
        hwm = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    with open(os.environ["CV_TEST_PEAK_FILE"], "w") as out:
        out.write(hwm)
atexit.register(_report)
from chunkvault.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def run_cli_measured(
    config: Path, *args: str, env: dict[str, str], timeout: float = 120
) -> tuple[subprocess.CompletedProcess[str], int]:
    """Like ``support.cli.run_cli``; also returns the child's peak RSS in bytes."""
    result, peak, _ = run_cli_usage(config, *args, env=env, timeout=timeout)
    return result, peak


def run_cli_usage(
    config: Path, *args: str, env: dict[str, str], timeout: float = 120
) -> tuple[subprocess.CompletedProcess[str], int, resource.struct_rusage]:
    """:func:`run_cli_measured`, plus the child's ``rusage`` (from ``wait4``)."""
    peak_file = tempfile.NamedTemporaryFile(delete=False)  # noqa: SIM115 - read after exit
    peak_file.close()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CHUNKVAULT_")} | env
    full_env["CV_TEST_PEAK_FILE"] = peak_file.name
    command = [sys.executable, "-c", _WRAPPER, "--config", str(config), *args]
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
    try:
        peak_kib = int(Path(peak_file.name).read_text() or 0)
    finally:
        os.unlink(peak_file.name)
    return result, peak_kib * 1024, usage

"""Run a child process and measure its wall time and peak RSS.

Peak RSS is the child's own ``VmHWM`` (``/proc/PID/status``), plus that of each process it
started (summed: their peaks need not coincide, so this never understates), sampled every
:data:`SAMPLE_SECONDS` while it runs. Not ``ru_maxrss`` from ``wait4``: Linux carries the
high-water mark of the address space a child had before ``exec`` (a copy of ours) into
it, so a small tool forked from a large harness would report the harness's size.
``VmHWM`` belongs to the program's own address space and only grows, so sampling misses
at most the growth of the last interval before exit. Works for any program (restic is Go).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

SAMPLE_SECONDS = 0.01


@dataclass(frozen=True)
class Measured:
    command: list[str]
    returncode: int
    seconds: float
    peak_rss: int  # bytes
    stdout: str
    stderr: str

    def check(self, what: str) -> Measured:
        """Raise :class:`CommandFailed` with the tail of stderr unless it exited 0."""
        if self.returncode != 0:
            tail = (self.stderr or self.stdout).strip().splitlines()[-5:]
            raise CommandFailed(f"{what} exited {self.returncode}: {' | '.join(tail)}")
        return self


class CommandFailed(RuntimeError):
    """A measured command that did not succeed: its numbers mean nothing."""


def vm_hwm(pid: int) -> int | None:
    """The process's peak resident set in bytes, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None  # a zombie has no address space (no VmHWM line)


def descendants(pid: int) -> list[int]:
    """The PIDs of ``pid``'s children, theirs, and so on (from /proc; [] once gone)."""
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children", "rb") as f:
                    kids = [int(k) for k in f.read().split()]
            except (OSError, ValueError):
                continue
            found += kids
            todo += kids
    return found


def run_measured(
    command: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 3600,
) -> Measured:
    """Run ``command`` to completion; output goes to temp files (a pipe nobody reads could
    fill up and stall the child, which would be measured as slowness)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(
            list(command), stdin=subprocess.DEVNULL, stdout=out, stderr=err,
            env=dict(env) if env is not None else None, cwd=cwd,
        )  # fmt: skip
        peak = 0
        # A program's own processes count too (chunkvault's seal workers): each one's
        # high-water mark as last seen, summed with the program's (conservative: their
        # peaks need not coincide).
        helpers: dict[int, int] = {}
        try:
            while proc.poll() is None:
                hwm = vm_hwm(proc.pid)  # our unreaped child: the PID cannot be reused yet
                for pid in descendants(proc.pid):
                    helper = vm_hwm(pid)
                    if helper is not None:
                        helpers[pid] = max(helpers.get(pid, 0), helper)
                if hwm is not None:
                    peak = max(peak, hwm + sum(helpers.values()))
                if time.perf_counter() - start > timeout:
                    proc.kill()
                    proc.wait()
                    raise CommandFailed(f"{command[0]} did not finish in {timeout:.0f} s")
                time.sleep(SAMPLE_SECONDS)
        except BaseException:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            raise
        seconds = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        return Measured(
            list(command), proc.returncode, seconds, peak,
            out.read().decode(errors="replace"), err.read().decode(errors="replace"),
        )  # fmt: skip


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Our environment without CHUNKVAULT_* (the child gets exactly what we pass) and with
    loopback never proxied."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHUNKVAULT_")}
    for var in ("NO_PROXY", "no_proxy"):
        env[var] = ",".join(filter(None, ["127.0.0.1,localhost", os.environ.get(var)]))
    return env | dict(extra or {})

"""Change-to-durable latency under ``chunkvault run``.

Method: the agent logs one line per file it has stored (``stored <path> (...)``, JSON
logs, millisecond timestamps), after the file's chunks and manifest are on the peers and
its version is committed; with ``min_replicas = replicas`` that is "durable at R". We
write N small files into the watched tree as one burst, take the wall clock right after
each ``close()``, and pair each file with its log line: latency = log time - close time
(same clock, same machine). Settling (``watch.settle_seconds``) is part of it, on
purpose: it is what a user waits for. A warm-up file, written and waited for first,
makes sure the agent is watching before the clock starts. Afterwards ``chunkvault ls``
must list every file (the log line is checked against the vault). The idle variant
(:func:`measure_idle`) writes one file at a time into an otherwise quiet tree, seconds
apart: the latency a lone small file sees when nothing else fills its pack."""

from __future__ import annotations

import json
import math
import random
import signal
import subprocess
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chunkvault.bench.data import text_block
from chunkvault.bench.e2e import VaultUnderTest, cli_command


class AgentBenchError(RuntimeError):
    """The agent did not start, or did not store the files in time."""


def parse_stored(lines: Iterable[str]) -> dict[str, float]:
    """Path -> epoch seconds of the first ``stored`` log line for it (JSON log lines;
    anything else is skipped). Pure."""
    stored: dict[str, float] = {}
    for line in lines:
        try:
            entry = json.loads(line)
            message, when = entry["message"], entry["time"]
        except (ValueError, KeyError, TypeError):
            continue
        if not isinstance(message, str) or not message.startswith("stored "):
            continue
        path = message[len("stored ") :]
        cut = path.rfind(" (")
        path = path[:cut] if cut >= 0 else path
        try:
            at = datetime.strptime(when, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        except (ValueError, TypeError):
            continue
        stored.setdefault(path, at.timestamp())
    return stored


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (p99 of 200 values is the 198th smallest). Pure."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class AgentRun:
    """One ``chunkvault run`` child, its stderr in a file; stopped by its PID."""

    vault: VaultUnderTest
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "wb") as err:
            self.process = subprocess.Popen(
                [*cli_command(), "--config", str(self.vault.config), "run"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                env=self.vault.env,
            )  # fmt: skip

    def stored(self) -> dict[str, float]:
        with open(self.log, errors="replace") as f:
            return parse_stored(f)

    def wait_for(self, paths: set[str], timeout: float) -> dict[str, float]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.stored()
            if paths <= found.keys() or time.monotonic() > deadline:
                return found
            if self.process is not None and self.process.poll() is not None:
                tail = self.log.read_text(errors="replace").strip().splitlines()[-3:]
                raise AgentBenchError(f"chunkvault run exited {self.process.returncode}: {tail}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)  # our child, not yet reaped: its PID
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextmanager
def running_agent(
    vault: VaultUnderTest, inbox: Path, log: Path, warm_up: str = "warm-up.txt"
) -> Iterator[AgentRun]:
    """``chunkvault run`` on ``vault`` watching ``inbox``, yielded once it has stored a
    warm-up file (so it is watching before any clock starts); stopped afterwards."""
    agent = AgentRun(vault, log)
    agent.start()
    try:
        (inbox / warm_up).write_bytes(b"warm up\n")
        if warm_up not in agent.wait_for({warm_up}, 120):
            raise AgentBenchError(
                "the agent did not store a warm-up file within 120 s (no JSON log line "
                f"'stored {warm_up}' in {agent.log})"
            )
        yield agent
    finally:
        agent.stop()


def check_listed(vault: VaultUnderTest, paths: set[str]) -> None:
    """The log said stored: the vault must agree (``chunkvault ls``)."""
    listed = vault.run("ls", "--json").check("chunkvault ls")
    in_vault = {entry["path"] for entry in json.loads(listed.stdout)}
    if not paths <= in_vault:
        raise AgentBenchError(f"{len(paths - in_vault)} logged files are not in `ls`")


def measure(vault: VaultUnderTest, inbox: Path, workdir: Path, files: int, seed: int = 31,
            timeout: float = 300) -> dict[str, float | int]:  # fmt: skip
    """Start the agent on an initialised vault watching ``inbox``, write ``files`` small
    text files (4..64 KiB) as a burst, and return p50/p99/max latency in seconds."""
    rng = random.Random(seed)
    burst = inbox / "burst"
    burst.mkdir(parents=True, exist_ok=True)  # before the agent starts: watched from the start
    closed: dict[str, float] = {}
    with running_agent(vault, inbox, workdir / "agent.log") as agent:
        for i in range(files):
            rel = f"burst/small-{i:04d}.txt"
            with open(inbox / rel, "wb") as out:
                out.write(text_block(rng, rng.randint(4096, 65536)))
            closed[rel] = time.time()  # right after close(): IN_CLOSE_WRITE is queued
        found = agent.wait_for(set(closed), timeout)
    missing = sorted(set(closed) - found.keys())
    if missing:
        raise AgentBenchError(
            f"{len(missing)} of {files} files not stored within {timeout:.0f} s "
            f"(first: {missing[0]})"
        )
    check_listed(vault, set(closed))
    latencies = [found[rel] - closed[rel] for rel in closed]
    return {
        "files": files,
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "max": max(latencies),
        "all_stored_after": max(found[rel] for rel in closed) - min(closed.values()),
        "latencies": sorted(latencies),
    }


def measure_idle(vault: VaultUnderTest, inbox: Path, workdir: Path, files: int,
                 gap: float, seed: int = 32, timeout: float = 120) -> dict[str, Any]:  # fmt: skip
    """One small file (6..10 KiB of text) at a time into a tree where nothing else
    happens: write it, wait until it is stored, stay idle ``gap`` seconds, write the
    next. Idle is the case a pack flush timer exists for: no other file fills the pack,
    so only the timer sends it. Latencies in seconds, each close -> stored."""
    rng = random.Random(seed)
    (inbox / "idle").mkdir(parents=True, exist_ok=True)  # watched from the start
    latencies: list[float] = []
    names: set[str] = set()
    with running_agent(vault, inbox, workdir / "agent-idle.log", "warm-up-idle.txt") as agent:
        for i in range(files):
            time.sleep(gap)  # whatever the previous file started (a pack timer) is over
            rel = f"idle/one-{i:02d}.txt"
            with open(inbox / rel, "wb") as out:
                out.write(text_block(rng, rng.randint(6 * 1024, 10 * 1024)))
            closed = time.time()
            found = agent.wait_for({rel}, timeout)
            if rel not in found:
                raise AgentBenchError(f"{rel} was not stored within {timeout:.0f} s of its close")
            latencies.append(found[rel] - closed)
            names.add(rel)
    check_listed(vault, names)
    return {"files": files, "gap_seconds": gap, "max": max(latencies), "latencies": latencies}


__all__ = ["AgentBenchError", "measure", "measure_idle", "parse_stored", "percentile"]

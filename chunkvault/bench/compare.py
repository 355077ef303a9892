"""``make bench``: chunkvault beside raw boto3 ceilings, restic and rclone, in one run on
fresh local moto peers and the same data, written to docs/benchmarks.md with charts.

    python -m chunkvault.bench.compare [--scale 0.1] [--out docs/benchmarks.md]
    python -m chunkvault.bench.compare --render docs/benchmarks/results.json  # redraw only

Every tool gets peers of its own, started for it and stopped after it (moto keeps objects
in memory and never gives memory back, so a tool measured after another would run
against a fuller, slower server). Every restore is verified byte-identical, with mode
and mtime, before its time counts."""

from __future__ import annotations

import argparse
import compileall
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from chunkvault import __version__
from chunkvault.bench import agentlat, charts, tools
from chunkvault.bench.data import (
    Dataset,
    MiB,
    VerifyError,
    big_file,
    random_tree,
    small_tree,
    text_tree,
    tree_state,
    verify_tree,
)
from chunkvault.bench.e2e import VaultUnderTest
from chunkvault.bench.procs import CommandFailed, Measured
from chunkvault.bench.report import Row, median_rows, render_markdown
from chunkvault.localpeers import DUMMY_CREDENTIALS, moto_available, start_servers

PEERS = 3
REPLICAS = 2
CONCURRENCY = 8
SETTLE_SECONDS = 1.0
CHUNKING = {"min_size": "1MiB", "avg_size": "4MiB", "max_size": "8MiB"}
CV_BUCKET = "chunkvault"
# Issue 12: how long the agent may hold a lone small file's open pack. Written into the
# config only where this chunkvault knows the setting; elsewhere it is the assumed default
# the idle-latency target is judged by.
PACK_FLUSH_SECONDS = 2.0
# The small-file runs take seconds and swing by a third from run to run on a shared
# machine (one run measured push at 0.57x restic, the next at 1.06x): each tool runs them
# this many times, taking turns, and the median round is the figure.
SMALL_ROUNDS = 3
IDLE_GAP_SECONDS = 3.0  # between the idle files: longer than a pack flush, so each is alone
PARTS = ("random", "text", "big", "small", "many", "agent", "idle")


def pack_flush_configurable() -> bool:
    """Whether the installed chunkvault has ``chunking.pack_flush_seconds`` (issue 12)."""
    from chunkvault.config import ChunkingConfig

    return "pack_flush_seconds" in ChunkingConfig.model_fields


@contextmanager
def fresh_peers(count: int = PEERS) -> Iterator[list[str]]:
    """New moto servers on loopback for one tool; stopped (by PID) when it is done."""
    servers = start_servers(count)
    try:
        yield [s.endpoint for s in servers]
    finally:
        for server in servers:
            server.shutdown()


def cv_config(
    workdir: Path, endpoints: list[str], watch: Path, replicas: int, min_replicas: int,
    erasure: tuple[int, int] | None = None,
) -> Path:  # fmt: skip
    """A chunkvault config for these peers: the issue's chunking (1/4/8 MiB) and
    concurrency (8), JSON logs (the agent benchmark reads them), no API, and the pack
    flush time said explicitly where the installed chunkvault has it."""
    workdir.mkdir(parents=True, exist_ok=True)
    chunking: dict[str, Any] = dict(CHUNKING)
    if pack_flush_configurable():
        chunking["pack_flush_seconds"] = PACK_FLUSH_SECONDS
    data = {
        "vault": {"id": "bench", "state_dir": str(workdir / "state")},
        "watch": {"path": str(watch), "settle_seconds": SETTLE_SECONDS},
        "chunking": chunking,
        "transfer": {"concurrency": CONCURRENCY},
        "replication": {"replicas": replicas, "min_replicas": min_replicas}
        | ({"erasure": {"data": erasure[0], "parity": erasure[1]}} if erasure else {}),
        "peers": [
            {"name": f"peer-{i}", "endpoint": e, "bucket": CV_BUCKET, **DUMMY_CREDENTIALS}
            for i, e in enumerate(endpoints)
        ],
        "api": {"enabled": False},
        "log": {"level": "info", "format": "json"},
    }
    for endpoint in endpoints:
        tools.create_bucket(endpoint, CV_BUCKET)
    path = workdir / "chunkvault.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _row(rid: str, tool: str, operation: str, replicas: int | None, seconds: float,
         measured: Measured | None = None, stored: int | None = None,
         verified: bool | None = None, objects: int | None = None) -> Row:  # fmt: skip
    return {"id": rid, "tool": tool, "operation": operation, "replicas": replicas,
            "seconds": seconds, "peak_rss": measured.peak_rss if measured else None,
            "stored": stored, "objects": objects, "verified": verified}  # fmt: skip


def usage(endpoints: list[str], bucket: str) -> tuple[int, int]:
    """Bytes and objects in ``bucket``, summed over the peers (R=2 counts twice): every
    object the tool left there (for chunkvault the keyring too)."""
    found = [tools.bucket_usage(e, bucket) for e in endpoints]
    return sum(b for b, _ in found), sum(n for _, n in found)


def ceilings(ds: Dataset, work: Path, replicas: tuple[int, ...]) -> list[Row]:
    files = tools.files_under(ds.root)
    rows = []
    for r in replicas:
        with fresh_peers() as endpoints:
            for e in endpoints:
                tools.create_bucket(e, "raw")
            put = tools.ceiling_put(endpoints, "raw", ds.root, files, r, CONCURRENCY)
            rows.append(_row(f"ceiling_put_r{r}", "raw boto3", f"put, {CONCURRENCY} in flight",
                             r, put))  # fmt: skip
            if r == 1:
                get = tools.ceiling_get(endpoints, "raw", ds.root, files, 1, CONCURRENCY)
                rows.append(_row("ceiling_get", "raw boto3", f"get, {CONCURRENCY} in flight",
                                 1, get))  # fmt: skip
    return rows


def chunkvault_rows(ds: Dataset, work: Path, expected: Any, *, nochange: bool = True) -> list[Row]:
    with fresh_peers() as endpoints:
        vault = VaultUnderTest(cv_config(work / "cv", endpoints, ds.root, REPLICAS, 1))
        vault.init()
        push = vault.push()
        rows = [_row("cv_push", "chunkvault", "push", REPLICAS, push.seconds, push)]
        if nochange:
            again = vault.push()
            rows.append(_row("cv_nochange", "chunkvault", "push, nothing changed", REPLICAS,
                             again.seconds, again))  # fmt: skip
        rows[0]["stored"], rows[0]["objects"] = usage(endpoints, CV_BUCKET)
        target = work / "cv-restored"
        restore = vault.restore(target)
        verify_tree(expected, target, "chunkvault restore")
        shutil.rmtree(target)
        rows.append(_row("cv_restore", "chunkvault", "restore", None, restore.seconds, restore,
                         verified=True))  # fmt: skip
    shutil.rmtree(work / "cv", ignore_errors=True)
    return rows


def chunkvault_writer_rows(ds: Dataset, work: Path, expected: Any) -> list[Row]:
    """The same push from a write-only host (a writer credential and no passphrase: each
    data key and batch sealed to the vault key with HPKE), then the owner's restore of it
    (each data key opened with the vault's private key)."""
    tool = "chunkvault, write-only host"
    with fresh_peers() as endpoints:
        config = cv_config(work / "cvw", endpoints, ds.root, REPLICAS, 1)
        owner = VaultUnderTest(config)
        owner.init()
        credential = work / "cvw" / "writer.cred"
        owner.run("key", "writer-credential", "--out", str(credential)).check(
            "chunkvault key writer-credential"
        )
        data = yaml.safe_load(config.read_text())
        data["vault"]["state_dir"] = str(work / "cvw" / "host-state")
        data["keys"] = {"writer_credential_file": str(credential)}
        host_config = work / "cvw" / "host.yaml"
        host_config.write_text(yaml.safe_dump(data, sort_keys=False))
        push = VaultUnderTest(host_config, write_only=True).push()
        rows = [_row("cvw_push", tool, "push", REPLICAS, push.seconds, push)]
        rows[0]["stored"], rows[0]["objects"] = usage(endpoints, CV_BUCKET)
        target = work / "cvw-restored"
        restore = owner.restore(target)
        verify_tree(expected, target, "chunkvault restore of a write-only host's push")
        shutil.rmtree(target)
        rows.append(_row("cvw_restore", tool, "restore (by the owner)", None, restore.seconds,
                         restore, verified=True))  # fmt: skip
    shutil.rmtree(work / "cvw", ignore_errors=True)
    return rows


#: The erasure rows: 3+2 over five peers, beside R=3 whole copies over the same five (both
#: survive any two lost peers).
ERASURE = (3, 2)
ERASURE_PEERS = 5


def chunkvault_redundancy_rows(
    ds: Dataset, work: Path, expected: Any, erasure: tuple[int, int] | None
) -> list[Row]:
    """Push and restore over five peers with erasure coding (``erasure``) or with R =
    parity + 1 whole copies; stored bytes per plaintext byte is the figure."""
    copies = ERASURE[1] + 1
    tool = (f"chunkvault, erasure {erasure[0]}+{erasure[1]}" if erasure
            else f"chunkvault, R={copies}")  # fmt: skip
    rid = "cvec" if erasure else "cvr3"
    with fresh_peers(ERASURE_PEERS) as endpoints:
        config = cv_config(work / rid, endpoints, ds.root, copies, 1, erasure)
        vault = VaultUnderTest(config)
        vault.init()
        push = vault.push()
        rows = [_row(f"{rid}_push", tool, f"push ({ERASURE_PEERS} peers)", copies, push.seconds,
                     push)]  # fmt: skip
        rows[0]["stored"], rows[0]["objects"] = usage(endpoints, CV_BUCKET)
        target = work / f"{rid}-restored"
        restore = vault.restore(target)
        verify_tree(expected, target, f"{tool} restore")
        shutil.rmtree(target)
        rows.append(_row(f"{rid}_restore", tool, "restore", None, restore.seconds, restore,
                         verified=True))  # fmt: skip
    shutil.rmtree(work / rid, ignore_errors=True)
    return rows


def chunkvault_many_rows(ds: Dataset, work: Path) -> list[Row]:
    """Push only (its peak RSS is the figure), checked by ``ls --json`` listing every file:
    a restore of this many files would double the run for no new figure."""
    with fresh_peers() as endpoints:
        vault = VaultUnderTest(cv_config(work / "cv-many", endpoints, ds.root, REPLICAS, 1))
        vault.init()
        push = vault.push()
        stored, objects = usage(endpoints, CV_BUCKET)
        listed = vault.run("ls", "--json").check("chunkvault ls")
    shutil.rmtree(work / "cv-many", ignore_errors=True)
    count = len(json.loads(listed.stdout))
    if count != ds.files:
        raise VerifyError(f"chunkvault ls --json lists {count} files after pushing {ds.files}")
    return [
        _row("cv_push", "chunkvault", "push", REPLICAS, push.seconds, push, stored,
             objects=objects),
        _row("cv_ls", "chunkvault", f"ls --json ({count:,} files listed)", None, listed.seconds,
             listed, verified=True),
    ]  # fmt: skip


def restic_rows(ds: Dataset, work: Path, expected: Any) -> list[Row]:
    with fresh_peers(1) as (endpoint,):
        restic = tools.Restic(endpoint, "restic", work / "restic-cache", CONCURRENCY)
        restic.init()
        backup = restic.backup(ds.root)
        stored, objects = tools.bucket_usage(endpoint, "restic")
        # Its fixed cost (key derivation, lock, index, snapshot), as chunkvault's
        # no-change push shows its own: what is left is the time per file.
        again = restic.backup(ds.root)
        target = work / "restic-restored"
        restore = restic.restore(target)
        verify_tree(expected, target, "restic restore")
        shutil.rmtree(target)
    shutil.rmtree(work / "restic-cache", ignore_errors=True)
    return [
        _row("restic_backup", "restic", "backup", 1, backup.seconds, backup, stored,
             objects=objects),
        _row("restic_nochange", "restic", "backup, nothing changed", 1, again.seconds, again),
        _row("restic_restore", "restic", "restore", None, restore.seconds, restore,
             verified=True),
    ]  # fmt: skip


def rclone_rows(ds: Dataset, work: Path) -> list[Row]:
    with fresh_peers(1) as (endpoint,):
        copy = tools.rclone_copy(endpoint, "rclone", ds.root, CONCURRENCY, work)
        stored, objects = tools.bucket_usage(endpoint, "rclone")
    if stored != ds.bytes:
        raise VerifyError(f"rclone copy stored {stored} bytes of {ds.bytes}")
    return [_row("rclone_copy", "rclone", f"copy, --transfers {CONCURRENCY}", 1, copy.seconds,
                 copy, stored, objects=objects)]  # fmt: skip


def measure_dataset(
    key: str, label: str, ds: Dataset, work: Path, steps: list[Callable[[], list[Row]]],
    log: Callable[[str], None], rounds: int = 1,
) -> dict[str, Any]:  # fmt: skip
    """Run the steps (each on fresh peers) ``rounds`` times, the tools taking turns, and
    keep each figure's median round (see ``report.median_rows``)."""
    measured: list[list[Row]] = []
    errors: list[str] = []
    for _ in range(rounds):
        rows: list[Row] = []
        for step in steps:
            started = time.perf_counter()
            try:
                rows += step()
            except (CommandFailed, VerifyError, agentlat.AgentBenchError, tools.ToolMissing,
                    RuntimeError) as exc:  # fmt: skip
                errors.append(f"{key}: {exc}")
            log(f"  {key}: {getattr(step, '__name__', 'step')} "
                f"{time.perf_counter() - started:.1f}s")  # fmt: skip
        measured.append(rows)
    return {"label": label, "files": ds.files, "bytes": ds.bytes, "rounds": rounds,
            "rows": median_rows(measured), "errors": list(dict.fromkeys(errors))}  # fmt: skip


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(
                (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu
            )
        with open("/proc/meminfo") as f:
            mem_kib = int(next(ln.split()[1] for ln in f if ln.startswith("MemTotal")))
    except (OSError, StopIteration, ValueError):
        mem_kib = 0
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=Path(__file__).parent).stdout.strip()  # fmt: skip
    try:
        moto = metadata.version("moto")
    except metadata.PackageNotFoundError:
        moto = "unknown"
    return {
        "CPU": f"{cpu}, {os.cpu_count()} cores (shared with other work: figures are noisy)",
        "memory": f"{mem_kib / 1024 / 1024:.0f} GiB",
        "OS": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "chunkvault": f"{__version__} ({commit or 'no git'})",
        "restic": tools.version("restic"),
        "rclone": tools.version("rclone"),
        "peers": f"moto_server {moto} on 127.0.0.1, fresh per tool",
    }


METHOD = """
- **Same data, fresh peers.** Each dataset is generated once (seeded: the same bytes on
  every run; the text corpus is generated words, no download) and every tool reads it from
  the page cache. Each tool gets moto S3 peers of its own on 127.0.0.1, started before and
  stopped (by PID) after it.
- **MB/s** is 10^6 bytes *of the dataset* per second of wall time of the whole command,
  start-up included, whatever R (so R=2 writes twice the bytes to the peers).
- **Raw ceilings**: plain boto3, configured as chunkvault's S3 backend (path style, no
  retries), 8 requests in flight, each file one object; `put` writes every file to R
  distinct peers (round robin), `get` reads each file once. No chunking, crypto or
  bookkeeping: what a perfect pipeline could reach on these peers.
- **chunkvault**: the installed CLI as a user runs it (`init`, `push`, `push` again with
  nothing changed, `restore --to`), byte-compiled first as a package install is, R=2 over
  3 peers, min_replicas 1, chunking 1/4/8 MiB, `transfer.concurrency` 8, zstd on (kept
  only where it saves space). **Steady-state push** = push time minus the no-change push
  (start-up, unlock, scan: the fixed cost).
- **restic**: `restic backup .` (then again with nothing changed: its fixed cost, and
  **steady-state backup** = backup minus that, as for chunkvault) and `restic restore
  latest --target`, one S3 peer (R=1), `-o s3.connections=8`, repository format 2
  (compression auto), a fresh cache dir.
- **rclone**: `rclone copy` of the tree to one S3 peer (R=1), `--transfers 8`, no
  encryption; checked by the bytes stored.
- **Verified**: every restore is compared with the source file by file: SHA-256, size,
  permission bits and mtime (to the microsecond). A restore that differs is an error, not
  a figure.
- **Stored on peers**: bytes of all objects the tool wrote, summed over peers (so R=2
  counts twice); it shows compression on the text corpus.
- **Peak RSS**: the child's own `VmHWM` from `/proc/PID/status`, sampled every 10 ms
  while it runs (a high-water mark, so only growth in the last 10 ms could be missed),
  plus that of every process it started (chunkvault's seal workers), summed: their peaks
  need not coincide, so the sum never understates.
  Not `ru_maxrss`: Linux carries the harness's own high-water mark into a child across
  `exec`. "RSS does not grow with file size" compares the push of the one big file with
  the push of the tree of 4 MiB files (goal: at most 1.25x).
- **Agent latency**: `chunkvault run` (R=2 with min_replicas 2, so a stored file is
  durable at R; settle_seconds 1) on an empty tree; after a warm-up file is stored, the
  small text files (4-64 KiB) are written as one burst, and the wall clock is read right
  after each `close()`. The agent logs `stored <path>` (JSON log, millisecond time) once
  the file's chunks and manifest are on the peers and its version is committed; latency
  = that time - the close time. Whatever the agent waits before it starts (settling) is
  included: it is what a user waits for. Percentiles are nearest-rank (p99 of 200 is the
  198th smallest).
- **Small files** (issue 12): 2,000 files of 6-10 KiB (sizes uniform, each file either
  random bytes or generated text, half and half, in nested directories two and three
  deep); chunkvault as above (R=2 over 3 peers) beside restic (R=1). **files/s** = files
  / wall seconds of the whole command. **Objects** = objects the tool left in its bucket,
  summed over its peers: for chunkvault every object (chunks, packs, manifests, the
  keyring), for restic every object of the repository (config, keys, packs, index,
  snapshot). These runs take seconds and swing by a third from run to run here, so each
  tool makes them three times, taking turns (each time on fresh peers, with a fresh
  vault or repository): every figure is the median run's, and `results.json` keeps all
  three times (`runs`). On this machine's disk (ext4 without a journal) a restore also
  pays for what was deleted in the minutes before it: the kernel will not reuse an inode
  freed in the last minute (six while its table block is dirty) and scans past each one
  for every file and directory it makes, ~1 ms each after a 2,000-file tree is removed.
  Each restore here follows the removal of the trees restored before it, so both tools
  pay that, in turn, and the restore figures swing with it.
- **Erasure coding** (issue 15): the 512 MiB random tree pushed and restored by chunkvault
  over five fresh peers with `replication.erasure: {data: 3, parity: 2}` (min_replicas 1),
  beside R=3 whole copies over five fresh peers: both survive any two lost peers. The
  figure is *stored on peers* over the dataset's bytes (goal: at most 1.8x, where R=3
  stores over 3x); push and restore MB/s and peak RSS are shown beside R=3's. Each share
  is one more object and request than a third of a copy, and a push holds an object's
  shares while it writes them: hence fewer MB/s and more RSS than R=3 here.
- **Many small files**: 20,000 files of the same kind; chunkvault `push` only (its peak
  RSS is the figure), checked by `ls --json` listing every file.
- **Agent, idle tree**: `chunkvault run` on a vault of its own (R=2 with min_replicas 2,
  settle_seconds 1, `chunking.pack_flush_seconds` 2 where this chunkvault has it); after
  the warm-up file, one 6-10 KiB text file at a time, each written 3 s after the one
  before was stored (so nothing else is in flight), 5 files; latency as above, the
  target is the largest.
- **Ratio** in the targets: measured / reference (another tool), or measured / limit
  where the goal is a fixed limit (objects, RSS of many files, latency).
"""


def scaled(scale: float) -> dict[str, int]:
    return {
        "random_files": max(2, round(128 * scale)),
        "random_file_size": 4 * MiB,
        "text_files": max(10, round(1000 * scale)),
        "text_bytes": max(MiB, int(64 * MiB * scale)),
        "big_bytes": max(8 * MiB, int(1024 * MiB * scale)),
        "agent_files": max(10, round(200 * scale)),
        "small_files": max(10, round(2000 * scale)),
        "many_files": max(20, round(20_000 * scale)),
        "idle_files": 5,  # the target is a max: five tries, not a distribution
    }


def run(scale: float, work: Path, only: set[str], log: Callable[[str], None]) -> dict[str, Any]:
    sizes = scaled(scale)
    started = time.perf_counter()
    results: dict[str, Any] = {
        "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "scale": scale,
        "machine": machine(),
        "settings": {
            "peers": f"{PEERS} moto_server (one for restic and rclone: R=1)",
            "chunkvault": f"R={REPLICAS}, min_replicas 1, chunking 1/4/8 MiB, concurrency "
            f"{CONCURRENCY}, zstd, "
            + (
                f"pack_flush_seconds {PACK_FLUSH_SECONDS:g}"
                if pack_flush_configurable()
                else "no packs (this chunkvault has no pack_flush_seconds)"
            ),
            "requests in flight": f"{CONCURRENCY} for every tool",
            "sizes": ", ".join(
                f"{k}={v // MiB} MiB" if k.endswith(("bytes", "size")) else f"{k}={v}"
                for k, v in sizes.items()
            ),
        },
        "datasets": {},
        "errors": [],
    }
    n, size = sizes["random_files"], sizes["random_file_size"]
    plans = {
        "random": (f"{n * size // MiB} MiB: {n} x {size // MiB} MiB random files",
                   lambda d: random_tree(d, n, size),
                   ("ceil", "cv", "cvw", "cvec", "cvr3", "restic", "rclone"), 1),
        "text": (f"Text corpus: {sizes['text_files']} files, {sizes['text_bytes'] // MiB} MiB "
                 "of generated text", lambda d: text_tree(d, sizes["text_files"],
                 sizes["text_bytes"]), ("ceil", "cv", "restic", "rclone"), 1),
        "big": (f"One {sizes['big_bytes'] / 1024 / MiB:g} GiB random file (peak RSS)",
                lambda d: big_file(d, sizes["big_bytes"]), ("cv1", "restic"), 1),
        "small": (f"Small files: {sizes['small_files']:,} files of 6-10 KiB",
                  lambda d: small_tree(d, sizes["small_files"]), ("cv", "cvw", "restic"),
                  SMALL_ROUNDS),
        "many": (f"Many small files: {sizes['many_files']:,} files of 6-10 KiB (peak RSS)",
                 lambda d: small_tree(d, sizes["many_files"]), ("cvmany",), 1),
    }  # fmt: skip
    for key, (label, make, what, rounds) in plans.items():
        if key not in only:
            continue
        log(f"{key}: generating {label}")
        ds = make(work / f"data-{key}")
        expected = tree_state(ds.root)
        steps: dict[str, Callable[[], list[Row]]] = {
            "ceil": lambda ds=ds: ceilings(ds, work, (1, REPLICAS)),
            "cv": lambda ds=ds, e=expected: chunkvault_rows(ds, work, e),
            "cv1": lambda ds=ds, e=expected: chunkvault_rows(ds, work, e, nochange=False),
            "cvw": lambda ds=ds, e=expected: chunkvault_writer_rows(ds, work, e),
            "cvec": lambda ds=ds, e=expected: chunkvault_redundancy_rows(ds, work, e, ERASURE),
            "cvr3": lambda ds=ds, e=expected: chunkvault_redundancy_rows(ds, work, e, None),
            "restic": lambda ds=ds, e=expected: restic_rows(ds, work, e),
            "rclone": lambda ds=ds: rclone_rows(ds, work),
            "cvmany": lambda ds=ds: chunkvault_many_rows(ds, work),
        }
        for name, fn in steps.items():
            fn.__name__ = name
        measured = measure_dataset(key, label, ds, work, [steps[w] for w in what], log, rounds)
        results["errors"] += measured.pop("errors")
        results["datasets"][key] = measured
        shutil.rmtree(ds.root, ignore_errors=True)
    if "agent" in only:
        log(f"agent: {sizes['agent_files']} small files under chunkvault run")
        try:
            results["agent"] = agent_latency(work, sizes["agent_files"])
        except (CommandFailed, agentlat.AgentBenchError, RuntimeError) as exc:
            results["errors"].append(f"agent: {exc}")
    if "idle" in only:
        log(f"idle: {sizes['idle_files']} single small files into an idle tree")
        try:
            results["agent_idle"] = agent_idle_latency(work, sizes["idle_files"], IDLE_GAP_SECONDS)
        except (CommandFailed, agentlat.AgentBenchError, RuntimeError) as exc:
            results["errors"].append(f"idle: {exc}")
    results["duration_seconds"] = time.perf_counter() - started
    return results


def agent_latency(work: Path, files: int) -> dict[str, Any]:
    inbox = work / "agent-inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    with fresh_peers() as endpoints:
        config = cv_config(work / "agent", endpoints, inbox, REPLICAS, REPLICAS)
        vault = VaultUnderTest(config)
        vault.init()
        measured = agentlat.measure(vault, inbox, work / "agent", files)
    return {**measured, "settle_seconds": SETTLE_SECONDS, "replicas": REPLICAS}


def agent_idle_latency(work: Path, files: int, gap: float) -> dict[str, Any]:
    """Issue 12: one small file at a time into an idle tree, durable at R (min_replicas =
    replicas), on peers and a vault of its own."""
    inbox = work / "idle-inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    with fresh_peers() as endpoints:
        config = cv_config(work / "idle", endpoints, inbox, REPLICAS, REPLICAS)
        vault = VaultUnderTest(config)
        vault.init()
        measured = agentlat.measure_idle(vault, inbox, work / "idle", files, gap)
    return {**measured, "settle_seconds": SETTLE_SECONDS, "replicas": REPLICAS,
            "pack_flush_seconds": PACK_FLUSH_SECONDS,
            "pack_flush_configured": pack_flush_configurable()}  # fmt: skip


def write_outputs(results: dict[str, Any], out: Path) -> list[tuple[str, str]]:
    """The page, its charts (in ``<out stem>/`` beside it) and the raw results as JSON."""
    chart_dir = out.parent / out.stem
    chart_dir.mkdir(parents=True, exist_ok=True)
    made: list[tuple[str, str]] = []
    datasets = results["datasets"]
    for key in ("random", "text"):
        if datasets.get(key, {}).get("rows"):
            charts.throughput(datasets[key], chart_dir / f"{key}.png")
            made.append((f"throughput, {datasets[key]['label']}", f"{out.stem}/{key}.png"))
    if datasets.get("small", {}).get("rows"):
        charts.files_per_s_chart(datasets["small"], chart_dir / "small.png")
        made.append((f"files/s, {datasets['small']['label']}", f"{out.stem}/small.png"))
    if datasets.get("big", {}).get("rows"):
        charts.peak_rss(datasets["big"], chart_dir / "peak-rss.png")
        made.append(("peak RSS, one big file", f"{out.stem}/peak-rss.png"))
    if results.get("agent"):
        charts.agent_latency(results["agent"], chart_dir / "agent-latency.png")
        made.append(("agent change-to-durable latency", f"{out.stem}/agent-latency.png"))
    (chart_dir / "results.json").write_text(json.dumps(results, indent=1))
    page = render_markdown(results, made, METHOD)
    if results["errors"]:
        page += "\n## Errors in this run\n\n" + "\n".join(f"- {e}" for e in results["errors"])
        page += "\n"
    out.write_text(page)
    return made


def precompile() -> None:
    """Byte-compile chunkvault as an install does (pip compiles a wheel's modules): an
    editable install under PYTHONDONTWRITEBYTECODE (set on the bench machine) would
    otherwise compile every module from source at each command, ~0.1 s per start-up that
    no user pays."""
    package = Path(__file__).resolve().parents[1]
    compileall.compile_dir(str(package), quiet=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chunkvault.bench.compare",
                                     description=__doc__.splitlines()[0])  # fmt: skip
    parser.add_argument("--scale", type=float, default=float(os.environ.get("BENCH_SCALE") or 1),
                        help="dataset size factor; 1 = the issue's sizes (default)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="for the datasets (~2 GiB at scale 1) [default: a temp dir]",
    )
    parser.add_argument("--only", default=",".join(PARTS),
                        help=f"comma-separated parts: {','.join(PARTS)}")  # fmt: skip
    parser.add_argument(
        "--render",
        type=Path,
        default=None,
        metavar="RESULTS_JSON",
        help="only redraw the page and charts from a saved results.json",
    )
    args = parser.parse_args(argv)
    if args.render is not None:
        # Formatting changes without a new run: the figures stay those of that run.
        results = json.loads(args.render.read_text())
        write_outputs(results, args.out)
        return 0
    only = {p.strip() for p in args.only.split(",") if p.strip()}
    unknown = only - set(PARTS)
    if unknown or not only:
        parser.error(f"--only: unknown part(s) {sorted(unknown)}; use {','.join(PARTS)}")
    if not 0 < args.scale <= 4:
        parser.error(f"--scale must be in (0, 4], got {args.scale}")
    if not moto_available():
        print("error: moto_server not found: pip install -e '.[test]'", file=sys.stderr)
        return 1
    for tool in ("restic", "rclone"):
        try:
            tools.require(tool)
        except tools.ToolMissing as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    charts._pyplot()  # fail now, not after the run, if matplotlib is missing
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    precompile()
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cv-bench-", dir=args.workdir) as tmp:
        results = run(args.scale, Path(tmp), only, log)
    results["command"] = "make bench" + (f" BENCH_SCALE={args.scale:g}" if args.scale != 1 else "")
    write_outputs(results, args.out)
    log(f"wrote {args.out} in {results['duration_seconds'] / 60:.1f} min")
    for error in results["errors"]:
        print(f"error: {error}", file=sys.stderr)
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())

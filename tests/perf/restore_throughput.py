"""Measure restore throughput against a raw boto3 GET ceiling, on the same data.

Not a test (speed goals live in benchmarks): run it by hand, e.g. before and after a change
to restore, in the same minute (the machine is shared)::

    .venv/bin/python tests/perf/restore_throughput.py                # 128 x 4 MiB, R=2
    .venv/bin/python tests/perf/restore_throughput.py --files 16 --file-size 32MiB
    .venv/bin/python tests/perf/restore_throughput.py --restore-pythonpath /tmp/old-code

Three fresh moto peers on loopback (the same servers `python -m chunkvault.localpeers`
starts), one push, then each restore command in turn into a fresh directory (checked
byte-identical with mode and mtime), and the raw ceiling: every chunk object read once
with ``--threads`` boto3 GETs in parallel from the peers, nothing decrypted or written.
``--restore-pythonpath DIR`` runs the restores with another copy of the package first on
``PYTHONPATH`` (e.g. ``git archive HEAD~3 chunkvault | tar -x -C DIR``), so the old and the
new code are measured on the same peers and data. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import yaml
from botocore.config import Config as BotoConfig

from chunkvault.localpeers import DUMMY_CREDENTIALS, start_servers
from chunkvault.sizes import parse_size

MB = 1_000_000
PW = {"CHUNKVAULT_PASSPHRASE": "bench passphrase"}


def make_files(inbox: Path, count: int, size: int) -> None:
    rng = random.Random(11)
    for i in range(count):
        path = inbox / f"d{i % 8}" / f"f{i:04d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(size))
        os.chmod(path, 0o600 + (i % 2) * 0o40)
        os.utime(path, ns=(1_600_000_000_000_000_000 + i, 1_600_000_000_123_456_789 + i))


def digest(root: Path) -> dict[str, tuple[str, int, int]]:
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            st = path.stat()
            sha = hashlib.sha256(path.read_bytes()).hexdigest()
            out[path.relative_to(root).as_posix()] = (sha, st.st_mode & 0o7777, st.st_mtime_ns)
    return out


def cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cli(
    config: Path, *args: str, pythonpath: str | None = None, prefix: list[str] | None = None
) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHUNKVAULT_")} | PW
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    start = time.monotonic()
    result = subprocess.run(
        [*(prefix or []), sys.executable, "-m", "chunkvault", "--config", str(config), *args],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    elapsed = time.monotonic() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{result.stderr}")
    return elapsed


def raw_get_ceiling(endpoints: list[str], bucket: str, threads: int) -> tuple[int, float]:
    clients = [
        boto3.session.Session().client(
            "s3", endpoint_url=e, region_name="us-east-1",
            aws_access_key_id="testing", aws_secret_access_key="testing",
            config=BotoConfig(max_pool_connections=threads + 2, s3={"addressing_style": "path"}),
        )
        for e in endpoints
    ]  # fmt: skip
    # One replica of each chunk, spread over the peers that hold it.
    keys: dict[str, list[int]] = {}
    for index, client in enumerate(clients):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                if "/chunks/" in obj["Key"]:
                    keys.setdefault(obj["Key"], []).append(index)
    jobs = [(holders[n % len(holders)], key) for n, (key, holders) in enumerate(keys.items())]

    def get(job: tuple[int, str]) -> int:
        index, key = job
        return len(clients[index].get_object(Bucket=bucket, Key=key)["Body"].read())

    start = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        total = sum(pool.map(get, jobs))
    return total, time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=128)
    parser.add_argument("--file-size", default="4MiB")
    parser.add_argument("--threads", type=int, default=8, help="transfer.concurrency too")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--restore-pythonpath", action="append", default=[],
                        help="also restore with this copy of the package (repeatable)")  # fmt: skip
    parser.add_argument(
        "--py-spy",
        metavar="FILE",
        help="profile the first restore with py-spy (collapsed stacks to FILE)",
    )
    args = parser.parse_args()
    size = parse_size(args.file_size)
    servers = start_servers(3)
    work = Path(tempfile.mkdtemp(prefix="cv-restore-bench-"))
    try:
        inbox = work / "inbox"
        inbox.mkdir()
        make_files(inbox, args.files, size)
        bucket = "bench"
        config = work / "cv.yaml"
        config.write_text(yaml.safe_dump({
            "vault": {"id": "bench", "state_dir": str(work / "state")},
            "watch": {"path": str(inbox)},
            "chunking": {"min_size": "1MiB", "avg_size": "4MiB", "max_size": "8MiB"},
            "transfer": {"concurrency": args.threads},
            "replication": {"replicas": args.replicas, "min_replicas": 1},
            "keys": {"kdf": "scrypt"},
            "peers": [{"name": f"p{i}", "endpoint": s.endpoint, "bucket": bucket,
                       **DUMMY_CREDENTIALS} for i, s in enumerate(servers)],
        }))  # fmt: skip
        cli(config, "init")
        push = cli(config, "push")
        want = digest(inbox)
        total = args.files * size
        report: dict[str, object] = {
            "files": args.files, "file_size": size, "total_bytes": total,
            "replicas": args.replicas, "threads": args.threads, "push_s": round(push, 2),
        }  # fmt: skip
        for label, pythonpath in [("restore", None)] + [
            (f"restore[{p}]", p) for p in args.restore_pythonpath
        ]:
            out = work / "out"
            shutil.rmtree(out, ignore_errors=True)
            spy = ["py-spy", "record", "--format", "raw", "--threads", "-o", args.py_spy, "--"]
            profile = spy if args.py_spy and pythonpath is None else None
            restore = ["restore", "--to", str(out)]
            cpu = cpu_of_children()
            elapsed = cli(config, *restore, pythonpath=pythonpath, prefix=profile)
            report[f"{label}_cpu_s"] = round(cpu_of_children() - cpu, 2)
            if digest(out) != want:
                raise SystemExit(f"{label}: the restored tree differs from the original")
            report[f"{label}_s"] = round(elapsed, 2)
            report[f"{label}_MBps"] = round(total / elapsed / MB, 1)
        # The fixed cost: the same command restoring one file of the tree (start, KDF, catalog).
        one = sorted(want)[0]
        report["restore_one_file_s"] = round(
            cli(config, "restore", one, "--to", str(work / "one")), 2
        )
        got, elapsed = raw_get_ceiling([s.endpoint for s in servers], bucket, args.threads)
        report["raw_get_bytes"] = got
        report["raw_get_MBps"] = round(got / elapsed / MB, 1)
        print(json.dumps(report, indent=2))
    finally:
        for server in servers:
            server.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""The other side of the comparison: raw boto3 put/get ceilings, restic and rclone, each
against one local S3 peer, run the way their users run them (restic and rclone are
Debian's packages; ``make bench`` installs them)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from chunkvault.bench.procs import Measured, clean_env, run_measured

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


class ToolMissing(RuntimeError):
    """restic or rclone is not installed."""


def require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise ToolMissing(f"{tool} is not installed: apt-get install -y restic rclone")
    return path


def version(tool: str) -> str:
    try:
        out = subprocess.run(
            [require(tool), "version"], capture_output=True, text=True, timeout=30
        ).stdout
    except (ToolMissing, OSError, subprocess.SubprocessError):
        return "not installed"
    return out.strip().splitlines()[0] if out.strip() else "unknown"


# --- raw ceilings ------------------------------------------------------------------------


def s3_client(endpoint: str, pool: int) -> Any:
    """A plain boto3 client as chunkvault's S3 backend configures it (path style, no
    retries, no aws-chunked bodies), with a connection pool for ``pool`` requests."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
        config=Config(
            s3={"addressing_style": "path"}, retries={"total_max_attempts": 1},
            max_pool_connections=pool, request_checksum_calculation="when_required",
            connect_timeout=30, read_timeout=120,
        ),
    )  # fmt: skip


def create_bucket(endpoint: str, bucket: str) -> None:
    s3_client(endpoint, 1).create_bucket(Bucket=bucket)


def _relative(files: Sequence[Path], root: Path) -> list[tuple[Path, str]]:
    return [(f, f.relative_to(root).as_posix()) for f in files]


def ceiling_put(
    endpoints: Sequence[str], bucket: str, root: Path, files: Sequence[Path],
    replicas: int, concurrency: int,
) -> float:  # fmt: skip
    """Seconds to put every file as one object on ``replicas`` distinct peers (round
    robin), ``concurrency`` requests in flight: what a perfect pipeline with no chunking,
    crypto or bookkeeping would take. Each replica reads its file (from the page cache)."""
    clients = [s3_client(e, concurrency) for e in endpoints]
    tasks = [
        (clients[(i + r) % len(clients)], path, f"r{replicas}/{rel}")
        for i, (path, rel) in enumerate(_relative(files, root))
        for r in range(replicas)
    ]

    def put(task: tuple[Any, Path, str]) -> None:
        client, path, key = task
        client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(put, tasks))
    return time.perf_counter() - start


def ceiling_get(
    endpoints: Sequence[str], bucket: str, root: Path, files: Sequence[Path],
    replicas: int, concurrency: int,
) -> float:  # fmt: skip
    """Seconds to get every object written by :func:`ceiling_put` once, from its first
    replica, checking each body's length (a short read is not a fast read)."""
    clients = [s3_client(e, concurrency) for e in endpoints]
    tasks = [
        (clients[i % len(clients)], f"r{replicas}/{rel}", path.stat().st_size)
        for i, (path, rel) in enumerate(_relative(files, root))
    ]

    def get(task: tuple[Any, str, int]) -> None:
        client, key, size = task
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        if len(body) != size:
            raise RuntimeError(f"raw get of {key}: {len(body)} bytes, expected {size}")

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(get, tasks))
    return time.perf_counter() - start


def bucket_usage(endpoint: str, bucket: str, prefix: str = "") -> tuple[int, int]:
    """Bytes and number of the objects in ``bucket`` under ``prefix`` on one peer: the
    object count is what a store bills requests and listings by."""
    client = s3_client(endpoint, 1)
    total = count = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        contents = page.get("Contents", [])
        total += sum(obj["Size"] for obj in contents)
        count += len(contents)
    return total, count


def stored_bytes(endpoint: str, bucket: str, prefix: str = "") -> int:
    """Bytes of every object in ``bucket`` under ``prefix`` on one peer."""
    return bucket_usage(endpoint, bucket, prefix)[0]


# --- restic ------------------------------------------------------------------------------


class Restic:
    """One restic repository on one S3 peer; ``connections`` parallel S3 requests."""

    def __init__(self, endpoint: str, bucket: str, cache: Path, connections: int) -> None:
        self.repo = f"s3:{endpoint}/{bucket}"
        self.options = ["-o", f"s3.connections={connections}"]
        self.env = clean_env(
            CREDENTIALS | {"RESTIC_PASSWORD": "benchmark", "RESTIC_CACHE_DIR": str(cache)}
        )

    def _run(self, *args: str, cwd: Path | None = None) -> Measured:
        command = [require("restic"), "-r", self.repo, "--quiet", *self.options, *args]
        return run_measured(command, env=self.env, cwd=cwd).check(f"restic {args[0]}")

    def init(self) -> Measured:
        return self._run("init")

    def backup(self, root: Path) -> Measured:
        # "." from inside the tree: the snapshot holds relative paths, so a restore
        # recreates the tree at its target, as chunkvault's does.
        return self._run("backup", "--host", "bench", ".", cwd=root)

    def restore(self, target: Path) -> Measured:
        return self._run("restore", "latest", "--target", str(target))


# --- rclone ------------------------------------------------------------------------------


def rclone_copy(endpoint: str, bucket: str, root: Path, transfers: int, workdir: Path) -> Measured:
    """``rclone copy`` of the tree into a bucket (R=1, no encryption, no chunking): a
    remote configured only through the environment, and an empty config file."""
    config = workdir / "rclone.conf"
    config.touch()
    # AWS_CA_BUNDLE (set on some machines) makes rclone refuse its own HTTP transport;
    # the peers are plain HTTP on loopback, so no CA bundle applies.
    base = {k: v for k, v in clean_env().items() if k != "AWS_CA_BUNDLE"}
    env = base | {
        "RCLONE_CONFIG": str(config),
        "RCLONE_CONFIG_BENCH_TYPE": "s3",
        "RCLONE_CONFIG_BENCH_PROVIDER": "Other",
        "RCLONE_CONFIG_BENCH_ENDPOINT": endpoint,
        "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": "testing",
        "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": "testing",
        "RCLONE_CONFIG_BENCH_REGION": "us-east-1",
        "RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE": "true",
    }
    rclone = require("rclone")
    run_measured([rclone, "mkdir", f"bench:{bucket}"], env=env).check("rclone mkdir")
    return run_measured(
        [rclone, "copy", str(root), f"bench:{bucket}/tree", "--transfers", str(transfers)],
        env=env,
    ).check("rclone copy")


def files_under(root: Path) -> list[Path]:
    return sorted(Path(d) / f for d, _, names in os.walk(root) for f in names)

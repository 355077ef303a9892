"""Throughput of one storage peer through chunkvault's own peer stack (``Peer``: the
clients, retries and limits a push uses): large-object put/get MB/s with ``concurrency``
requests in flight, and small-object put/get ops/s. Every object it writes lives under
``<vault>/bench/<run>/`` and is deleted before it returns, also on failure."""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from chunkvault.backends.base import Peer, PeerError
from chunkvault.bench.micro import mb_per_s


class PeerBenchError(RuntimeError):
    """A peer that failed or corrupted a benchmark object."""


def _parallel(fn: Callable[[int], Any], items: Iterable[int], concurrency: int) -> float:
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(fn, items))  # re-raises the first failure
    return time.perf_counter() - start


def bench_peer(
    peer: Peer,
    prefix: str,
    *,
    objects: int,
    object_size: int,
    small_objects: int,
    small_size: int,
    concurrency: int,
) -> dict[str, Any]:
    """One row: put/get MB/s of ``objects`` x ``object_size`` and put/get ops/s of
    ``small_objects`` x ``small_size``. Bodies read back must equal what was written."""
    run = f"{prefix}/bench/{secrets.token_hex(6)}"
    big = os.urandom(object_size)
    small = os.urandom(small_size)
    written: list[str] = []

    def put(key: str, body: bytes) -> None:
        written.append(key)  # before the request: a timed-out put may still land
        peer.put(key, body)

    def check(key: str, body: bytes) -> None:
        back = peer.get(key, max_size=len(body))
        if back != body:
            raise PeerBenchError(f"peer {peer.name}: {key} came back different")

    big_key = lambda i: f"{run}/large-{i:05d}"  # noqa: E731
    small_key = lambda i: f"{run}/small-{i:05d}"  # noqa: E731
    try:
        put_s = _parallel(lambda i: put(big_key(i), big), range(objects), concurrency)
        get_s = _parallel(lambda i: check(big_key(i), big), range(objects), concurrency)
        sput_s = _parallel(lambda i: put(small_key(i), small), range(small_objects), concurrency)
        sget_s = _parallel(lambda i: check(small_key(i), small), range(small_objects), concurrency)
    except PeerError as exc:
        raise PeerBenchError(f"peer {peer.name}: {exc}") from None
    finally:
        _delete_all(peer, written, concurrency)
    total = objects * object_size
    return {
        "peer": peer.name,
        "objects": objects,
        "object_size": object_size,
        "put_mb_per_s": mb_per_s(total, put_s),
        "get_mb_per_s": mb_per_s(total, get_s),
        "small_size": small_size,
        "small_objects": small_objects,
        "small_put_ops_per_s": small_objects / max(sput_s, 1e-9),
        "small_get_ops_per_s": small_objects / max(sget_s, 1e-9),
        "concurrency": concurrency,
    }


def _delete_all(peer: Peer, keys: list[str], concurrency: int) -> None:
    def delete(key: str) -> None:
        # Best effort: the benchmark's outcome (or its error) matters more.
        with contextlib.suppress(PeerError):
            peer.delete(key)

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(delete, list(keys)))

"""Datasets for benchmarks, made here (no downloads), and the byte-for-byte check of a
restored tree: a fast wrong restore is not a result."""

from __future__ import annotations

import hashlib
import os
import random
from dataclasses import dataclass
from pathlib import Path

KiB = 1024
MiB = 1024 * KiB
# Words for the text corpus: a fixed vocabulary, so the corpus compresses like prose or
# source code (zstd-3 gets ~3x on it) and is the same on every machine.
_WORDS = str.split(
    "the of and to in is that for it as with was on be by this are from at or an which "
    "chunk vault peer replica restore push manifest catalog encrypt key passphrase object "
    "bucket file directory version agent watch settle upload segment placement weight zone "
    "def return import class self none true false if else for while yield lambda async await "
    "data value index count size offset length buffer stream read write open close error "
    "alpha beta gamma delta epsilon lorem ipsum dolor sit amet consectetur adipiscing elit"
)


@dataclass(frozen=True)
class Dataset:
    """A directory of generated files and their total size."""

    root: Path
    files: int
    bytes: int


def random_tree(root: Path, count: int, size: int, seed: int = 11) -> Dataset:
    """``count`` files of ``size`` incompressible bytes (seeded: same bytes every run)."""
    rng = random.Random(seed)
    for i in range(count):
        sub = root / f"d{i % 8}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"random-{i:05d}.bin").write_bytes(rng.randbytes(size))
    return Dataset(root, count, count * size)


def text_block(rng: random.Random, size: int) -> bytes:
    """About ``size`` bytes of deterministic line-structured text, exactly ``size`` long."""
    out: list[str] = []
    total = 0
    while total < size:
        line = " ".join(rng.choices(_WORDS, k=rng.randint(4, 16))) + "\n"
        out.append(line)
        total += len(line)
    return "".join(out).encode()[:size]


def text_tree(root: Path, count: int, total: int, seed: int = 12) -> Dataset:
    """``count`` text files adding up to ``total`` bytes, sizes varying 0.25x..1.75x of the
    mean, spread over nested directories like a source tree."""
    rng = random.Random(seed)
    mean = max(1, total // max(1, count))
    sizes = [max(1, int(mean * rng.uniform(0.25, 1.75))) for _ in range(count)]
    sizes[-1] += total - sum(sizes)  # exact total, so MB/s compare across tools
    if sizes[-1] < 1:
        sizes[-1] = 1
    written = 0
    for i, size in enumerate(sizes):
        sub = root / f"pkg{i % 10}" / f"mod{i % 37}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"text-{i:05d}.txt").write_bytes(text_block(rng, size))
        written += size
    return Dataset(root, count, written)


def small_tree(
    root: Path, count: int, min_size: int = 6 * KiB, max_size: int = 10 * KiB, seed: int = 14
) -> Dataset:
    """``count`` small files (sizes uniform in ``min_size..max_size``), half incompressible
    and half text, each picked at random, in nested directories two and three deep, like a
    home directory of documents and source code: what packs and batched manifests are for."""
    rng = random.Random(seed)
    written = 0
    for i in range(count):
        size = rng.randint(min_size, max_size)
        sub = root / f"area{i % 7}" / f"dir{i % 23}"
        if i % 3 == 0:
            sub = sub / f"sub{i % 5}"
        sub.mkdir(parents=True, exist_ok=True)
        if rng.random() < 0.5:
            (sub / f"small-{i:05d}.bin").write_bytes(rng.randbytes(size))
        else:
            (sub / f"small-{i:05d}.txt").write_bytes(text_block(rng, size))
        written += size
    return Dataset(root, count, written)


def big_file(root: Path, size: int, seed: int = 13, block: int = 4 * MiB) -> Dataset:
    """One file of ``size`` random bytes, written a block at a time (bounded memory)."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "big.bin", "wb") as out:
        left = size
        while left:
            n = min(block, left)
            out.write(rng.randbytes(n))
            left -= n
    return Dataset(root, 1, size)


@dataclass(frozen=True)
class FileState:
    sha256: str
    size: int
    mode: int
    mtime_us: int  # microseconds: what every tool here keeps exactly


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(4 * MiB):
            h.update(block)
    return h.hexdigest()


def tree_state(root: Path) -> dict[str, FileState]:
    """Relative path -> content hash, size, permission bits and mtime of every file."""
    out: dict[str, FileState] = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            st = path.lstat()
            out[path.relative_to(root).as_posix()] = FileState(
                _digest(path), st.st_size, st.st_mode & 0o7777, st.st_mtime_ns // 1000
            )
    return out


def tree_differences(
    expected: dict[str, FileState], actual: dict[str, FileState], *, check_meta: bool = True
) -> list[str]:
    """What differs, one line each (empty when identical). Pure."""
    problems = [f"missing: {p}" for p in sorted(expected.keys() - actual.keys())]
    problems += [f"unexpected: {p}" for p in sorted(actual.keys() - expected.keys())]
    for path in sorted(expected.keys() & actual.keys()):
        want, got = expected[path], actual[path]
        if (want.sha256, want.size) != (got.sha256, got.size):
            problems.append(f"content differs: {path}")
        elif check_meta and want.mode != got.mode:
            problems.append(f"mode differs: {path} ({want.mode:o} != {got.mode:o})")
        elif check_meta and want.mtime_us != got.mtime_us:
            problems.append(f"mtime differs: {path}")
    return problems


def verify_tree(expected: dict[str, FileState], restored: Path, what: str) -> None:
    """Raise :class:`VerifyError` unless ``restored`` holds exactly ``expected``."""
    problems = tree_differences(expected, tree_state(restored))
    if problems:
        more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        listed = "; ".join(problems[:3])
        raise VerifyError(f"{what}: restored tree is not identical: {listed}{more}")


class VerifyError(RuntimeError):
    """A restore that did not give back the same bytes, mode and mtime."""

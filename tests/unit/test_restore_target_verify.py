"""One file being restored (chunkvault.restore_target) in a real directory: it reaches its
final name only when its content matches the manifest, whether one write filled it (hashed
from what was written) or several pieces did (read back)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from chunkvault.errors import ChunkvaultError
from chunkvault.manifest import Manifest
from chunkvault.restore_target import TargetFile


def manifest(content: bytes, sha256_of: bytes | None = None) -> Manifest:
    digest = hashlib.sha256(content if sha256_of is None else sha256_of).hexdigest()
    return Manifest(path="f.bin", size=len(content), mtime_ns=10**18, mode=0o100640,
                    sha256=digest)  # fmt: skip


def target(tmp_path: Path, m: Manifest, pieces: int) -> TargetFile:
    return TargetFile(m, os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY), "f.bin", pieces)


def leftovers(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir())


@pytest.mark.parametrize("pieces", [1, 2])
def test_matching_content_reaches_its_final_name_with_mode_and_mtime(
    tmp_path: Path, pieces: int
) -> None:
    content = os.urandom(10_000)
    file = target(tmp_path, manifest(content), pieces)
    if pieces == 1:
        file.write(content, (0,))
    else:
        file.write(content[:4000], (0,))
        file.write(content[4000:], (4000,))
    file.finish()
    st = os.stat(tmp_path / "f.bin")
    assert (tmp_path / "f.bin").read_bytes() == content
    assert (st.st_mode & 0o7777, st.st_mtime_ns) == (0o640, 10**18)
    assert leftovers(tmp_path) == ["f.bin"]


@pytest.mark.parametrize("pieces", [1, 2])
def test_content_that_differs_from_the_manifest_never_reaches_the_final_name(
    tmp_path: Path, pieces: int
) -> None:
    content = os.urandom(10_000)
    file = target(tmp_path, manifest(content, sha256_of=b"something else"), pieces)
    if pieces == 1:
        file.write(content, (0,))
    else:
        file.write(content[:4000], (0,))
        file.write(content[4000:], (4000,))
    with pytest.raises(ChunkvaultError, match="does not match its manifest"):
        file.finish()
    assert leftovers(tmp_path) == []

"""Staging on disk: streamed atomic writes, the quota, expiry, private modes, its config."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from chunkvault.config import ConfigError, parse_config
from chunkvault.staging import MIN_CHARGE, Staging, StagingFull

KiB = 1024


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def files(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


@pytest.fixture
def open_umask() -> Iterator[None]:
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


# --- private ------------------------------------------------------------------------------


def test_directory_and_files_are_private_whatever_the_umask(tmp_path: Path, open_umask) -> None:
    directory = tmp_path / "staging"
    directory.mkdir(mode=0o755)  # as an older version left it
    (directory / "c-old").write_bytes(b"o")  # 0666 under this umask
    staging = Staging(directory)
    assert mode(directory) == 0o700 and mode(directory / "c-old") == 0o600
    with staging.writer("new") as writer:
        writer.write(b"n" * 10)
        (temp,) = [n for n in files(directory) if n.startswith(".tmp-")]
        assert mode(directory / temp) == 0o600  # private while it is written, too
    assert mode(directory / "c-new") == 0o600


def test_a_symlink_in_place_of_the_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "staging").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(Exception, match="is not a directory"):
        Staging(tmp_path / "staging")


def test_a_planted_symlink_is_not_staged(tmp_path: Path) -> None:
    staging = Staging(tmp_path / "staging")
    (tmp_path / "secret").write_bytes(b"s")
    (tmp_path / "staging" / "c-link").symlink_to(tmp_path / "secret")
    assert staging.get("link") is None


# --- streamed, atomic ---------------------------------------------------------------------


def test_a_body_is_staged_only_when_complete(tmp_path: Path) -> None:
    staging = Staging(tmp_path / "s")
    with staging.writer("c1", 3 * KiB) as writer:
        for _ in range(3):
            writer.write(b"x" * KiB)
        assert staging.get("c1") is None  # not yet: still a temp file
    assert staging.get("c1") == b"x" * 3 * KiB and writer.size == 3 * KiB
    assert files(tmp_path / "s") == ["c-c1"]


def test_a_failed_body_stages_nothing_and_releases_its_share(tmp_path: Path) -> None:
    staging = Staging(tmp_path / "s")
    staging.put("keep", b"k" * 5000)
    used = staging.used
    with pytest.raises(ConnectionError), staging.writer("c1") as writer:
        writer.write(b"x" * 10_000)
        raise ConnectionError("client went away")
    assert files(tmp_path / "s") == ["c-keep"]
    assert staging.used == used and staging.get("c1") is None
    # A re-stage that fails leaves the previous bytes staged.
    with pytest.raises(ConnectionError), staging.writer("keep") as writer:
        writer.write(b"other")
        raise ConnectionError
    assert staging.get("keep") == b"k" * 5000


# --- quota --------------------------------------------------------------------------------


def test_a_declared_size_over_the_quota_fails_before_any_byte(tmp_path: Path) -> None:
    staging = Staging(tmp_path / "s", quota=10 * KiB)
    staging.put("a", b"a" * 6 * KiB)
    with pytest.raises(StagingFull, match=r"api\.staging_quota \(10240 bytes\)"):
        staging.writer("b", 5 * KiB)
    assert files(tmp_path / "s") == ["c-a"] and staging.used == 6 * KiB


def test_a_streamed_body_fails_when_it_passes_the_quota(tmp_path: Path) -> None:
    staging = Staging(tmp_path / "s", quota=10 * KiB)
    staging.put("a", b"a" * 6 * KiB)
    with pytest.raises(StagingFull), staging.writer("b") as writer:
        for _ in range(5):
            writer.write(b"b" * KiB)
    assert writer.size == 4 * KiB  # the fifth piece was refused
    assert files(tmp_path / "s") == ["c-a"] and staging.used == 6 * KiB
    staging.discard("a")  # uploaded: the space is free again
    staging.put("b", b"b" * 10 * KiB)
    assert staging.used == 10 * KiB


def test_every_file_counts_at_least_a_block(tmp_path: Path) -> None:
    staging = Staging(tmp_path / "s", quota=3 * MIN_CHARGE)
    for name in ("e1", "e2", "e3"):
        staging.put(name, b"")
    with pytest.raises(StagingFull):
        staging.put("e4", b"")
    staging.discard("e1")
    staging.put("e3", b"")  # re-staging: both count while it is written, one once in place
    assert staging.used == 2 * MIN_CHARGE


def test_usage_is_recounted_from_disk_at_start(tmp_path: Path) -> None:
    Staging(tmp_path / "s").put("a", b"a" * 9000)
    assert Staging(tmp_path / "s").used == 9000


def test_concurrent_writers_never_pass_the_quota(tmp_path: Path) -> None:
    staging = Staging(tmp_path / "s", quota=40 * KiB)
    outcomes: list[bool] = []

    def stage(i: int) -> None:
        try:
            with staging.writer(f"c{i}") as writer:
                for _ in range(8):
                    writer.write(b"z" * KiB)
            outcomes.append(True)
        except StagingFull:
            outcomes.append(False)

    threads = [threading.Thread(target=stage, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    staged = [n for n in files(tmp_path / "s") if n.startswith("c-")]
    assert len(staged) == outcomes.count(True) <= 5 and files(tmp_path / "s") == staged
    assert staging.used == 8 * KiB * len(staged) <= staging.quota


# --- expiry -------------------------------------------------------------------------------


def test_an_expired_chunk_is_not_staged(tmp_path: Path, clock: Clock) -> None:
    staging = Staging(tmp_path / "s", ttl=60, clock=clock)
    staging.put("c1", b"x")
    clock.now = (tmp_path / "s" / "c-c1").stat().st_mtime + 59
    assert staging.get("c1") == b"x"
    clock.now += 2
    assert staging.get("c1") is None  # no sweep needed
    assert files(tmp_path / "s") == [] and staging.used == 0


def test_sweep_removes_expired_chunks_and_orphaned_temp_files(tmp_path: Path, clock: Clock) -> None:
    directory = tmp_path / "s"
    staging = Staging(directory, ttl=60, clock=clock)
    for name in ("old", "new"):
        staging.put(name, b"x" * 5000)
    (directory / ".tmp-crashed").write_bytes(b"partial")  # a crash mid-write
    clock.now = os.stat(directory / "c-new").st_mtime
    os.utime(directory / "c-old", (clock.now - 61, clock.now - 61))
    os.utime(directory / ".tmp-crashed", (clock.now - 61, clock.now - 61))
    with staging.writer("writing") as writer:
        writer.write(b"w")
        (mine,) = [n for n in files(directory) if n.startswith(".tmp-") and n != ".tmp-crashed"]
        os.utime(directory / mine, (clock.now - 61, clock.now - 61))  # a slow client
        assert staging.sweep() == 2
        assert files(directory) == sorted(["c-new", mine])  # a write in progress stays
    assert files(directory) == ["c-new", "c-writing"]
    assert staging.used == 5000 + MIN_CHARGE


def test_start_sweeps_at_once_and_stop_ends_the_thread(tmp_path: Path, clock: Clock) -> None:
    staging = Staging(tmp_path / "s", ttl=60, clock=clock)
    staging.put("c1", b"x")
    clock.now = (tmp_path / "s" / "c-c1").stat().st_mtime + 61
    staging.start()
    try:
        assert files(tmp_path / "s") == []
        assert any(t.name == "staging-sweep" for t in threading.enumerate())
    finally:
        staging.stop()
    assert not any(t.name == "staging-sweep" for t in threading.enumerate())


# --- config -------------------------------------------------------------------------------


def config(**api: object) -> dict:
    return {"peers": [{"name": "a", "path": "/tmp/p"}], "replication": {"replicas": 1}, "api": api}


def test_config_defaults_and_sizes(tmp_path: Path) -> None:
    api = parse_config(config()).api
    assert (api.staging_quota, api.staging_ttl_seconds) == (1024**3, 3600)
    api = parse_config(config(staging_quota="2GiB", staging_ttl_seconds=60)).api
    staging = Staging.from_config(tmp_path / "s", api)
    assert (staging.quota, staging.ttl) == (2 * 1024**3, 60)


@pytest.mark.parametrize(
    ("api", "key", "fragment"),
    [
        ({"staging_quota": "1MiB"}, "api.staging_quota", "less than api.max_chunk_bytes"),
        ({"staging_quota": -1}, "api.staging_quota", "negative"),
        ({"staging_quota": "lots"}, "api.staging_quota", "expected a size"),
        ({"staging_ttl_seconds": 0}, "api.staging_ttl_seconds", "greater than or equal to 1"),
        ({"staging_ttl_seconds": 10**9}, "api.staging_ttl_seconds", "less than or equal"),
        ({"max_chunk_bytes": 0}, "api.max_chunk_bytes", "between 1 byte and 1GiB"),
        ({"max_chunk_bytes": "2GiB"}, "api.max_chunk_bytes", "between 1 byte and 1GiB"),
    ],
)
def test_config_errors_name_the_key(api: dict, key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(config(**api))
    assert any(path == key and fragment in msg for path, msg in info.value.problems), str(
        info.value
    )

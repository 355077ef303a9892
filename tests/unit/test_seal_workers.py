"""The seal workers' side (Sealer, seal_files) on real files, and the process protocol with
a real worker subprocess: what it answers, what it leaves to the parent, and that a lost
worker is noticed, never waited for."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
from pathlib import Path

import pytest

from chunkvault import seal_workers
from chunkvault.config import parse_config
from chunkvault.crypto.envelope import open_chunk
from chunkvault.crypto.material import MasterKeys
from chunkvault.seal_workers import (
    Sealer,
    SealWorkers,
    WorkerLost,
    seal_files,
    sealable_below,
    worker_count,
    worker_environment,
)

THRESHOLD = 64 * 1024


@pytest.fixture
def keys() -> MasterKeys:
    return MasterKeys.generate(os.urandom(16))


def tree(root: Path) -> dict[str, bytes]:
    files = {
        "a.txt": b"hello small world\n" * 100,
        "dir/b.bin": os.urandom(9000),
        os.fsdecode(b"dir/caf\xe9\nname"): os.urandom(100),
        "big.bin": os.urandom(THRESHOLD),
    }
    for rel, data in files.items():
        path = root / os.fsencode(rel).decode("utf-8", "surrogateescape")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def test_a_sealed_answer_opens_to_the_file_and_names_it(tmp_path: Path, keys: MasterKeys):
    files = tree(tmp_path)
    sealer = Sealer(keys, str(tmp_path), THRESHOLD, 3)
    for rel in ("a.txt", "dir/b.bin", os.fsdecode(b"dir/caf\xe9\nname")):
        answer = sealer.seal(rel, True, None)
        kind, name, (size, mtime_ns, mode, inode), sha256, chunk_id, wrapped, gen, body = answer
        st = os.stat(tmp_path / rel)
        assert (kind, name) == ("sealed", rel)
        assert (size, mtime_ns, mode, inode) == (st.st_size, st.st_mtime_ns, st.st_mode,
                                                 st.st_ino)  # fmt: skip
        assert chunk_id == keys.chunk_id(files[rel]) and gen == keys.current
        import hashlib

        assert sha256 == hashlib.sha256(files[rel]).hexdigest()
        assert open_chunk(keys, chunk_id, body, wrapped) == files[rel]


def test_what_a_worker_leaves_to_the_parent_or_answers_without_reading(
    tmp_path: Path, keys: MasterKeys
):
    tree(tmp_path)
    (tmp_path / "link").symlink_to(tmp_path / "a.txt")
    sealer = Sealer(keys, str(tmp_path), THRESHOLD, 3)
    st = os.stat(tmp_path / "a.txt")
    (tmp_path / "empty").write_bytes(b"")
    assert sealer.seal("big.bin", True, None) == ("reader", "big.bin")  # at the threshold
    assert sealer.seal("empty", True, None) == ("reader", "empty")  # no chunk at all
    assert sealer.seal("link", True, None) == ("not-regular", "link")
    assert sealer.seal("gone.txt", True, None) == ("gone", "gone.txt")
    assert sealer.seal("a.txt/x", True, None) == ("gone", "a.txt/x")
    stored = (st.st_size, st.st_mtime_ns, st.st_mode)
    assert sealer.seal("a.txt", True, stored) == ("unchanged", "a.txt", st.st_size)


def test_a_file_that_changes_while_read_goes_back_to_the_parent(
    tmp_path: Path, keys: MasterKeys, monkeypatch: pytest.MonkeyPatch
):
    tree(tmp_path)
    path = tmp_path / "a.txt"
    real_readv = os.readv

    def growing(fd: int, buffers: list) -> int:
        with open(path, "ab") as f:
            f.write(b"more")
        return real_readv(fd, buffers)

    monkeypatch.setattr(seal_workers.os, "readv", growing)
    assert Sealer(keys, str(tmp_path), THRESHOLD, 3).seal("a.txt", True, None) == (
        "retry", "a.txt"
    )  # fmt: skip


def test_a_directory_moved_during_a_batch_sends_its_files_back_to_the_parent(
    tmp_path: Path, keys: MasterKeys, monkeypatch: pytest.MonkeyPatch
):
    """A batch opens each directory once; one replaced after that (renamed away, another
    put at its path, or a symlink) is found after the batch, and every answer about a
    file in it becomes ``retry``: what was read there may not be what the path holds."""
    tree(tmp_path)
    (tmp_path / "dir" / "c.txt").write_bytes(b"third\n" * 50)
    sealer = Sealer(keys, str(tmp_path), THRESHOLD, 3)
    with sealer.batch() as batch:
        assert batch.seal("dir/b.bin", True, None)[0] == "sealed"
        assert batch.moved() == set()
        os.rename(tmp_path / "dir", tmp_path / "old")
        (tmp_path / "dir").mkdir()
        (tmp_path / "dir" / "new.txt").write_bytes(b"new")
        assert batch.seal("dir/new.txt", True, None) == ("gone", "dir/new.txt")  # old dir
        assert batch.moved() == {"dir"}
    # Through seal_files: the directory is swapped after the batch's first file.
    shutil.rmtree(tmp_path / "dir")
    os.rename(tmp_path / "old", tmp_path / "dir")
    real = Sealer.seal_open
    calls: list[str] = []

    def swap_after_first(self: Sealer, *args: object) -> tuple:
        answer = real(self, *args)  # type: ignore[arg-type]
        calls.append(answer[1])
        if len(calls) == 1:
            os.rename(tmp_path / "dir", tmp_path / "elsewhere")
            (tmp_path / "dir").symlink_to(tmp_path / "elsewhere")
        return answer

    monkeypatch.setattr(Sealer, "seal_open", swap_after_first)
    answers = seal_files(sealer, [("dir/b.bin", True, None), ("dir/c.txt", True, None),
                                  ("a.txt", True, None)])  # fmt: skip
    assert calls == ["dir/b.bin", "dir/c.txt", "a.txt"]  # c.txt read from the old place
    assert [a[:2] for a in answers] == [("retry", "dir/b.bin"), ("retry", "dir/c.txt"),
                                        ("sealed", "a.txt")]  # fmt: skip


def test_a_batch_stops_after_its_bytes_and_leaves_the_rest_for_later(
    tmp_path: Path, keys: MasterKeys, monkeypatch: pytest.MonkeyPatch
):
    tree(tmp_path)
    monkeypatch.setattr(seal_workers, "BATCH_BYTES", 1)
    answers = seal_files(
        Sealer(keys, str(tmp_path), THRESHOLD, 3),
        [("a.txt", True, None), ("dir/b.bin", True, None), ("big.bin", True, None)],
    )
    assert [a[0] for a in answers] == ["sealed", "later", "later"]


def test_workers_hold_no_passphrase_or_credentials_and_start_only_for_many_files(
    monkeypatch: pytest.MonkeyPatch,
):
    env = {"PATH": "/bin", "CHUNKVAULT_PASSPHRASE": "x", "CHUNKVAULT_PASSPHRASE_FILE": "/p",
           "AWS_SECRET_ACCESS_KEY": "s", "HOME": "/root"}  # fmt: skip
    assert worker_environment(env) == {"PATH": "/bin", "HOME": "/root"}
    counts = {}
    for cores in (1, 2, 3, 16):
        monkeypatch.setattr(seal_workers.os, "cpu_count", lambda cores=cores: cores)
        counts[cores] = (worker_count(seal_workers.MIN_FILES - 1),
                         worker_count(seal_workers.MIN_FILES))  # fmt: skip
    assert counts == {1: (0, 0), 2: (0, 1), 3: (0, 2), 16: (0, 2)}


def test_a_worker_process_answers_batches_and_a_killed_one_is_lost_not_awaited(
    tmp_path: Path, keys: MasterKeys
):
    files = tree(tmp_path)
    workers = SealWorkers(1)
    try:
        workers.start(keys, str(tmp_path), THRESHOLD, 3)
        proc = workers._procs[0]
        assert proc is not None and proc.stdout is not None
        # A whole answer fits in the pipe: the worker goes on while the parent is busy.
        assert fcntl.fcntl(proc.stdout.fileno(), fcntl.F_GETPIPE_SZ) >= seal_workers.PIPE_BYTES
        odd = os.fsdecode(b"dir/caf\xe9\nname")  # not UTF-8, a newline: through the pipe
        answers = workers.seal(0, [("a.txt", True, None), ("big.bin", False, None),
                                   (odd, True, None)])  # fmt: skip
        assert [a[:2] for a in answers] == [("sealed", "a.txt"), ("reader", "big.bin"),
                                            ("sealed", odd)]  # fmt: skip
        assert open_chunk(keys, answers[0][4], answers[0][7], answers[0][5]) == files["a.txt"]
        assert open_chunk(keys, answers[2][4], answers[2][7], answers[2][5]) == files[odd]
        proc = workers._procs[0]
        assert proc is not None
        os.kill(proc.pid, signal.SIGKILL)  # our own child
        proc.wait()
        with pytest.raises(WorkerLost):
            workers.seal(0, [("a.txt", True, None)])
        with pytest.raises(WorkerLost):  # dropped: not tried again
            workers.seal(0, [("a.txt", True, None)])
    finally:
        workers.close()


def test_a_write_only_host_worker_seals_to_the_vault_key(tmp_path: Path) -> None:
    # A writer's keys reach its worker as they are: what it seals, only the owner opens.
    from chunkvault.crypto import vault_seal
    from chunkvault.crypto.material import SEALED_GENERATION, WriterKeys

    private, public = vault_seal.new_key_pair()
    writer = WriterKeys(os.urandom(16), os.urandom(32), {}, SEALED_GENERATION, seal_to=public,
                        writer_id="01020304", writer_key=os.urandom(32))  # fmt: skip
    owner = MasterKeys.generate(writer.vault_uuid)
    owner.vault_private = private
    files = tree(tmp_path)
    workers = SealWorkers(1)
    try:
        workers.start(writer, str(tmp_path), THRESHOLD, 3)
        answer = workers.seal(0, [("a.txt", True, None)])[0]
        assert answer[:2] == ("sealed", "a.txt") and answer[6] == SEALED_GENERATION
        assert answer[4] == writer.chunk_id(files["a.txt"])
        assert vault_seal.is_sealed_dek(answer[5])
        assert open_chunk(owner, answer[4], answer[7], answer[5]) == files["a.txt"]
    finally:
        workers.close()


def test_a_worker_seals_only_what_the_reader_would_keep_as_one_packed_chunk() -> None:
    def below(**chunking: object) -> int:
        peers = [{"name": f"p{i}", "path": f"/tmp/p{i}"} for i in range(3)]
        return sealable_below(parse_config({"peers": peers, "chunking": chunking}).chunking)

    KiB = 1024
    assert below() == 512 * KiB  # the defaults: min_size is the pack threshold
    # FastCDC may cut anywhere after min_size; fixed mode every avg_size bytes.
    assert below(min_size="64KiB", avg_size="128KiB", max_size="1MiB") == 64 * KiB + 1
    assert below(mode="fixed", avg_size="128KiB") == 128 * KiB + 1
    assert below(pack_threshold="16KiB") == 16 * KiB
    assert below(pack_threshold=0) == 0  # packing off: nothing for a worker

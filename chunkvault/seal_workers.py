"""Small files read, hashed and sealed in worker processes: a push's second core.

A push of many small files is bound by one core: every thread of the process takes turns
at the GIL, and the work of one small file (open it symlink-safely, read, SHA-256, keyed
chunk id, compress, seal) is ~0.17 ms of it. Worker processes do that work beside the
parent, which keeps what must be done in one place: dedup against the catalog and the
open packs, packing, committing (docs/architecture.md, "Where a small file's time goes").

    parent (push)                                     worker (this module's serve())
    ("start", vault uuid, master keys, tree root,  ->  keeps them in memory only
     pack threshold, zstd level)
    ("files", [(rel, compress, stored stat)...])   ->  per file, in order:
                                                   <-  [("sealed", rel, stat, sha256,
                                                         chunk id, wrapped DEK,
                                                         generation, body), ...]

Frames are a 4-byte big-endian length and a pickle, over the worker's stdin and stdout
(anonymous pipes to our own child: nothing is written anywhere). The master keys reach
the worker this way and live in its memory as they do in the parent's; the worker gets
the parent's environment without CHUNKVAULT_* and AWS_* variables (it needs no
passphrase and no credentials) and never talks to a peer.

A worker answers only for small files it read whole and unchanged. Anything else goes
back to the parent's own reader path, which handles it as before: ``reader`` (empty, or
not below :func:`sealable_below`), ``retry`` (it changed while read, or was renamed
meanwhile, or a directory it was read through is no longer at its path when the batch
ends: a batch opens each directory once, component by component without following a
symlink, and checks them all after its last file), ``later`` (the worker stops a batch
after ``BATCH_BYTES`` of bodies, so a batch of files near the threshold holds no more
memory than that), ``gone`` (its deletion). ``not-regular``, ``unchanged`` and ``error``
are final answers. A worker that dies or sends what it should not is dropped: its files
are read by the parent, as if there had been no worker.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import pickle
import struct
import subprocess
import sys
from collections.abc import Iterator, Sequence
from typing import IO, TYPE_CHECKING, Any

from chunkvault.crypto.envelope import PLAIN_OFFSET, seal_chunk_into, sealed_size_limit
from chunkvault.crypto.material import MasterKeys, keys_from_bytes
from chunkvault.fsutil import SymlinkInPath, lstat_in_tree, open_dir, open_regular_at, open_subdir

if TYPE_CHECKING:
    from chunkvault.config import ChunkingConfig

log = logging.getLogger(__name__)

#: Bodies a worker returns per batch before it leaves the rest for the next one.
BATCH_BYTES = 4 * 1024 * 1024
#: Files per batch the parent sends (one round trip each).
BATCH_FILES = 64
#: Batches a worker is sent ahead of the one the parent waits for: queued requests are a
#: few KiB, so the worker never waits for the parent to ask (only to read its answers).
BATCHES_AHEAD = 8
#: The answer pipe's size (Linux lets anyone raise it to 1 MiB): a worker writes a whole
#: answer (~0.6 MiB for 64 files of 8 KiB) and goes on while the parent is busy, instead
#: of blocking in the write until the parent reads. A worker then waited ~0.1 s of a
#: 2,000-file push for the parent, instead of ~0.3 s.
PIPE_BYTES = 1024 * 1024
#: A push reads at least this many files before it starts workers: a worker costs ~0.1 s
#: of CPU to start, and saves ~0.2 ms per small file.
MIN_FILES = 500
_FRAME = struct.Struct(">I")
#: A reply frame can hold BATCH_BYTES of bodies plus one file under the pack threshold
#: (which is at most the chunker's max, 16 MiB), plus its small fields.
_MAX_FRAME = BATCH_BYTES + 17 * 1024 * 1024 + BATCH_FILES * 4096

#: (rel, compress, (size, mtime_ns, mode) of its stored version or None)
Request = tuple[str, bool, "tuple[int, int, int] | None"]


class WorkerLost(Exception):
    """A worker died, or broke the protocol: its batch goes to the parent's readers."""


def sealable_below(chunking: ChunkingConfig) -> int:
    """Files a worker seals are smaller than this: under the pack threshold, and whole
    as one chunk, as the reader's chunker would keep them (so both paths make the same
    chunks: a larger file in a chunking with a small min_size is cut in several)."""
    return min(chunking.pack_threshold, chunking.one_chunk_up_to + 1)


def worker_count(files: int) -> int:
    """How many workers a push of ``files`` small files to read starts: none for a few,
    else one per core but the parent's, at most two (none on one core: nothing to gain)."""
    if files < MIN_FILES:
        return 0
    return max(0, min(2, (os.cpu_count() or 1) - 1))


def _read_frame(stream: IO[bytes], limit: int) -> Any | None:
    head = stream.read(_FRAME.size)
    if not head:
        return None
    if len(head) != _FRAME.size:
        raise WorkerLost("a frame was cut short")
    (size,) = _FRAME.unpack(head)
    if size > limit:
        raise WorkerLost(f"a frame of {size} bytes, more than the {limit} allowed")
    data = stream.read(size)
    if len(data) != size:
        raise WorkerLost("a frame was cut short")
    return pickle.loads(data)


def _write_frame(stream: IO[bytes], obj: object) -> None:
    data = pickle.dumps(obj, protocol=5)
    stream.write(_FRAME.pack(len(data)) + data)
    stream.flush()


# --- the worker ------------------------------------------------------------------------


def seal_files(sealer: Sealer, requests: Sequence[Request]) -> list[tuple[Any, ...]]:
    """One batch: an answer per request, in order, until BATCH_BYTES of bodies (then the
    rest are ``later``)."""
    answers: list[tuple[Any, ...]] = []
    sent = 0
    with sealer.batch() as batch:
        for rel, compress, stored in requests:
            if sent >= BATCH_BYTES:
                answers.append(("later", rel))
                continue
            answer = batch.seal(rel, compress, stored)
            if answer[0] == "sealed":
                sent += len(answer[7])
            answers.append(answer)
        moved = batch.moved()
    if moved:  # read through a directory the tree no longer has there: the parent reads them
        answers = [
            ("retry", a[1]) if a[0] != "later" and _parent_of(a[1]) in moved else a for a in answers
        ]
    return answers


def _parent_of(rel: str) -> str:
    return rel.rpartition("/")[0]


class Sealer:
    """The worker's side: small files, a batch at a time, from the tree root it was given."""

    def __init__(self, keys: MasterKeys, root: str, threshold: int, level: int) -> None:
        self.keys = keys
        self.root = root
        self.threshold = threshold
        self.level = level
        # One buffer for every file: the largest small file, sealed in place.
        self.buf = bytearray(sealed_size_limit(max(1, threshold)))

    @contextlib.contextmanager
    def batch(self) -> Iterator[_Batch]:
        batch = _Batch(self)
        try:
            yield batch
        finally:
            batch.close()

    def seal(self, rel: str, compress: bool, stored: tuple[int, int, int] | None) -> tuple:
        """One file alone (a batch of one)."""
        return seal_files(self, [(rel, compress, stored)])[0]

    def seal_open(
        self, parent_fd: int, fd: int, rel: str, name: str, compress: bool,
        stored: tuple[int, int, int] | None,
    ) -> tuple:  # fmt: skip
        """Read, check and seal the open file ``rel`` (entry ``name`` of ``parent_fd``)."""
        before = os.fstat(fd)
        if stored == (before.st_size, before.st_mtime_ns, before.st_mode):
            return ("unchanged", rel, before.st_size)
        if not 0 < before.st_size < self.threshold:
            return ("reader", rel)
        size = before.st_size
        # One byte more than the size: a file that grew meanwhile reads longer.
        view = memoryview(self.buf)[PLAIN_OFFSET : PLAIN_OFFSET + size + 1]
        got = 0
        while got <= size and (n := os.readv(fd, [view[got:]])):
            got += n
        after = os.fstat(fd)
        try:  # still this file under its name (its directory: checked after the batch)
            now = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        except OSError:
            return ("retry", rel)
        if (
            got != size
            or (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns)
            or (now.st_dev, now.st_ino) != (before.st_dev, before.st_ino)
        ):
            return ("retry", rel)
        sha256 = hashlib.sha256(view[:size]).hexdigest()
        del view
        sealed = seal_chunk_into(self.keys, self.buf, size, compress=compress, level=self.level)
        stat = (size, before.st_mtime_ns, before.st_mode, before.st_ino)
        return ("sealed", rel, stat, sha256, sealed.chunk_id, sealed.wrapped_dek,
                sealed.generation, bytes(sealed.body))  # fmt: skip


class _Batch:
    """One batch's view of the tree: the root and each directory opened once (component by
    component, no symlink followed) for all the batch's files in it, instead of once per
    file. Whether each is still where it was is checked once, after the batch
    (:meth:`moved`); each file's own name is checked after it is read."""

    def __init__(self, sealer: Sealer) -> None:
        self.sealer = sealer
        self.root_fd: int | None = None
        self.root_error: OSError | None = None
        try:
            self.root_fd = open_dir(sealer.root)
        except OSError as exc:
            self.root_error = exc
        self.dirs: dict[str, int] = {}

    def _dir(self, parent: str) -> int:
        assert self.root_fd is not None
        fd = self.dirs.get(parent)
        if fd is None:
            fd = self.dirs[parent] = open_subdir(self.root_fd, parent.split("/") if parent else [])
        return fd

    def seal(self, rel: str, compress: bool, stored: tuple[int, int, int] | None) -> tuple:
        if self.root_error is not None:
            return ("error", rel, f"cannot read: {self.root_error.strerror}")
        parent, _, name = rel.rpartition("/")
        try:
            parent_fd = self._dir(parent)
            fd = open_regular_at(parent_fd, name)
        except SymlinkInPath:
            return ("not-regular", rel)
        except (FileNotFoundError, NotADirectoryError):
            return ("gone", rel)
        except OSError as exc:
            return ("error", rel, f"cannot read: {exc.strerror}")
        if fd is None:
            return ("not-regular", rel)
        try:
            return self.sealer.seal_open(parent_fd, fd, rel, name, compress, stored)
        except OSError as exc:
            return ("error", rel, f"cannot read: {exc.strerror}")
        finally:
            os.close(fd)

    def moved(self) -> set[str]:
        """The directories (relative paths) this batch read through that the tree no
        longer has at their path: replaced, renamed, or a symlink now."""
        if self.root_fd is None:
            return set()
        try:
            root_now = os.stat(self.sealer.root)
            root_then = os.fstat(self.root_fd)
        except OSError:
            return set(self.dirs)
        if (root_now.st_dev, root_now.st_ino) != (root_then.st_dev, root_then.st_ino):
            return set(self.dirs)
        moved = set()
        for parent, fd in self.dirs.items():
            then = os.fstat(fd)
            try:
                now = lstat_in_tree(self.root_fd, parent) if parent else root_then
            except OSError:
                moved.add(parent)
                continue
            if (now.st_dev, now.st_ino) != (then.st_dev, then.st_ino):
                moved.add(parent)
        return moved

    def close(self) -> None:
        for fd in self.dirs.values():
            os.close(fd)
        self.dirs.clear()
        if self.root_fd is not None:
            os.close(self.root_fd)
            self.root_fd = None


def serve() -> None:
    """A worker's main: answer batches until the parent closes the pipe."""
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    start = _read_frame(inp, 1024 * 1024)
    if start is None:
        return
    _, vault_uuid, key_bytes, root, threshold, level = start
    sealer = Sealer(keys_from_bytes(vault_uuid, key_bytes), root, threshold, level)
    del key_bytes
    while (message := _read_frame(inp, 64 * 1024 * 1024)) is not None:
        _write_frame(out, seal_files(sealer, message[1]))


# --- the parent ------------------------------------------------------------------------


def worker_environment(env: dict[str, str] | os._Environ[str]) -> dict[str, str]:
    """The parent's environment without what a worker must not hold: the passphrase (and
    every other CHUNKVAULT_ setting) and S3 credentials."""
    return {k: v for k, v in env.items() if not k.startswith(("CHUNKVAULT_", "AWS_"))}


class SealWorkers:
    """Worker processes of one push. :meth:`seal` is called from one thread per worker."""

    def __init__(self, count: int) -> None:
        self._procs: list[subprocess.Popen[bytes] | None] = []
        env = worker_environment(os.environ)
        try:
            for _ in range(count):
                self._procs.append(subprocess.Popen(
                    [sys.executable, "-c", "from chunkvault.seal_workers import serve; serve()"],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True,
                ))  # fmt: skip
                _widen(self._procs[-1].stdout)
        except BaseException:
            self.close()
            raise

    def __len__(self) -> int:
        return len(self._procs)

    def start(self, keys: MasterKeys, root: str, threshold: int, level: int) -> None:
        """Hand every worker the master keys and the tree (after the unlock)."""
        for i in range(len(self._procs)):
            try:
                proc = self._live(i)
                assert proc.stdin is not None
                _write_frame(proc.stdin, ("start", keys.vault_uuid, keys.to_bytes(), root,
                                          threshold, level))  # fmt: skip
            except (WorkerLost, OSError) as exc:
                self._drop(i, exc)

    def seal(self, i: int, requests: list[Request]) -> list[tuple[Any, ...]]:
        """Worker ``i``'s answers for ``requests`` (one per request, in order). Raises
        :class:`WorkerLost` (and drops the worker) if it cannot answer."""
        self.send(i, requests)
        return self.receive(i, requests)

    def send(self, i: int, requests: list[Request]) -> None:
        """Queue a batch with worker ``i`` (its answers come in order: :meth:`receive`).
        A batch is small (paths), so this does not block on a worker busy answering."""
        try:
            proc = self._live(i)
            assert proc.stdin is not None
            _write_frame(proc.stdin, ("files", requests))
        except (WorkerLost, OSError, ValueError) as exc:
            self._drop(i, exc)
            raise WorkerLost(str(exc)) from None

    def receive(self, i: int, requests: list[Request]) -> list[tuple[Any, ...]]:
        """The answers to the oldest batch sent to worker ``i`` (``requests``)."""
        try:
            proc = self._live(i)
            assert proc.stdout is not None
            answers = _read_frame(proc.stdout, _MAX_FRAME)
            if not isinstance(answers, list) or len(answers) != len(requests):
                raise WorkerLost("a reply that does not answer the batch")
            for answer, request in zip(answers, requests, strict=True):
                if not isinstance(answer, tuple) or len(answer) < 2 or answer[1] != request[0]:
                    raise WorkerLost("a reply that does not answer the batch")
            return answers
        except (WorkerLost, OSError, pickle.UnpicklingError, EOFError, ValueError) as exc:
            self._drop(i, exc)
            raise WorkerLost(str(exc)) from None

    def _live(self, i: int) -> subprocess.Popen[bytes]:
        proc = self._procs[i]
        if proc is None:
            raise WorkerLost("dropped before")
        return proc

    def _drop(self, i: int, why: BaseException) -> None:
        proc = self._procs[i]
        if proc is None:
            return
        log.warning("seal worker %d (pid %d) lost (%s): the push reads its files itself",
                    i, proc.pid, str(why) or type(why).__name__)  # fmt: skip
        self._procs[i] = None
        _stop(proc)

    def close(self) -> None:
        for i, proc in enumerate(self._procs):
            self._procs[i] = None
            if proc is not None:
                _stop(proc)


def _widen(pipe: IO[bytes] | None) -> None:
    """Raise the pipe's capacity to PIPE_BYTES where the system allows (Linux; else kept)."""
    if pipe is None or not hasattr(fcntl, "F_SETPIPE_SZ"):
        return
    with contextlib.suppress(OSError):
        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Close its stdin (a worker leaves at EOF, after the batch it is on) and reap it, kill
    it if it lingers; its stdout is closed last, so a thread still reading it gets EOF."""
    try:
        if proc.stdin is not None:
            proc.stdin.close()
    except OSError:
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()

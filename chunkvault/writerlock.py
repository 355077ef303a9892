"""One writer per vault on a machine: ``run``, ``push``, ``init`` and the key commands hold
an exclusive lock on ``<state_dir>/lock`` while they run.

Why: a key command changes what the agent's keys can do (``rotate-master`` drops the
generation a running agent still wraps data keys with), and two pipelines writing one
catalog would interleave versions. Readers (``ls``, ``restore``, ``status``) take no lock.

``flock`` is released by the kernel when the holder dies, SIGKILL included, so a crash
never leaves a stale lock; the file only says who holds it, for the error message.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from chunkvault.errors import ChunkvaultError
from chunkvault.fsutil import ensure_private_dir, open_private_file

LOCK_NAME = "lock"


class VaultBusy(ChunkvaultError):
    exit_code = 11  # as restic's "failed to lock repository"


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"PID {int(info['pid'])} (chunkvault {info['command']}, since {info['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another chunkvault process"  # it has the lock but has not written yet


@contextmanager
def writer_lock(state_dir: Path, vault_id: str, command: str) -> Iterator[None]:
    """Hold the vault's writer lock for the block; fail at once if another process has it."""
    fd = open_private_file(ensure_private_dir(state_dir) / LOCK_NAME)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise VaultBusy(
                f"vault {vault_id!r} is in use by {_holder(fd)}",
                "one writer per vault: wait for it to finish, or stop it first",
            ) from None
        since = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        info = {"pid": os.getpid(), "command": command, "since": since,
                "host": socket.gethostname()}  # fmt: skip
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the lock

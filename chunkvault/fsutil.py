"""Local file-system primitives the rest of the package builds on.

- Durable writes: temp file in the same directory, fsync, rename, fsync dir. A reader (or a
  crash) sees the old file or the new one, never a torn mix. A restore, which writes
  thousands of files, flushes the whole file system once instead (``sync_filesystem``).
- Private state: the state dir and everything in it are for the owner only (dirs 0700,
  files 0600), whatever the process umask, and an older, looser state dir is tightened.
- Walking a tree someone else can change: every component below a trusted directory is
  opened relative to its parent's fd with ``O_NOFOLLOW``, so a directory swapped for a
  symlink can never redirect a read or a write outside the tree.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import random
import stat
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_TEMP_ATTEMPTS = 100
# Temp file names need to be unlikely, not secret (O_EXCL|O_NOFOLLOW is the protection):
# a seeded generator, as the standard library's mkstemp uses, not a getrandom() syscall per
# restored file.
_temp_names = random.Random(os.urandom(16))


# --- durable writes ------------------------------------------------------------------------


def fsync_dir(path: str | Path) -> None:
    """Make a rename or unlink in ``path`` durable."""
    fd = os.open(path, _DIR_FLAGS)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_filesystem(fd: int) -> None:
    """Flush everything written to the file system that holds ``fd`` (``syncfs``): one
    call makes a whole tree of new files durable, where an fsync per file and directory
    waits for the disk thousands of times. Raises ``OSError`` for a write-back error."""
    if _syncfs is None:
        os.sync()
        return
    if _syncfs(fd) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def _find_syncfs() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.syncfs  # type: ignore[no-any-return]
    except (OSError, AttributeError):  # not glibc / Linux: sync() does the same and more
        return None


_syncfs = _find_syncfs()


def write_temp_durably(
    directory: str | Path, data: bytes, mode: int | None = None
) -> tuple[str, os.stat_result]:
    """Write ``data`` to a new fsynced temp file (``.tmp-*``) in ``directory``."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            if mode is not None:
                os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            return tmp, os.fstat(f.fileno())
    except BaseException:
        os.unlink(tmp)
        raise


def atomic_write(path: str | Path, data: bytes, mode: int = PRIVATE_FILE_MODE) -> None:
    """Replace ``path`` with ``data`` atomically and durably. Missing parents are created
    0700 (existing ones are left as they are); the file gets exactly ``mode``."""
    path = Path(path)
    make_private_dirs(path.parent)
    tmp, _ = write_temp_durably(path.parent, data, mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    fsync_dir(path.parent)


# --- private state -------------------------------------------------------------------------


def make_private_dirs(path: str | Path) -> Path:
    """``mkdir -p`` where every directory created gets exactly 0700 (umask-proof: an explicit
    chmod after each mkdir). Directories that already exist are not changed."""
    path = Path(path)
    missing: list[Path] = []
    probe = path
    while not probe.is_dir():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, PRIVATE_DIR_MODE)
        except FileExistsError:
            if not directory.is_dir():  # a file in the way: say what cannot be made
                raise NotADirectoryError(
                    errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path)
                ) from None
            continue  # created by someone else meanwhile: not ours to change
        os.chmod(directory, PRIVATE_DIR_MODE)
    return path


def ensure_private_dir(path: str | Path) -> Path:
    """``path`` exists as a directory only its owner can enter: created 0700 (with any missing
    parents 0700), or tightened to 0700 if an older version left it open to others."""
    path = make_private_dirs(path)
    st = os.stat(path)
    if stat.S_IMODE(st.st_mode) != PRIVATE_DIR_MODE:
        _tighten(path, st, PRIVATE_DIR_MODE, lambda: os.chmod(path, PRIVATE_DIR_MODE))
    return path


def tighten_private_file(path: str | Path) -> None:
    """Make an existing file 0600 (a missing one is fine). A symlink is never followed: it
    is left alone, since whatever it points to is not ours to change."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return
        raise
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) != PRIVATE_FILE_MODE:
            _tighten(Path(path), st, PRIVATE_FILE_MODE, lambda: os.fchmod(fd, PRIVATE_FILE_MODE))
    finally:
        os.close(fd)


def open_private_file(path: str | Path, flags: int = os.O_RDWR) -> int:
    """Open (creating if missing) a file that is exactly 0600, never through a symlink at
    its name, e.g. a lock file in the state dir. Returns the fd; the caller closes it."""
    fd = os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) != PRIVATE_FILE_MODE:
            os.fchmod(fd, PRIVATE_FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _tighten(path: Path, st: os.stat_result, mode: int, chmod: Callable[[], None]) -> None:
    old = stat.S_IMODE(st.st_mode)
    try:
        chmod()
    except PermissionError:
        # Not our file (e.g. a volume owned by root): say so, the data stays as exposed as
        # it already was.
        log.warning("%s is mode %o and cannot be made %o: chmod it yourself", path, old, mode)
        return
    log.info("%s was mode %o (readable by other users): now %o", path, old, mode)


# --- walking a tree without following symlinks -----------------------------------------------


class SymlinkInPath(OSError):
    """A component below the trusted directory is a symlink (``filename`` names it)."""

    def __init__(self, rel: str) -> None:
        super().__init__(errno.ELOOP, "is a symlink", rel)


def open_dir(path: str | Path) -> int:
    """An fd for a trusted directory (the watched tree, a restore target): symlinks in
    ``path`` itself are the user's choice and are followed."""
    return os.open(path, _DIR_FLAGS)


def open_subdir(dir_fd: int, parts: Sequence[str], create: bool = False, mode: int = 0o777) -> int:
    """An fd for ``dir_fd/parts[0]/.../parts[-1]`` opened one component at a time, never
    following a symlink. With ``create``, missing directories are made (``mode``, minus the
    umask). Raises :class:`SymlinkInPath` naming the first component that is a symlink,
    ``NotADirectoryError`` for one that is something else, ``FileNotFoundError`` for a
    missing one (without ``create``). The caller closes the fd."""
    fd = os.dup(dir_fd)
    try:
        for depth, name in enumerate(parts):
            child, _ = open_child_dir(fd, name, "/".join(parts[: depth + 1]), create, mode)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_child_dir(
    fd: int, name: str, rel: str, create: bool = False, mode: int = 0o777
) -> tuple[int, bool]:
    """One step of :func:`open_subdir`: an fd for the directory ``name`` in ``fd``, never
    through a symlink (``rel`` names it in errors), and whether this call made it."""
    made = False
    for _ in range(2):
        try:
            return os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd), made
        except FileNotFoundError:
            if not create:
                raise
        except OSError as exc:
            # Linux answers O_DIRECTORY|O_NOFOLLOW on a symlink with ENOTDIR (or ELOOP):
            # look at the name itself to say which it is.
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            if _is_symlink(name, fd):
                raise SymlinkInPath(rel) from None
            raise NotADirectoryError(errno.ENOTDIR, "is not a directory", rel) from None
        # Made meanwhile (by us or anyone): open it, still without following.
        try:
            os.mkdir(name, mode, dir_fd=fd)
            made = True
        except FileExistsError:
            pass
    raise FileNotFoundError(errno.ENOENT, "vanished while being created", rel)


def _is_symlink(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def lstat_in_tree(dir_fd: int, rel: str) -> os.stat_result:
    """``lstat`` of ``dir_fd/rel`` where no directory component is followed if it is a
    symlink (see :func:`open_subdir` for the errors)."""
    *parents, name = rel.split("/")
    parent = open_subdir(dir_fd, parents)
    try:
        return os.stat(name, dir_fd=parent, follow_symlinks=False)
    finally:
        os.close(parent)


def open_regular_in_tree(dir_fd: int, rel: str) -> int | None:
    """An fd (read-only) for the regular file ``dir_fd/rel``, or None if that is not a
    regular file *in the tree*: a symlink, a device or FIFO, or any directory component a
    symlink. Nothing is opened through a symlink and no device or FIFO is opened at all.
    ``FileNotFoundError`` / ``NotADirectoryError`` mean the path is no longer there."""
    *parents, name = rel.split("/")
    try:
        parent = open_subdir(dir_fd, parents)
    except SymlinkInPath:
        return None
    try:
        return open_regular_at(parent, name)
    finally:
        os.close(parent)


def open_regular_at(parent: int, name: str) -> int | None:
    """:func:`open_regular_in_tree` for the entry ``name`` of the directory ``parent``."""
    if not stat.S_ISREG(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
        return None
    try:
        # NONBLOCK: if a FIFO was swapped in since the lstat, open must not hang on it.
        fd = os.open(
            name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=parent
        )
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def create_temp_in(
    dir_fd: int, prefix: str = ".cv-", suffix: str = ".tmp", exact_mode: bool = True
) -> tuple[int, str]:
    """A new empty 0600 file in ``dir_fd`` under a short random name: ``mkstemp`` relative to
    a directory fd (which the standard library's lacks). O_EXCL|O_NOFOLLOW: a planted file
    or symlink of the same name makes it pick another name, never write through it.
    Opened read-write, so what was written can be read back through the same fd. Without
    ``exact_mode`` the umask may take bits off 0600 (never add any): for a file whose
    mode is set before anyone else may use it."""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(_TEMP_ATTEMPTS):
        name = f"{prefix}{_temp_names.getrandbits(48):012x}{suffix}"
        try:
            fd = os.open(name, flags, PRIVATE_FILE_MODE, dir_fd=dir_fd)
        except FileExistsError:
            continue
        if exact_mode:
            os.fchmod(fd, PRIVATE_FILE_MODE)  # exactly 0600, whatever the umask
        return fd, name
    raise FileExistsError(errno.EEXIST, "no free temporary file name", prefix)

"""inotify change source: kernel events on the tree -> ``Change`` objects for a sink.

Threading: everything (reading events, directory walks, expiring unpaired moves, calling
``sink`` and ``ignore``) runs in ONE daemon thread named ``chunkvault-inotify``. The sink is
never called concurrently, nor while this module holds a lock (it has none); it must be quick
(enqueue) and must not call ``stop()``.

Why more than a translation of events:
- A directory created or moved in is only watched once its event is handled; whatever lands in
  it before is never reported. So every new dir is watched and THEN listed (``_watch_tree``):
  each file is seen by the listing, by inotify, or both. Duplicates are expected.
- MOVED_FROM/MOVED_TO are paired by cookie within ``move_window``; unpaired = left the tree
  (``delete``) or came in (``write`` / walk).
- pyinotify keeps one path per watch. When handling lags behind the disk, its paths and our
  listings disagree (it appends "-unknown-path"; dirs left the tree keep watches with stale
  paths): moved dirs are re-walked after each batch, watches of dirs that left are dropped
  after a check, and a rename we could not follow triggers a resync + ``rescan`` when idle.
"""

from __future__ import annotations

import array
import fcntl
import logging
import os
import stat
import struct
import termios
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from chunkvault import names
from chunkvault.errors import ChunkvaultError
from chunkvault.watcher.events import Change, ChangeSink

with warnings.catch_warnings():  # pyinotify 0.9.6 imports asyncore, deprecated since 3.11
    warnings.simplefilter("ignore", DeprecationWarning)
    import pyinotify

log = logging.getLogger(__name__)

THREAD_NAME = "chunkvault-inotify"
_UNKNOWN = "-unknown-path"  # pyinotify appends this to a watch path it lost track of
_POLL_MS = 100  # how often the loop wakes to expire moves and notice stop()
_RESYNC_GAP = 10.0  # seconds between two resyncs after renames we could not follow
# IN_DONT_FOLLOW|IN_ONLYDIR: never watch through a symlink, even if a dir is swapped for one.
# IN_ATTRIB: a directory we could not read (nor watch: that needs read permission) that is
# chmod-ed readable is reported by its parent's watch; it is walked then.
_MASK = (
    pyinotify.IN_CREATE | pyinotify.IN_MODIFY | pyinotify.IN_CLOSE_WRITE | pyinotify.IN_DELETE
    | pyinotify.IN_MOVED_FROM | pyinotify.IN_MOVED_TO | pyinotify.IN_DELETE_SELF
    | pyinotify.IN_MOVE_SELF | pyinotify.IN_ATTRIB | pyinotify.IN_DONT_FOLLOW
    | pyinotify.IN_ONLYDIR | pyinotify.IN_EXCL_UNLINK
)  # fmt: skip


class WatchLimitError(ChunkvaultError):
    """The kernel refused another inotify watch (or instance)."""

    exit_code = 1


class _QuietPyinotify(logging.Filter):
    """pyinotify logs (to its own stderr handler) situations that are expected and handled here:
    lost watch paths, events of removed watches, dirs gone before they could be watched."""

    _HANDLED = ("The pathname '%s' of this watch", "Unable to retrieve Watch", "rm_watch: cannot")

    def filter(self, record: logging.LogRecord) -> bool:
        msg = str(record.msg)
        # EACCES: an unreadable dir, which the agent's scans warn about once.
        gone = msg.startswith("add_watch: cannot watch") and msg.endswith(
            ("(ENOENT)", "(ENOTDIR)", "(EACCES)")
        )
        return not (gone or msg.startswith(self._HANDLED))


logging.getLogger("pyinotify").addFilter(_QuietPyinotify())

_EVENT_HEADER = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (+ name)


class _Notifier(pyinotify.Notifier):
    """pyinotify decodes each name as strict UTF-8: one name that is not (``caf\\xe9.txt``
    in Latin-1) raises and loses every event read with it. Here names are decoded as the
    os module does (:func:`os.fsdecode`), so each maps back to its exact bytes."""

    def read_events(self) -> None:
        available = array.array("i", [0])
        fcntl.ioctl(self._fd, termios.FIONREAD, available, True)
        data = os.read(self._fd, available[0]) if available[0] > 0 else b""
        offset = 0
        while offset + _EVENT_HEADER.size <= len(data):
            wd, mask, cookie, length = _EVENT_HEADER.unpack_from(data, offset)
            offset += _EVENT_HEADER.size
            name = os.fsdecode(data[offset : offset + length].rstrip(b"\0"))
            offset += length
            self._eventq.append(pyinotify._RawEvent(wd, mask, cookie, name))


def _watch_by_bytes(wm: pyinotify.WatchManager) -> None:
    """pyinotify encodes a watched path as strict UTF-8, so a directory whose name is not
    UTF-8 could not be watched: give the kernel the path's own bytes (os.fsencode)."""
    wrapper = wm._inotify_wrapper
    libc = getattr(wrapper, "_libc", None)  # the ctypes binding (the C extension has none)
    if libc is None:
        return
    add_watch = wrapper._inotify_add_watch

    def by_bytes(fd: int, path: str, mask: int) -> int:
        if names.is_utf8(path):
            return int(add_watch(fd, path, mask))
        return int(libc.inotify_add_watch(fd, os.fsencode(path), mask))

    wrapper._inotify_add_watch = by_bytes


@dataclass(frozen=True)
class Op:
    """A translated event that needs state (pairing moves, walking, watch bookkeeping)."""

    kind: Literal["walk", "moved_from", "moved_to", "self", "attrib"]
    path: str = ""
    is_dir: bool = False
    cookie: int = 0
    wd: int = -1


@dataclass
class _Pending:
    """A MOVED_FROM waiting for its MOVED_TO."""

    path: str
    is_dir: bool
    deadline: float
    wds: list[int]  # the watches of a moved dir's subtree


def _rebase(path: str, old: str, new: str) -> str | None:
    """``path`` with its ``old`` prefix (a directory) replaced by ``new``; None if not under."""
    if path == old or path.startswith(old + "/"):
        return new + path[len(old) :]
    return None


def _relative(path: str | None, root: str) -> str | None:
    rel = _rebase(path, root, "") if path else None
    return rel[1:] if rel else rel


def translate(event: Any, root: str) -> Change | Op | None:
    """Map one pyinotify event to a ``Change``, an ``Op`` or nothing. Pure: no I/O, no state."""
    mask = event.mask
    if mask & pyinotify.IN_Q_OVERFLOW:
        return Change("rescan", "")
    if mask & pyinotify.IN_IGNORED:
        return None
    if mask & (pyinotify.IN_DELETE_SELF | pyinotify.IN_MOVE_SELF):
        return Op("self", wd=event.wd)  # its path may already be bogus: identify it by wd
    rel = _relative(getattr(event, "pathname", None), root)
    if not rel:  # outside the tree, or the root itself
        return None
    is_dir = bool(mask & pyinotify.IN_ISDIR)
    if mask & (pyinotify.IN_MOVED_FROM | pyinotify.IN_MOVED_TO):
        kind: Literal["moved_from", "moved_to"] = (
            "moved_from" if mask & pyinotify.IN_MOVED_FROM else "moved_to"
        )
        return Op(kind, rel, is_dir, cookie=getattr(event, "cookie", 0))
    if mask & pyinotify.IN_CREATE:
        return Op("walk", rel, True) if is_dir else Change("write", rel)
    if mask & pyinotify.IN_DELETE:
        return Change("delete", rel, is_dir=is_dir)
    if is_dir:  # its permissions may have changed: see _attrib
        return Op("attrib", rel, True) if mask & pyinotify.IN_ATTRIB else None
    if mask & pyinotify.IN_CLOSE_WRITE:
        return Change("closed", rel)
    if mask & pyinotify.IN_MODIFY:
        return Change("write", rel)
    return None


def _unlistable(path: str) -> bool:
    """A directory there that we may not list (read) or enter (search): a scan skips it."""
    try:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            return False
    except OSError:
        return False  # gone
    return not os.access(path, os.R_OK | os.X_OK, effective_ids=True, follow_symlinks=False)


def _limit_error() -> WatchLimitError:
    try:
        limit = Path("/proc/sys/fs/inotify/max_user_watches").read_text().strip()
    except OSError:
        limit = "?"
    more = int(limit) * 4 if limit.isdigit() else 524288
    return WatchLimitError(
        f"inotify watch limit reached (fs.inotify.max_user_watches = {limit})",
        hint=f"raise it with `sysctl fs.inotify.max_user_watches={more}` or set watch.mode: poll",
    )


class InotifySource:
    """Watches ``root`` recursively; reports changes as POSIX paths relative to it."""

    def __init__(
        self,
        root: Path,
        sink: ChangeSink,
        *,
        ignore: Callable[[str], bool] | None = None,
        move_window: float = 0.5,
    ) -> None:
        self._root = os.path.realpath(root)  # watch paths derive from it, so events match it
        self._prefix = self._root.rstrip("/") + "/"
        self._sink = sink
        self._ignore = ignore or (lambda _path: False)
        self._window = move_window
        self._wm: pyinotify.WatchManager | None = None
        self._notifier: pyinotify.Notifier | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._root_wd = -1
        self._pending: dict[int, _Pending] = {}  # MOVED_FROM cookie -> waiting for MOVED_TO
        # wd -> path under which the dir's files were reported (listed after being watched,
        # then kept up to date by the moves reported): found elsewhere, it is listed again.
        self._walked: dict[int, str] = {}
        self._refresh: list[str] = []  # dirs moved within the tree: re-walk after the batch
        self._check: set[int] = set()  # watches of dirs that left the tree: events ignored
        self._limit_logged = False
        self._dirty, self._resynced = False, float("-inf")  # see _moved_self

    @property
    def watch_count(self) -> int:
        wm = self._wm
        return len(wm.watches) if wm is not None and self._thread is not None else 0

    def start(self) -> None:
        if self._wm is not None:
            raise RuntimeError("InotifySource.start() called twice")
        try:
            self._wm = wm = pyinotify.WatchManager()
            _watch_by_bytes(wm)
        except OSError as exc:
            raise WatchLimitError(
                f"cannot create an inotify instance: {exc}",
                hint="raise fs.inotify.max_user_instances or set watch.mode: poll",
            ) from None
        try:
            self._root_wd = self._add_watch(self._root, strict=True) or -1
            if self._root_wd < 0:
                raise ChunkvaultError(f"cannot watch {self._root}", "is it a readable directory?")
            self._watch_tree(self._root, emit=False, strict=True)
            self._notifier = _Notifier(wm, default_proc_fun=self._on_event)
            self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
            self._thread.start()
        except BaseException:
            self._thread = None
            wm.close()  # closing the inotify fd drops every watch
            raise

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        self._stopping.set()
        if thread is not None:
            thread.join(timeout=1.0)
            if thread.is_alive():  # only inside a huge walk, which checks _stopping
                log.warning("inotify thread still busy; it will exit by itself")

    def _run(self) -> None:
        assert self._notifier is not None
        notifier, drained = self._notifier, time.monotonic()
        try:
            while not self._stopping.is_set():
                try:
                    notifier.process_events()
                    self._after_batch(drained)
                    ready = notifier.check_events(_POLL_MS)
                    drained = time.monotonic()
                    if ready:
                        notifier.read_events()
                    elif self._dirty and drained - self._resynced >= _RESYNC_GAP:
                        self._dirty, self._resynced = False, drained
                        log.info("inotify lost track of renamed directories; asking for a rescan")
                        self._resync()
                        self._emit(Change("rescan", ""))
                except Exception:
                    log.exception("inotify event handling failed; asking for a rescan")
                    try:
                        self._sink(Change("rescan", ""))
                    except Exception:
                        log.exception("change sink failed")
        finally:
            notifier.stop()  # closes the inotify fd: the kernel drops every watch

    def _after_batch(self, drained: float) -> None:
        # Re-walk moved dirs now that the batch's IN_MOVE_SELF events have been applied.
        refresh, self._refresh = self._refresh, []
        for path in refresh:
            self._watch_tree(path, force=True)
        # A MOVED_TO is queued with its MOVED_FROM, so once everything read up to `drained` is
        # processed, a pending move past its deadline has no partner.
        for cookie, pending in list(self._pending.items()):
            if pending.deadline <= drained:
                del self._pending[cookie]
                self._gone(pending)
        # Watches of dirs that left the tree live on with stale paths (events would name files
        # no longer in it): drop each, unless the kernel says it still watches the dir at its
        # (by now re-walked) path; then list it again, as its events were ignored meanwhile.
        check, self._check = self._check, set()
        watches = self._wm.watches
        keep = {w for w in check if w in watches and self._add_watch(watches[w].path) == w}
        self._drop([w for w in check - keep if w in watches])
        self._dirty |= bool(keep)  # a dir still in the tree whose deletes we may have skipped
        for wd in keep:
            self._walked.pop(wd, None)
            self._watch_tree(watches[wd].path)

    def _on_event(self, event: pyinotify.Event) -> None:
        if event.mask & pyinotify.IN_IGNORED:  # the kernel dropped this watch (dir deleted)
            self._walked.pop(event.wd, None)
        op = translate(event, self._root)
        if isinstance(op, Op) and op.kind == "self":
            return self._moved_self(op.wd)
        if event.wd in self._check:  # its dir may have left the tree: see _after_batch
            return
        if isinstance(op, Change):
            if op.kind == "rescan":
                log.warning("inotify queue overflowed: events were lost, asking for a rescan")
                self._resync()
            self._emit(op)
        elif op is None:
            return
        elif op.kind == "walk":
            self._watch_tree(self._prefix + op.path)
        elif op.kind == "attrib":
            self._attrib(op.path)
        elif op.kind == "moved_from":
            src, wds = self._prefix + op.path, []
            if op.is_dir:
                wds = [
                    wd for wd, w in self._wm.watches.items() if _rebase(w.path, src, "") is not None
                ]
            deadline = time.monotonic() + self._window
            self._pending[op.cookie] = _Pending(op.path, op.is_dir, deadline, wds)
        elif op.kind == "moved_to":
            self._moved_to(op)

    def _moved_self(self, wd: int) -> None:
        """IN_MOVE_SELF / IN_DELETE_SELF of a watched directory."""
        if wd == self._root_wd:
            log.warning("watched root %s was deleted or moved; asking for a rescan", self._root)
            return self._emit(Change("rescan", ""))
        # This rename came after any MOVED_TO of earlier ones: a pending one is unpaired.
        gone = [cookie for cookie, pending in self._pending.items() if wd in pending.wds]
        for cookie in gone:
            self._gone(self._pending.pop(cookie))
        watch = self._wm.watches.get(wd)
        if watch is not None and watch.path.endswith(_UNKNOWN):  # see _moved_to
            watch.path = watch.path[: -len(_UNKNOWN)]  # its last known path beats a bogus one
            self._refresh.append(watch.path)
            self._check.add(wd)  # it may have left the tree
            self._dirty = self._dirty or not gone  # a rename we could not follow

    def _moved_to(self, op: Op) -> None:
        src = self._pending.pop(op.cookie, None) if op.cookie else None
        if src is None:  # moved in from outside: a creation
            if op.is_dir:
                self._watch_tree(self._prefix + op.path)
            else:
                self._emit(Change("write", op.path))
        elif not op.is_dir and self._ignore(op.path):  # e.g. notes.txt -> notes.txt.swp
            self._emit(Change("delete", src.path))
        else:  # an ignored src (editor temp file) still reports the target as a move
            self._sink(Change("move", op.path, src=src.path, is_dir=op.is_dir))
            if op.is_dir:  # what we know under src is now under dst, as for the consumer
                for pending in self._pending.values():
                    pending.path = _rebase(pending.path, src.path, op.path) or pending.path
                old, new = self._prefix + src.path, self._prefix + op.path
                for wd, path in self._walked.items():
                    self._walked[wd] = _rebase(path, old, new) or path
                # When handling lags behind the disk, pyinotify loses track of watch paths
                # (it then appends _UNKNOWN) and a dir created then renamed before its
                # IN_CREATE was handled has no watch: re-walk the moved dir to fix both.
                self._refresh.append(new)

    def _attrib(self, rel: str) -> None:
        """A directory's attributes changed (chmod, chown, touch). If it just became readable,
        it was neither watched nor listed: watch and list it (and what is below) now. The
        consumer is asked to rescan it too: a scan says which dirs are unreadable, and
        catches files in a dir that was listable but not searchable."""
        self._watch_tree(self._prefix + rel)  # a no-op for a dir watched and listed
        self._emit(Change("rescan", rel, is_dir=True))

    def _gone(self, pending: _Pending) -> None:
        """A MOVED_FROM without partner: the entry left the tree."""
        self._emit(Change("delete", pending.path, is_dir=pending.is_dir))
        self._check.update(pending.wds)

    def _drop(self, wds: list[int]) -> None:
        if wds and self._wm is not None:
            self._wm.rm_watch(wds, quiet=True)
            for wd in wds:
                self._walked.pop(wd, None)

    def _emit(self, change: Change) -> None:
        if change.is_dir or change.kind == "rescan" or not self._ignore(change.path):
            self._sink(change)

    def _add_watch(self, path: str, *, strict: bool = False) -> int | None:
        """The wd of ``path``; 0: list it unwatched (watch limit); None: skip it (gone, or a
        symlink: listing one would follow it)."""
        assert self._wm is not None
        try:
            ret = self._wm.add_watch(path, _MASK, rec=False, auto_add=True, quiet=False)
        except pyinotify.WatchManagerError as exc:  # message ends "Errno=... (ENOSPC)"
            if "ENOSPC" not in str(exc):
                log.debug("not watching %s: %s", path, exc)  # gone, or not a directory
            elif strict:
                raise _limit_error() from None
            else:  # keep going unwatched: the listing still reports what is there now
                if not self._limit_logged:
                    self._limit_logged = True
                    log.error("%s; new directories are now only seen by rescans", _limit_error())
                return 0
            return None
        except UnicodeError:  # only without ctypes (see _watch_by_bytes)
            log.warning("not watching %s: its name is not UTF-8", names.show(path))
            return None
        return ret.get(path)

    def _watch_tree(
        self, top: str, *, emit: bool = True, strict: bool = False, force: bool = False
    ) -> set[int]:
        """Watch each directory under ``top`` BEFORE listing it; emit ``write`` for the files of
        directories never listed before. Returns the wds watched.

        A directory listed since it was watched is skipped with its subtree (anything new in it
        has its own event) unless ``force``; re-adding a watch also resets pyinotify's path.
        """
        seen: set[int] = set()
        stack = [top]
        while stack and not self._stopping.is_set():
            path = stack.pop()
            wd = self._add_watch(path, strict=strict)
            fresh = wd is not None and self._walked.get(wd) != path
            if wd is None or not (fresh or force):
                if wd is None and emit and _unlistable(path):  # no read: no watch either
                    self._emit(Change("rescan", path[len(self._prefix) :], is_dir=True))
                continue
            if wd:
                seen.add(wd)
            if _unlistable(path):  # read but no search: names, but none of its files
                # Left unlisted (not marked walked): the consumer's scan reports it, and its
                # chmod (IN_ATTRIB) walks it.
                if emit and path != self._root:
                    self._emit(Change("rescan", path[len(self._prefix) :], is_dir=True))
                continue
            if wd:
                self._walked[wd] = path
            try:
                with os.scandir(path) as entries:
                    for entry in entries:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                        elif emit and fresh and entry.is_file(follow_symlinks=False):
                            self._emit(Change("write", entry.path[len(self._prefix) :]))
            except OSError as exc:
                log.debug("cannot list %s: %s", path, exc)  # deleted meanwhile
        return seen

    def _resync(self) -> None:
        """After lost events (the consumer rescans): re-walk everything, adding missing watches
        and fixing paths, and drop the watches of directories no longer in the tree."""
        assert self._wm is not None
        seen = self._watch_tree(self._root, emit=False, force=True)
        if not self._stopping.is_set():
            self._drop([wd for wd in self._wm.watches if wd not in seen])

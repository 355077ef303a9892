"""What every backend's ``list`` promises, enforced in one place on what the source yields.

A backend turns its source (S3 pages, a directory walk, a dict) into :class:`ObjectInfo`
and passes them through :func:`checked_listing`, which holds a peer to the contract:

- every key starts with the requested prefix, and keys come in strictly increasing order
  (S3 lists in UTF-8 byte order, which is code point order: the order ``str`` compares
  in). So a page can never repeat and a listing cannot loop on the same keys;
- at most ``limit`` (:data:`~chunkvault.backends.base.MAX_LISTING`) keys, so a peer that
  invents ever new keys is cut off at a known cost;
- sizes between 0 and :data:`MAX_OBJECT_SIZE`.

A breach raises :class:`MalformedReply` for that peer: callers treat it as unlistable and
use the others. Keys that are well-formed in order but are not valid object keys (``.evil``,
``a b``, ``..``) cannot be ours, and :meth:`Peer.get` would refuse them: they are skipped
with one warning per listing, not one per key, so a hostile peer cannot flood the log.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

from chunkvault.backends.base import MAX_LISTING, MalformedReply, ObjectInfo, validate_key

log = logging.getLogger(__name__)

#: S3's largest object (5 TiB); no backend holds a larger one.
MAX_OBJECT_SIZE = 5 * 1024**4


def show_key(key: object, limit: int = 80) -> str:
    """A peer-supplied key, safe for one log line: quoted, escaped, shortened."""
    text = repr(key)
    return text if len(text) <= limit else f"{text[: limit - 5]}...{text[-1]}"


def checked_size(peer: str, action: str, size: object) -> int:
    """A size a peer reported, or MalformedReply."""
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_OBJECT_SIZE:
        raise MalformedReply(peer, f"{action}: impossible object size {show_key(size)}")
    return size


def checked_listing(
    peer: str, prefix: str, entries: Iterable[ObjectInfo], limit: int = MAX_LISTING
) -> Iterator[ObjectInfo]:
    """Yield ``entries`` that keep the listing contract (see the module docstring)."""
    action = f"list {prefix!r}"
    last: str | None = None
    count = 0
    skipped = False
    for info in entries:
        key = info.key
        if not isinstance(key, str) or not key.startswith(prefix):
            raise MalformedReply(peer, f"{action}: key {show_key(key)} is outside the prefix")
        if last is not None and key <= last:
            raise MalformedReply(
                peer,
                f"{action}: key {show_key(key)} came after {show_key(last)}; the peer lists "
                "out of order or repeats pages",
            )
        last = key
        count += 1
        if count > limit:
            raise MalformedReply(
                peer,
                f"{action}: more than {limit} objects; the peer lists without end (or holds "
                "more objects than chunkvault lists from one peer)",
            )
        checked_size(peer, f"{action}: {show_key(key)}", info.size)
        try:
            validate_key(key)
        except ValueError:
            if not skipped:
                log.warning(
                    "peer %s: skipping %s and any further keys under %r that are not valid "
                    "object keys (chunkvault never writes them)",
                    peer,
                    show_key(key),
                    prefix,
                )
                skipped = True
            continue
        yield info

"""A peer wrapper is a :class:`Peer` around an inner :class:`Peer` that adds one concern
(a concurrency limit, retries, health tracking). :class:`WrappingPeer` validates arguments
*before* delegating, so a bad key never takes a slot, is never retried and never counts as
a peer failure, and funnels every operation through two hooks:

- :meth:`WrappingPeer._call` for the single-request operations;
- :meth:`WrappingPeer._iterate` for ``list``, whose requests happen while the caller
  iterates (one request per page), not when ``list()`` is called.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TypeVar

from chunkvault.backends.base import (
    DEFAULT_MAX_GET,
    Buffer,
    ObjectInfo,
    Peer,
    validate_buffer,
    validate_key,
    validate_max_size,
    validate_metadata,
    validate_prefix,
    validate_range,
)

T = TypeVar("T")


class WrappingPeer(Peer):
    """A peer that forwards to ``inner``; subclasses override the two hooks."""

    def __init__(self, inner: Peer) -> None:
        self.inner = inner
        self.name = inner.name
        self.kind = inner.kind

    @property
    def location(self) -> str:
        return self.inner.location

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"

    # -- hooks ------------------------------------------------------------------------------

    def _call(self, op: str, fn: Callable[[], T]) -> T:
        """Run one operation on the inner peer (``op`` names it for logs and errors)."""
        return fn()

    def _iterate(self, prefix: str) -> Iterator[ObjectInfo]:
        """Iterate the inner listing; called lazily, when the caller starts iterating."""
        return iter(self.inner.list(prefix))

    # -- the Peer contract, once for every wrapper ------------------------------------------

    def create_container(self) -> bool:
        return self._call("create_container", self.inner.create_container)

    def put(self, key: str, body: Buffer, metadata: Mapping[str, str] | None = None) -> ObjectInfo:
        validate_key(key)
        meta = validate_metadata(metadata)
        return self._call("put", lambda: self.inner.put(key, body, meta))

    def get(self, key: str, max_size: int = DEFAULT_MAX_GET) -> bytes:
        validate_key(key)
        validate_max_size(max_size)
        return self._call("get", lambda: self.inner.get(key, max_size))

    def get_into(self, key: str, buf: memoryview, max_size: int) -> int:
        # Every attempt (RetryPeer) rewrites the buffer from its start.
        validate_key(key)
        view = validate_buffer(buf, max_size)
        return self._call("get", lambda: self.inner.get_into(key, view, max_size))

    def get_range_into(self, key: str, buf: memoryview, offset: int, length: int) -> None:
        # Every attempt (RetryPeer) rewrites buf[:length] from its start.
        validate_key(key)
        view = validate_range(buf, offset, length)
        self._call("get_range", lambda: self.inner.get_range_into(key, view, offset, length))

    def stat(self, key: str) -> ObjectInfo:
        validate_key(key)
        return self._call("stat", lambda: self.inner.stat(key))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        validate_prefix(prefix)
        return self._iterate(prefix)

    def delete(self, key: str) -> None:
        validate_key(key)
        self._call("delete", lambda: self.inner.delete(key))

    def replace_metadata(self, key: str, metadata: Mapping[str, str]) -> ObjectInfo:
        validate_key(key)
        meta = validate_metadata(metadata)
        return self._call("replace_metadata", lambda: self.inner.replace_metadata(key, meta))

    def prepare(self) -> None:
        self.inner.prepare()

    def close(self) -> None:
        self.inner.close()

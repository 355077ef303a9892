"""The local catalog (SQLite, WAL): a cache of what the peers hold."""

from chunkvault.catalog.store import Catalog, ChunkRow, PackRow, VersionRow

__all__ = ["Catalog", "ChunkRow", "PackRow", "VersionRow"]

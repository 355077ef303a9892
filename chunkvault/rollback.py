"""Noticing peers that roll files back. A peer set can drop a file's newest manifest (or
withhold its tombstone) and keep the older ones: a fresh machine would then restore an old
version (or a deleted file) without any error, because each old manifest is still
authentic. Only a machine that knows better can notice, and this machine's catalog does:
it recorded the name of every version it stored or saw.

Here: the newest version of every file in the catalog must still be listed by some peer.
What cannot be detected (a fresh machine, or a rollback to before this catalog existed)
is in docs/format.md's threat model.
"""

from __future__ import annotations

from dataclasses import dataclass

from chunkvault.backends.base import PeerError
from chunkvault.catalog import VersionRow
from chunkvault.manifest import manifests_prefix
from chunkvault.vault import Vault


@dataclass(frozen=True)
class MissingVersion:
    path: str
    manifest: str
    deleted: bool  # a withheld tombstone: the file would come back on a fresh machine
    older_listed: bool  # older versions are still there: a rollback, not a plain loss


def missing_latest(vault: Vault) -> list[MissingVersion] | None:
    """Files whose newest version no peer lists (its manifest batch, or its own manifest
    object for a version stored before batches), or None when some peer could not be
    listed (a version may sit only there: nothing can be concluded)."""
    listed: set[str] = set()
    prefix = manifests_prefix(vault.config.vault.id)
    for placed in vault.peers:
        try:
            listed.update(info.key for info in placed.peer.list(prefix))
        except PeerError:
            return None

    def present(version: VersionRow) -> bool:
        return (version.batch or version.manifest) in listed

    return [
        MissingVersion(
            v.path,
            v.manifest,
            v.deleted,
            any(present(older) for older in vault.catalog.versions(v.path) if older != v),
        )
        for v in vault.catalog.latest_all()
        if not present(v)
    ]

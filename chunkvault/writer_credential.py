"""A writer credential (`chunkvault key writer-credential`): what a write-only host needs to
store into a vault, and nothing that decrypts it (docs/format.md, "Writer credentials").

    {"format": "chunkvault-writer-credential", "v": 1, "vault_id": "home",
     "vault_uuid": "<32 hex>", "writer_id": "<8 hex>", "label": "nas",
     "public_key": "<64 hex>", "id_key": "<64 hex>", "writer_key": "<64 hex>"}

- ``public_key``: the vault's X25519 public key, which data keys and manifests are sealed
  to (:mod:`chunkvault.crypto.vault_seal`); only the vault's private key, wrapped by the
  master key in the keyring, opens them.
- ``id_key``: this writer's chunk-id key, derived from the vault's
  (``domains.writer_id_key``), so that the writer deduplicates what it stores. Each state
  dir that uses the credential derives its own id domain from it (:func:`writer_keys`), so
  two hosts (or a host that lost its state dir) never write one chunk object with two data
  keys. It lets its holder test whether a given content is among what this writer stored
  (compute its id, look for it on a peer), nothing about the owner's or other writers'
  data, and it reads nothing.
- ``writer_key``: authenticates what this writer stores, so that a peer (which may know the
  public key) cannot pass its own data off as a writer's; the owner keeps it in the
  keyring and can revoke it.

Written once, mode 0600, never over an existing file.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from chunkvault.crypto.domains import domain_id_key
from chunkvault.crypto.material import SEALED_GENERATION, WriterKeys
from chunkvault.errors import ChunkvaultError
from chunkvault.fsutil import PRIVATE_FILE_MODE

FORMAT = "chunkvault-writer-credential"
VERSION = 1
MAX_BYTES = 4096
_HEX32 = re.compile(r"[0-9a-f]{64}")
_ID = re.compile(r"[0-9a-f]{8}")


class CredentialError(ChunkvaultError):
    exit_code = 2


@dataclass(frozen=True)
class WriterCredential:
    vault_id: str
    vault_uuid: bytes
    writer_id: str
    label: str
    public_key: bytes
    id_key: bytes
    writer_key: bytes

    def __repr__(self) -> str:  # never print key bytes, even in a traceback
        return f"WriterCredential(vault={self.vault_id!r}, writer={self.label!r})"

    def to_bytes(self) -> bytes:
        return (
            json.dumps(
                {
                    "format": FORMAT,
                    "v": VERSION,
                    "vault_id": self.vault_id,
                    "vault_uuid": self.vault_uuid.hex(),
                    "writer_id": self.writer_id,
                    "label": self.label,
                    "public_key": self.public_key.hex(),
                    "id_key": self.id_key.hex(),
                    "writer_key": self.writer_key.hex(),
                },
                indent=1,
            ).encode()
            + b"\n"
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> WriterCredential:
        try:
            obj = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise CredentialError("the writer credential is not JSON") from None
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise CredentialError("not a chunkvault writer credential")
        if obj.get("v") != VERSION:
            raise CredentialError(
                f"writer credential version {str(obj.get('v'))[:10]!r} is not supported",
                "issue a new one with this chunkvault's `key writer-credential`",
            )
        fields = {}
        for name, pattern in (("vault_uuid", re.compile(r"[0-9a-f]{32}")), ("writer_id", _ID),
                              ("public_key", _HEX32), ("id_key", _HEX32),
                              ("writer_key", _HEX32)):  # fmt: skip
            value = obj.get(name)
            if not isinstance(value, str) or not pattern.fullmatch(value):
                raise CredentialError(f"the writer credential's {name} is malformed")
            fields[name] = value
        vault_id, label = obj.get("vault_id"), obj.get("label")
        if not isinstance(vault_id, str) or not 0 < len(vault_id) <= 64:
            raise CredentialError("the writer credential's vault_id is malformed")
        if not isinstance(label, str) or not 0 < len(label) <= 64:
            raise CredentialError("the writer credential's label is malformed")
        return cls(
            vault_id, bytes.fromhex(fields["vault_uuid"]), fields["writer_id"], label,
            bytes.fromhex(fields["public_key"]), bytes.fromhex(fields["id_key"]),
            bytes.fromhex(fields["writer_key"]),
        )  # fmt: skip


def write_new(path: Path, credential: WriterCredential) -> None:
    """Create ``path`` (mode 0600) holding the credential; CredentialError if it exists."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     PRIVATE_FILE_MODE)  # fmt: skip
    except FileExistsError:
        raise CredentialError(
            f"{path} exists: a credential is never written over a file",
            "choose another --out, or remove the old file first",
        ) from None
    except OSError as exc:
        raise CredentialError(f"cannot create {path}: {exc.strerror}") from None
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)  # whatever the umask
        os.write(fd, credential.to_bytes())
        os.fsync(fd)
    except OSError as exc:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise CredentialError(f"cannot write {path}: {exc.strerror}") from None
    os.close(fd)


def load(path: Path) -> WriterCredential:
    """Read a credential file; CredentialError if it is missing, readable by others, too
    large or malformed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise CredentialError(f"cannot open writer credential {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if st.st_mode & 0o077:
            raise CredentialError(
                f"writer credential {path} is readable by others (mode {st.st_mode & 0o777:o})",
                f"chmod 600 {path}",
            )
        data = os.read(fd, MAX_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_BYTES:
        raise CredentialError(f"writer credential {path} is larger than any credential")
    return WriterCredential.from_bytes(data)


def writer_keys(credential: WriterCredential, state_dir: Path) -> WriterKeys:
    """The keys a write-only host seals with, in the id domain of its state dir (made at
    first use: a random name, kept in its catalog). CredentialError if the state dir
    belongs to the owner or to another writer."""
    from chunkvault.catalog import Catalog
    from chunkvault.catalog.store import WRITER_ID
    from chunkvault.vault import CATALOG_NAME, GENERATION_FLOOR, WRITER_DOMAIN

    state_dir.mkdir(parents=True, exist_ok=True)
    catalog = Catalog(state_dir / CATALOG_NAME)
    try:
        if int(catalog.get_meta(GENERATION_FLOOR) or 0) > 0:
            raise CredentialError(
                f"state_dir {state_dir} holds a catalog opened with the passphrase",
                "give the write-only host a state_dir of its own",
            )
        writer = catalog.first_meta(WRITER_ID, credential.writer_id)
        if writer != credential.writer_id:
            raise CredentialError(
                f"state_dir {state_dir} belongs to writer {writer}, not to this credential's "
                f"{credential.writer_id}",
                "give each writer credential a state_dir of its own",
            )
        domain = catalog.first_meta(WRITER_DOMAIN, os.urandom(16).hex())
    finally:
        catalog.close()
    return WriterKeys(
        credential.vault_uuid, domain_id_key(credential.id_key, f"state-{domain}"), {},
        SEALED_GENERATION, seal_to=credential.public_key, writer_id=credential.writer_id,
        writer_key=credential.writer_key,
    )  # fmt: skip

"""Key slots (LUKS/borg style): each slot wraps the same master material under a key
derived from its own passphrase, plus a verifier that tells "wrong passphrase" apart from
"keyring corrupted". Changing a passphrase re-wraps one small blob and touches no data.

Pure: (de)serialisation and slot operations only; storing the JSON is keystore.py's job.
The JSON layout is specified in docs/format.md.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import struct
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from chunkvault.crypto import vault_seal
from chunkvault.crypto.kdf import KdfError, KdfName, KdfParams
from chunkvault.crypto.material import MasterKeys, MaterialError, TrustedWriter
from chunkvault.errors import ChunkvaultError

FORMAT = "chunkvault-keyring"
VERSION = 2  # 2: revision and slots authenticated by a MAC under the master material
# 3: also a vault key pair and writers (write-only hosts, issue 14). Slots, their AADs and
# the MAC are version 2's; the number only keeps versions that would drop those fields
# on their next save from reading such a keyring.
WITH_VAULT_KEY = 3
READABLE_VERSIONS = (1, 2, 3)
VERIFIER_PLAINTEXT = b"key_is_correct"  # the seed owner's verifier constant
NONCE_BYTES = 12
UUID_BYTES = 16
MAC_BYTES = 32
MAX_SLOTS = 16
MAX_REVISION = 2**53 - 1  # the integers every JSON reader keeps exact
# Sum of every slot's KDF work (KiB x passes): a hostile keyring cannot make an unlock
# cost more than ~16 default slots (each 64 MiB x 3 passes).
MAX_TOTAL_KDF_COST_KIB = 8 * 1024 * 1024
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._@-]{0,63}$")
_SLOT_ID = re.compile(r"^[0-9a-f]{8}$")
MAX_WRITERS = 64
SECRET_BYTES = 32
_WRAPPED_SECRET_BYTES = NONCE_BYTES + SECRET_BYTES + 16
_VERIFIER_BYTES = NONCE_BYTES + len(VERIFIER_PLAINTEXT) + 16
_MAX_MATERIAL_BYTES = 4096


class WrongPassphrase(ChunkvaultError):
    exit_code = 3

    def __init__(
        self, message: str = "wrong passphrase: it opens none of the keyring's slots"
    ) -> None:
        super().__init__(
            message,
            "check $CHUNKVAULT_PASSPHRASE or --passphrase-file; "
            "`chunkvault key list` shows the slots",
        )


class KeyringCorrupted(ChunkvaultError):
    exit_code = 4


class KeyringFormatError(KeyringCorrupted):
    """The keyring JSON is malformed (not a decryption failure)."""


class KeyringTampered(KeyringCorrupted):
    """The passphrase opens a slot, but the keyring's MAC does not verify: its revision or
    slots were changed by someone without the master key (a hostile or broken peer)."""


class SlotError(ChunkvaultError):
    exit_code = 2


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: Any, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (ValueError, TypeError):
        raise KeyringFormatError(f"keyring: {what} is not valid base64") from None


def _aad(kind: str, vault_uuid: bytes, slot_id: str) -> bytes:
    return f"chunkvault/{kind}".encode() + bytes([VERSION]) + vault_uuid + slot_id.encode()


def _seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def _open(key: bytes, blob: bytes, aad: bytes) -> bytes:
    return AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _date_ns(value: str, what: str) -> int:
    """A date as :func:`_now` writes it, in ns since the epoch; KeyringFormatError if it is
    not one (with its time zone)."""
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise KeyringFormatError(f"keyring: {what}: bad date") from None
    if when.tzinfo is None:
        raise KeyringFormatError(f"keyring: {what}: a date without its time zone")
    return int(when.timestamp()) * 10**9


@dataclass(frozen=True)
class Slot:
    id: str
    label: str
    created: str
    kdf: KdfParams
    verifier: bytes
    material: bytes
    # Set on the old slot by an interrupted `key passwd` (the id of its replacement); the
    # rerun, or `key verify` with the new passphrase, removes it.
    superseded_by: str | None = None

    @property
    def active(self) -> bool:
        return self.superseded_by is None

    def to_json(self) -> dict[str, Any]:
        data = {
            "id": self.id,
            "label": self.label,
            "created": self.created,
            "kdf": self.kdf.to_json(),
            "verifier": _b64(self.verifier),
            "material": _b64(self.material),
        }
        if self.superseded_by is not None:
            data["superseded_by"] = self.superseded_by
        return data

    @classmethod
    def from_json(cls, data: Any) -> Slot:
        if not isinstance(data, dict):
            raise KeyringFormatError("keyring: a slot is not an object")
        try:
            slot_id, label, created = data["id"], data["label"], data["created"]
            superseded = data.get("superseded_by")
            for name, value in (("id", slot_id), ("label", label), ("created", created)):
                if not isinstance(value, str):
                    raise KeyringFormatError(f"keyring: slot {name} is not a string")
            if not _SLOT_ID.match(slot_id):
                raise KeyringFormatError(f"keyring: bad slot id {slot_id[:20]!r}")
            if not _LABEL.match(label) or len(created) > 64:
                raise KeyringFormatError(f"keyring: slot {slot_id}: bad label or date")
            if superseded is not None and not (
                isinstance(superseded, str) and _SLOT_ID.match(superseded)
            ):
                raise KeyringFormatError(f"keyring: slot {slot_id}: bad superseded_by")
            kdf = KdfParams.from_json(data["kdf"])
            verifier = _unb64(data["verifier"], f"slot {slot_id} verifier")
            material = _unb64(data["material"], f"slot {slot_id} material")
        except KeyError as exc:
            raise KeyringFormatError(f"keyring: malformed slot: missing {exc}") from None
        except KdfError as exc:
            raise KeyringFormatError(f"keyring: slot {data.get('id')}: {exc}") from None
        if len(verifier) != _VERIFIER_BYTES or not 0 < len(material) <= _MAX_MATERIAL_BYTES:
            raise KeyringFormatError(f"keyring: slot {slot_id}: bad verifier or material size")
        return cls(slot_id, label, created, kdf, verifier, material, superseded)


@dataclass(frozen=True)
class VaultKey:
    """The vault's X25519 key pair: the public key as it is, the private key wrapped by
    the master KEK of ``generation`` (``key rotate-master`` re-wraps it)."""

    public: bytes
    wrapped: bytes
    generation: int

    def to_json(self) -> dict[str, Any]:
        return {"public": _b64(self.public), "private": _b64(self.wrapped),
                "generation": self.generation}  # fmt: skip

    @classmethod
    def from_json(cls, data: Any) -> VaultKey:
        if not isinstance(data, dict):
            raise KeyringFormatError("keyring: vault_key is not an object")
        public = _unb64(data.get("public"), "vault_key public")
        wrapped = _unb64(data.get("private"), "vault_key private")
        generation = data.get("generation")
        if len(public) != SECRET_BYTES or len(wrapped) != _WRAPPED_SECRET_BYTES:
            raise KeyringFormatError("keyring: vault_key has bad sizes")
        if type(generation) is not int or not 0 < generation < 2**32:
            raise KeyringFormatError("keyring: vault_key has a bad generation")
        return cls(public, wrapped, generation)


@dataclass(frozen=True)
class Writer:
    """A writer credential issued (`key writer-credential`): its id and label, and its
    key (which authenticates what that writer stores) wrapped by the master KEK of
    ``generation``. ``revoked``: when `key revoke-writer` stopped trusting it."""

    id: str
    label: str
    created: str
    wrapped: bytes
    generation: int
    revoked: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "label": self.label,
            "created": self.created,
            "key": _b64(self.wrapped),
            "generation": self.generation,
        }
        if self.revoked is not None:
            data["revoked"] = self.revoked
        return data

    @classmethod
    def from_json(cls, data: Any) -> Writer:
        if not isinstance(data, dict):
            raise KeyringFormatError("keyring: a writer is not an object")
        writer_id, label, created = data.get("id"), data.get("label"), data.get("created")
        revoked, generation = data.get("revoked"), data.get("generation")
        if not (isinstance(writer_id, str) and _SLOT_ID.match(writer_id)):
            raise KeyringFormatError("keyring: bad writer id")
        if not (isinstance(label, str) and _LABEL.match(label)):
            raise KeyringFormatError(f"keyring: writer {writer_id}: bad label")
        for value in (created, revoked):
            if value is not None and not (isinstance(value, str) and len(value) <= 64):
                raise KeyringFormatError(f"keyring: writer {writer_id}: bad date")
        if created is None:
            raise KeyringFormatError(f"keyring: writer {writer_id}: no created date")
        if revoked is not None:
            _date_ns(revoked, f"writer {writer_id} revoked")  # what readers will compare
        wrapped = _unb64(data.get("key"), f"writer {writer_id} key")
        if len(wrapped) != _WRAPPED_SECRET_BYTES:
            raise KeyringFormatError(f"keyring: writer {writer_id}: bad key size")
        if type(generation) is not int or not 0 < generation < 2**32:
            raise KeyringFormatError(f"keyring: writer {writer_id}: bad generation")
        return cls(writer_id, label, created, wrapped, generation, revoked)


def _secret_aad(kind: str, vault_uuid: bytes, name: str, generation: int) -> bytes:
    return (f"chunkvault/{kind}".encode() + bytes([WITH_VAULT_KEY]) + vault_uuid
            + struct.pack(">I", generation) + name.encode())  # fmt: skip


class KdfCache:
    """Slot KEKs already derived in this process, keyed by (passphrase, KDF parameters):
    the copies of one keyring on several peers share their slots, so trying every copy
    costs one derivation per distinct slot, not one per copy."""

    def __init__(self) -> None:
        self._keys: dict[tuple[str, str, bytes, tuple[tuple[str, int], ...]], bytes] = {}

    def derive(self, kdf: KdfParams, passphrase: str) -> bytes:
        key = (passphrase, kdf.alg, kdf.salt, tuple(sorted(kdf.params.items())))
        if key not in self._keys:
            self._keys[key] = kdf.derive(passphrase)
        return self._keys[key]


def _mac_key(keys: MasterKeys) -> bytes:
    # From the current KEK, never from id_key: write-only hosts will hold the id key, and
    # must not be able to forge a keyring.
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"chunkvault/keyring-mac"
    ).derive(keys.current_kek)


@dataclass(frozen=True)
class Keyring:
    vault_id: str
    vault_uuid: bytes
    revision: int = 0
    slots: tuple[Slot, ...] = field(default_factory=tuple)
    version: int = VERSION
    mac: bytes | None = None
    vault_key: VaultKey | None = None
    writers: tuple[Writer, ...] = ()

    # --- creation and unlocking ----------------------------------------------------------

    @classmethod
    def create(
        cls, vault_id: str, passphrase: str, kdf: KdfName = "argon2id", label: str = "default"
    ) -> tuple[Keyring, MasterKeys]:
        vault_uuid = os.urandom(UUID_BYTES)
        keys = MasterKeys.generate(vault_uuid)
        ring = cls(vault_id=vault_id, vault_uuid=vault_uuid).add_slot(keys, passphrase, label, kdf)
        # The key pair write-only hosts seal to, from the start (issue 14): an older vault
        # gets one at its first `key writer-credential`.
        ring = replace(ring.with_vault_key(keys), revision=ring.revision).sealed(keys)
        ring.attach_vault_key(keys)
        return ring, keys

    def _make_slot(self, keys: MasterKeys, passphrase: str, label: str, kdf: KdfName) -> Slot:
        check_passphrase(passphrase)
        if not _LABEL.match(label):
            raise SlotError(f"invalid slot label {label!r}", "use letters, digits, ' ._@-'")
        taken = {s.id for s in self.slots}
        slot_id = os.urandom(4).hex()
        while slot_id in taken:
            slot_id = os.urandom(4).hex()
        params = KdfParams.new(kdf)
        slot_kek = params.derive(passphrase)
        return Slot(
            id=slot_id,
            label=label,
            created=_now(),
            kdf=params,
            verifier=_seal(
                slot_kek, VERIFIER_PLAINTEXT, _aad("verifier", self.vault_uuid, slot_id)
            ),
            material=_seal(slot_kek, keys.to_bytes(), _aad("material", self.vault_uuid, slot_id)),
        )

    def unlock(self, passphrase: str, cache: KdfCache | None = None) -> tuple[MasterKeys, Slot]:
        """Open the first slot the passphrase fits, then check the keyring's MAC. Wrong
        passphrase and a corrupted or tampered keyring are different errors: only the
        verifier decides which one it is."""
        cache = cache or KdfCache()
        for slot in self.slots:
            slot_kek = cache.derive(slot.kdf, passphrase)
            try:
                ok = _open(slot_kek, slot.verifier, _aad("verifier", self.vault_uuid, slot.id))
            except (InvalidTag, ValueError):
                continue
            if ok != VERIFIER_PLAINTEXT:
                continue
            try:
                raw = _open(slot_kek, slot.material, _aad("material", self.vault_uuid, slot.id))
                keys = MasterKeys.from_bytes(self.vault_uuid, raw)
            except (InvalidTag, ValueError, MaterialError):
                raise KeyringCorrupted(
                    f"keyring corrupted: the passphrase is right (slot {slot.label!r}) but its "
                    "master key does not decrypt",
                    "restore the keyring from a peer or a `key export --paper` backup",
                ) from None
            self.verify(keys)
            self.attach_vault_key(keys)
            return keys, slot
        raise WrongPassphrase()

    def attach_vault_key(self, keys: MasterKeys) -> None:
        """Give ``keys`` what opens write-only hosts' data: the vault's private key and the
        writers this keyring lists (the keyring is authenticated already)."""
        if self.vault_key is None:
            return
        keys.vault_private = self.vault_private_key(keys)
        keys.writers = {
            w.id: TrustedWriter(self.writer_key(keys, w), None if w.revoked is None
                                else _date_ns(w.revoked, f"writer {w.id} revoked"))
            for w in self.writers
        }  # fmt: skip

    # --- authentication (version 2) -------------------------------------------------------

    def _mac_input(self, keys: MasterKeys) -> bytes:
        body = self.to_json()
        body.pop("mac", None)
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return (
            b"chunkvault/keyring"
            + bytes([VERSION])
            + struct.pack(">I", keys.current)
            + self.vault_uuid
            + canonical.encode()
        )

    def sealed(self, keys: MasterKeys) -> Keyring:
        """This keyring as version 2 (3 with a vault key), with its MAC: revision, slots,
        vault key, writers and the current key generation can then not be changed by
        anyone without the master key."""
        version = WITH_VAULT_KEY if self.vault_key is not None or self.writers else VERSION
        ring = replace(self, version=version, mac=None)
        mac = hmac.new(_mac_key(keys), ring._mac_input(keys), hashlib.sha256).digest()
        return replace(ring, mac=mac)

    def verify(self, keys: MasterKeys) -> None:
        """Raise :class:`KeyringTampered` unless the MAC is right. Version 1 keyrings have
        none (they are upgraded by the first command that writes)."""
        if self.version < 2:
            return
        expected = self.sealed(keys).mac
        if self.mac is None or expected is None or not hmac.compare_digest(self.mac, expected):
            raise KeyringTampered(
                f"keyring revision {self.revision} failed authentication: it was changed by "
                "someone without the master key",
                "use another peer's copy (`chunkvault key verify` repairs them) or a "
                "`key export` backup",
            )

    @property
    def authenticated(self) -> bool:
        return self.version >= 2

    def upgraded(self, keys: MasterKeys) -> Keyring:
        """A version 1 keyring as version 2 (next revision). Slot labels made unique on the
        way: an interrupted `key passwd` of version 1 left several slots of one label."""
        seen: set[str] = set()
        slots = []
        for slot in self.slots:
            label = slot.label if slot.label not in seen else f"{slot.label[:55]}-{slot.id}"
            seen.add(label)
            slots.append(replace(slot, label=label))
        return self._with_slots(tuple(slots), keys)

    # --- slot management (each returns a new, sealed Keyring with revision + 1) ----------

    def _with_slots(self, slots: tuple[Slot, ...], keys: MasterKeys) -> Keyring:
        if len(slots) > MAX_SLOTS:
            raise SlotError(
                f"a keyring holds at most {MAX_SLOTS} slots", "remove one (`chunkvault key remove`)"
            )
        return replace(self, slots=slots, revision=self.revision + 1).sealed(keys)

    @property
    def active_slots(self) -> tuple[Slot, ...]:
        return tuple(s for s in self.slots if s.active)

    def add_slot(
        self, keys: MasterKeys, passphrase: str, label: str, kdf: KdfName = "argon2id"
    ) -> Keyring:
        if any(s.label == label for s in self.active_slots):
            raise SlotError(f"a slot labelled {label!r} already exists", "choose another --label")
        return self._with_slots((*self.slots, self._make_slot(keys, passphrase, label, kdf)), keys)

    def find(self, id_or_label: str) -> Slot:
        by_id = [s for s in self.slots if s.id == id_or_label]
        matches = by_id or [s for s in self.active_slots if s.label == id_or_label]
        if not matches:
            raise SlotError(
                f"no slot with id or label {id_or_label!r}", "see `chunkvault key list`"
            )
        if len(matches) > 1:
            raise SlotError(
                f"several slots are labelled {id_or_label!r}", "give the slot id (`key list`)"
            )
        return matches[0]

    def remove_slot(self, keys: MasterKeys, id_or_label: str) -> Keyring:
        slot = self.find(id_or_label)
        rest = tuple(s for s in self.slots if s.id != slot.id)
        if not any(s.active for s in rest):
            raise SlotError(
                f"slot {slot.label!r} is the last one: removing it would lock the vault forever",
                "add another slot first (`chunkvault key add`)",
            )
        return self._with_slots(rest, keys)

    def _chain(self, slot: Slot) -> set[str]:
        """The slot and those an interrupted passphrase change tied to it (the slot it
        superseded, or the one that superseded it)."""
        ids = {slot.id}
        if slot.superseded_by is not None:
            ids.add(slot.superseded_by)
        ids.update(s.id for s in self.slots if s.superseded_by in ids)
        return ids

    def replace_slot_passphrase(
        self, keys: MasterKeys, slot: Slot, new_passphrase: str, kdf: KdfName
    ) -> tuple[Keyring, Keyring]:
        """Passphrase change as two keyrings to store in order: the new slot added with the
        old one marked superseded, then the old one removed. A crash between leaves both
        passphrases valid and one active slot of the label; a rerun from either passphrase
        replaces the whole chain, so no slot is ever left behind. What an earlier
        interrupted change left of the chain (other than the slot opened now) goes with
        the first keyring already: however often a change is cut short, a label never has
        more than two slots."""
        chain = self._chain(slot)
        label = next((s.label for s in self.slots if s.id in chain and s.active), slot.label)
        new = self._make_slot(keys, new_passphrase, label, kdf)
        marked = tuple(
            replace(s, superseded_by=new.id) if s.id == slot.id else s
            for s in self.slots
            if s.id not in chain or s.id == slot.id
        )
        added = self._with_slots((*marked, new), keys)
        final = added._with_slots(tuple(s for s in added.slots if s.id != slot.id), keys)
        return added, final

    def without_superseded(self, keys: MasterKeys) -> Keyring:
        """Finish an interrupted passphrase change (the new passphrase was proven)."""
        return self._with_slots(tuple(s for s in self.slots if s.active), keys)

    def rewrap_all(self, keys: MasterKeys, slot: Slot, passphrase: str, kdf: KdfName) -> Keyring:
        """Keyring holding only ``slot`` (same label), re-made over new master material."""
        return replace(self, slots=()).add_slot(keys, passphrase, slot.label, kdf)

    # --- the vault key and writers (write-only hosts) --------------------------------------

    def with_vault_key(self, keys: MasterKeys) -> Keyring:
        """This keyring with a vault key pair (a new one if it has none; next revision)."""
        if self.vault_key is not None:
            return self
        private, public = vault_seal.new_key_pair()
        vault_key = VaultKey(public, self._wrap(keys, "vault-key", "", private), keys.current)
        return replace(self, vault_key=vault_key, revision=self.revision + 1).sealed(keys)

    def vault_private_key(self, keys: MasterKeys) -> bytes:
        """The vault's private key; KeyringCorrupted if it does not unwrap or does not
        match its public key."""
        if self.vault_key is None:
            raise KeyringCorrupted("this vault has no vault key pair yet")
        private = self._unwrap(keys, "vault-key", "", self.vault_key.wrapped,
                               self.vault_key.generation)  # fmt: skip
        if vault_seal.public_key_of(private) != self.vault_key.public:
            raise KeyringCorrupted("keyring: the vault's private key does not match its public key")
        return private

    def add_writer(self, keys: MasterKeys, label: str) -> tuple[Keyring, Writer, bytes]:
        """A new writer (and the vault key pair if there is none): the keyring, the writer
        and its key (for its credential)."""
        if not _LABEL.match(label):
            raise SlotError(f"invalid writer label {label!r}", "use letters, digits, ' ._@-'")
        if any(w.label == label and w.revoked is None for w in self.writers):
            raise SlotError(f"a writer labelled {label!r} exists", "choose another --label")
        if len(self.writers) >= MAX_WRITERS:
            raise SlotError(f"a keyring holds at most {MAX_WRITERS} writers")
        ring = self.with_vault_key(keys)
        taken = {w.id for w in ring.writers}
        writer_id = os.urandom(4).hex()
        while writer_id in taken:
            writer_id = os.urandom(4).hex()
        secret = os.urandom(SECRET_BYTES)
        wrapped = ring._wrap(keys, "writer-key", writer_id, secret)
        writer = Writer(writer_id, label, _now(), wrapped, keys.current)
        ring = replace(ring, writers=(*ring.writers, writer), revision=ring.revision + 1)
        return ring.sealed(keys), writer, secret

    def find_writer(self, id_or_label: str) -> Writer:
        matches = [w for w in self.writers if id_or_label in (w.id, w.label)]
        if len(matches) != 1:
            raise SlotError(
                f"no single writer with id or label {id_or_label!r}"
                + (f" ({len(matches)} match)" if matches else ""),
                "see `chunkvault key list`",
            )
        return matches[0]

    def writer_key(self, keys: MasterKeys, writer: Writer) -> bytes:
        return self._unwrap(keys, "writer-key", writer.id, writer.wrapped, writer.generation)

    def revoke_writer(self, keys: MasterKeys, id_or_label: str) -> Keyring:
        writer = self.find_writer(id_or_label)
        if writer.revoked is not None:
            raise SlotError(f"writer {writer.label!r} was revoked at {writer.revoked}")
        writers = tuple(replace(w, revoked=_now()) if w.id == writer.id else w
                        for w in self.writers)  # fmt: skip
        return replace(self, writers=writers, revision=self.revision + 1).sealed(keys)

    def rewrapped_secrets(self, keys: MasterKeys) -> Keyring:
        """The vault key and writer keys wrapped by the current KEK (``key rotate-master``,
        before the old generation is dropped: writers keep working unchanged)."""
        vault_key = self.vault_key
        if vault_key is not None and vault_key.generation != keys.current:
            private = self.vault_private_key(keys)
            vault_key = VaultKey(vault_key.public, self._wrap(keys, "vault-key", "", private),
                                 keys.current)  # fmt: skip
        writers = tuple(
            w if w.generation == keys.current
            else replace(w, wrapped=self._wrap(keys, "writer-key", w.id, self.writer_key(keys, w)),
                         generation=keys.current)
            for w in self.writers
        )  # fmt: skip
        if vault_key == self.vault_key and writers == self.writers:
            return self
        return replace(self, vault_key=vault_key, writers=writers,
                       revision=self.revision + 1).sealed(keys)  # fmt: skip

    def _wrap(self, keys: MasterKeys, kind: str, name: str, secret: bytes) -> bytes:
        return _seal(keys.current_kek, secret,
                     _secret_aad(kind, self.vault_uuid, name, keys.current))  # fmt: skip

    def _unwrap(
        self, keys: MasterKeys, kind: str, name: str, wrapped: bytes, generation: int
    ) -> bytes:
        try:
            return _open(keys.kek(generation), wrapped,
                         _secret_aad(kind, self.vault_uuid, name, generation))  # fmt: skip
        except (InvalidTag, ValueError, MaterialError):
            raise KeyringCorrupted(
                f"keyring: the {kind} {name} does not unwrap with the master key",
                "restore the keyring from a peer or a `key export` backup",
            ) from None

    # --- JSON ------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "format": FORMAT,
            "version": self.version,
            "vault_id": self.vault_id,
            "vault_uuid": self.vault_uuid.hex(),
            "revision": self.revision,
            "slots": [s.to_json() for s in self.slots],
        }
        if self.vault_key is not None:
            data["vault_key"] = self.vault_key.to_json()
        if self.writers:
            data["writers"] = [w.to_json() for w in self.writers]
        if self.mac is not None:
            data["mac"] = _b64(self.mac)
        return data

    @classmethod
    def from_json(cls, data: Any) -> Keyring:
        """Parse strictly: keyrings come from peers, and anything odd is refused here with
        a KeyringFormatError, never an exception from deeper down."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise KeyringFormatError("not a chunkvault keyring (missing format marker)")
        version = data.get("version")
        if type(version) is not int or version not in READABLE_VERSIONS:
            raise KeyringFormatError(
                f"keyring version {version!r} is not supported by this chunkvault",
                "upgrade chunkvault",
            )
        revision, vault_id, slots = data.get("revision"), data.get("vault_id"), data.get("slots")
        if type(revision) is not int or not 0 <= revision <= MAX_REVISION:
            raise KeyringFormatError(f"keyring: revision {str(revision)[:30]} is not valid")
        if not isinstance(vault_id, str) or not 0 < len(vault_id) <= 64:
            raise KeyringFormatError("keyring: bad vault_id")
        if not isinstance(slots, list) or not 0 < len(slots) <= MAX_SLOTS:
            raise KeyringFormatError(f"keyring: needs 1..{MAX_SLOTS} slots")
        try:
            vault_uuid = bytes.fromhex(data["vault_uuid"])
        except (KeyError, TypeError, ValueError):
            raise KeyringFormatError("keyring: bad vault_uuid") from None
        if len(vault_uuid) != UUID_BYTES:
            raise KeyringFormatError("keyring: bad vault_uuid")
        mac = None
        if version >= 2:
            mac = _unb64(data.get("mac"), "mac")
            if len(mac) != MAC_BYTES:
                raise KeyringFormatError("keyring: bad mac")
        vault_key, writers = None, ()
        if version >= WITH_VAULT_KEY:
            if data.get("vault_key") is not None:
                vault_key = VaultKey.from_json(data["vault_key"])
            raw_writers = data.get("writers", [])
            if not isinstance(raw_writers, list) or len(raw_writers) > MAX_WRITERS:
                raise KeyringFormatError(
                    f"keyring: writers must be a list of at most {MAX_WRITERS}"
                )
            writers = tuple(Writer.from_json(w) for w in raw_writers)
            if len({w.id for w in writers}) != len(writers):
                raise KeyringFormatError("keyring: duplicate writer ids")
            if writers and vault_key is None:
                raise KeyringFormatError("keyring: writers without a vault key")
        ring = cls(vault_id, vault_uuid, revision, tuple(Slot.from_json(s) for s in slots),
                   version, mac, vault_key, writers)  # fmt: skip
        ids = [s.id for s in ring.slots]
        if len(set(ids)) != len(ids):
            raise KeyringFormatError("keyring: duplicate slot ids")
        if not ring.active_slots:
            raise KeyringFormatError("keyring: no active slot")
        labels = [s.label for s in ring.active_slots]
        if version >= 2 and len(set(labels)) != len(labels):
            raise KeyringFormatError("keyring: duplicate slot labels")
        if sum(s.kdf.cost_kib for s in ring.slots) > MAX_TOTAL_KDF_COST_KIB:
            raise KeyringFormatError("keyring: the slots' KDF cost is over the limit")
        return ring


def check_passphrase(passphrase: str) -> None:
    if len(passphrase) < 8:
        raise SlotError(
            "passphrase too short (at least 8 characters)",
            "a long phrase of several words is both strong and memorable",
        )

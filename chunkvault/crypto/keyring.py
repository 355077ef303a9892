"""Key slots (LUKS/borg style): each slot wraps the same master material under a key
derived from its own passphrase, plus a verifier that tells "wrong passphrase" apart from
"keyring corrupted". Changing a passphrase re-wraps one small blob and touches no data.

Pure: (de)serialisation and slot operations only; storing the JSON is keystore.py's job.
The JSON layout is specified in docs/format.md.
"""

from __future__ import annotations

import base64
import os
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from chunkvault.crypto.kdf import KdfError, KdfName, KdfParams
from chunkvault.crypto.material import MasterKeys, MaterialError
from chunkvault.errors import ChunkvaultError

FORMAT = "chunkvault-keyring"
VERSION = 1
VERIFIER_PLAINTEXT = b"key_is_correct"  # the seed owner's verifier constant
NONCE_BYTES = 12
UUID_BYTES = 16
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._@-]{0,63}$")


class WrongPassphrase(ChunkvaultError):
    exit_code = 3

    def __init__(self) -> None:
        super().__init__(
            "wrong passphrase: it opens none of the keyring's slots",
            "check $CHUNKVAULT_PASSPHRASE or --passphrase-file; "
            "`chunkvault key list` shows the slots",
        )


class KeyringCorrupted(ChunkvaultError):
    exit_code = 4


class KeyringFormatError(KeyringCorrupted):
    """The keyring JSON is malformed (not a decryption failure)."""


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


@dataclass(frozen=True)
class Slot:
    id: str
    label: str
    created: str
    kdf: KdfParams
    verifier: bytes
    material: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "label": self.label,
            "created": self.created,
            "kdf": self.kdf.to_json(),
            "verifier": _b64(self.verifier),
            "material": _b64(self.material),
        }

    @classmethod
    def from_json(cls, data: Any) -> Slot:
        try:
            slot_id, label, created = str(data["id"]), str(data["label"]), str(data["created"])
            kdf = KdfParams.from_json(data["kdf"])
            verifier = _unb64(data["verifier"], f"slot {slot_id} verifier")
            material = _unb64(data["material"], f"slot {slot_id} material")
        except (KeyError, TypeError) as exc:
            raise KeyringFormatError(f"keyring: malformed slot: missing {exc}") from None
        except KdfError as exc:
            raise KeyringFormatError(f"keyring: slot {data.get('id')}: {exc}") from None
        return cls(slot_id, label, created, kdf, verifier, material)


@dataclass(frozen=True)
class Keyring:
    vault_id: str
    vault_uuid: bytes
    revision: int = 0
    slots: tuple[Slot, ...] = field(default_factory=tuple)

    # --- creation and unlocking ----------------------------------------------------------

    @classmethod
    def create(
        cls, vault_id: str, passphrase: str, kdf: KdfName = "argon2id", label: str = "default"
    ) -> tuple[Keyring, MasterKeys]:
        vault_uuid = os.urandom(UUID_BYTES)
        keys = MasterKeys.generate(vault_uuid)
        ring = cls(vault_id=vault_id, vault_uuid=vault_uuid).add_slot(keys, passphrase, label, kdf)
        return ring, keys

    def _make_slot(self, keys: MasterKeys, passphrase: str, label: str, kdf: KdfName) -> Slot:
        check_passphrase(passphrase)
        if not _LABEL.match(label):
            raise SlotError(f"invalid slot label {label!r}", "use letters, digits, ' ._@-'")
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

    def unlock(self, passphrase: str) -> tuple[MasterKeys, Slot]:
        """Open the first slot the passphrase fits. Wrong passphrase and a corrupted slot
        are different errors: only the verifier decides which one it is."""
        for slot in self.slots:
            slot_kek = slot.kdf.derive(passphrase)
            try:
                ok = _open(slot_kek, slot.verifier, _aad("verifier", self.vault_uuid, slot.id))
            except (InvalidTag, ValueError):
                continue
            if ok != VERIFIER_PLAINTEXT:
                continue
            try:
                raw = _open(slot_kek, slot.material, _aad("material", self.vault_uuid, slot.id))
                return MasterKeys.from_bytes(self.vault_uuid, raw), slot
            except (InvalidTag, ValueError, MaterialError):
                raise KeyringCorrupted(
                    f"keyring corrupted: the passphrase is right (slot {slot.label!r}) but its "
                    "master key does not decrypt",
                    "restore the keyring from a peer or a `key export --paper` backup",
                ) from None
        raise WrongPassphrase()

    # --- slot management (each returns a new Keyring with revision + 1) -------------------

    def _with_slots(self, slots: tuple[Slot, ...]) -> Keyring:
        return replace(self, slots=slots, revision=self.revision + 1)

    def add_slot(
        self, keys: MasterKeys, passphrase: str, label: str, kdf: KdfName = "argon2id"
    ) -> Keyring:
        if any(s.label == label for s in self.slots):
            raise SlotError(f"a slot labelled {label!r} already exists", "choose another --label")
        return self._with_slots((*self.slots, self._make_slot(keys, passphrase, label, kdf)))

    def find(self, id_or_label: str) -> Slot:
        matches = [s for s in self.slots if id_or_label in (s.id, s.label)]
        if not matches:
            raise SlotError(
                f"no slot with id or label {id_or_label!r}", "see `chunkvault key list`"
            )
        return matches[0]

    def remove_slot(self, id_or_label: str) -> Keyring:
        slot = self.find(id_or_label)
        if len(self.slots) == 1:
            raise SlotError(
                f"slot {slot.label!r} is the last one: removing it would lock the vault forever",
                "add another slot first (`chunkvault key add`)",
            )
        return self._with_slots(tuple(s for s in self.slots if s.id != slot.id))

    def replace_slot_passphrase(
        self, keys: MasterKeys, slot: Slot, new_passphrase: str, kdf: KdfName
    ) -> tuple[Keyring, Keyring]:
        """Passphrase change as two keyrings to store in order: with the new slot added
        (same label), then with the old slot removed. A crash between leaves both valid."""
        new = self._make_slot(keys, new_passphrase, slot.label, kdf)
        added = self._with_slots((*self.slots, new))
        return added, added._with_slots(tuple(s for s in added.slots if s.id != slot.id))

    def rewrap_all(self, keys: MasterKeys, slot: Slot, passphrase: str, kdf: KdfName) -> Keyring:
        """Keyring holding only ``slot`` (same label), re-made over new master material."""
        return replace(self, slots=(), revision=self.revision + 1).add_slot(
            keys, passphrase, slot.label, kdf
        )

    # --- JSON ------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "vault_id": self.vault_id,
            "vault_uuid": self.vault_uuid.hex(),
            "revision": self.revision,
            "slots": [s.to_json() for s in self.slots],
        }

    @classmethod
    def from_json(cls, data: Any) -> Keyring:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise KeyringFormatError("not a chunkvault keyring (missing format marker)")
        if data.get("version") != VERSION:
            raise KeyringFormatError(
                f"keyring version {data.get('version')!r} is not supported by this chunkvault",
                "upgrade chunkvault",
            )
        try:
            vault_uuid = bytes.fromhex(data["vault_uuid"])
            ring = cls(
                vault_id=str(data["vault_id"]),
                vault_uuid=vault_uuid,
                revision=int(data["revision"]),
                slots=tuple(Slot.from_json(s) for s in data["slots"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise KeyringFormatError(f"keyring: malformed field {exc}") from None
        if len(vault_uuid) != UUID_BYTES or not ring.slots:
            raise KeyringFormatError("keyring: bad vault_uuid or no slots")
        return ring


def check_passphrase(passphrase: str) -> None:
    if len(passphrase) < 8:
        raise SlotError(
            "passphrase too short (at least 8 characters)",
            "a long phrase of several words is both strong and memorable",
        )

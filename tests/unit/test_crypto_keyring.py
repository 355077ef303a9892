"""Key slots: verifier semantics, slot management, JSON round trip, tamper detection."""

import copy
import json

import pytest

from chunkvault.crypto.kdf import KdfError, KdfParams
from chunkvault.crypto.keyring import (
    Keyring,
    KeyringCorrupted,
    KeyringFormatError,
    SlotError,
    WrongPassphrase,
)

PW = "correct horse battery"


@pytest.fixture(scope="module")
def ring_and_keys():
    return Keyring.create("home", PW, kdf="argon2id")


def test_create_and_unlock(ring_and_keys):
    ring, keys = ring_and_keys
    unlocked, slot = ring.unlock(PW)
    assert unlocked.id_key == keys.id_key and unlocked.keks == keys.keks
    assert slot.label == "default" and ring.revision == 1
    assert unlocked.vault_uuid == ring.vault_uuid


def test_wrong_passphrase_is_its_own_error(ring_and_keys):
    ring, _ = ring_and_keys
    with pytest.raises(WrongPassphrase) as info:
        ring.unlock("not the passphrase")
    assert info.value.exit_code == 3
    assert "wrong passphrase" in str(info.value)


def test_corrupted_material_with_good_verifier_is_a_different_error(ring_and_keys):
    ring, _ = ring_and_keys
    data = ring.to_json()
    material = bytearray(ring.slots[0].material)
    material[-1] ^= 1
    data["slots"][0]["material"] = __import__("base64").b64encode(bytes(material)).decode()
    broken = Keyring.from_json(data)
    with pytest.raises(KeyringCorrupted) as info:
        broken.unlock(PW)
    assert not isinstance(info.value, WrongPassphrase)
    assert info.value.exit_code == 4 and "corrupted" in str(info.value)


def test_json_round_trip_holds_no_bare_key(ring_and_keys):
    ring, keys = ring_and_keys
    text = json.dumps(ring.to_json())
    for secret in (keys.id_key, keys.current_kek):
        assert secret.hex() not in text
        assert __import__("base64").b64encode(secret).decode() not in text
    assert PW not in text
    again = Keyring.from_json(json.loads(text))
    assert again == ring
    assert again.unlock(PW)[0].keks == keys.keks


def test_two_slots_either_unlocks_and_removal_keeps_the_other(ring_and_keys):
    ring, keys = ring_and_keys
    two = ring.add_slot(keys, "second passphrase!", "backup", kdf="scrypt")
    assert [s.label for s in two.slots] == ["default", "backup"]
    assert two.unlock(PW)[1].label == "default"
    assert two.unlock("second passphrase!")[1].label == "backup"
    one = two.remove_slot(keys, "default")
    assert one.unlock("second passphrase!")[0].keks == keys.keks
    with pytest.raises(WrongPassphrase):
        one.unlock(PW)
    with pytest.raises(SlotError, match="last"):
        one.remove_slot(keys, "backup")
    with pytest.raises(SlotError, match="already exists"):
        two.add_slot(keys, "third passphrase", "backup")
    with pytest.raises(SlotError, match="no slot"):
        two.remove_slot(keys, "nope")
    assert one.revision == ring.revision + 2


def test_passphrase_change_is_crash_safe(ring_and_keys):
    ring, keys = ring_and_keys
    added, final = ring.replace_slot_passphrase(keys, ring.slots[0], "brand new phrase", "argon2id")
    # Intermediate state: both passphrases work (a crash here loses nothing).
    assert added.unlock(PW) and added.unlock("brand new phrase")
    assert [s.label for s in final.slots] == ["default"]
    assert final.unlock("brand new phrase")[0].keks == keys.keks
    with pytest.raises(WrongPassphrase):
        final.unlock(PW)


def test_short_passphrase_and_bad_label_rejected(ring_and_keys):
    ring, keys = ring_and_keys
    with pytest.raises(SlotError, match="too short"):
        ring.add_slot(keys, "short", "x")
    with pytest.raises(SlotError, match="label"):
        ring.add_slot(keys, "long enough phrase", "bad/label")


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.pop("format"),
        lambda d: d.update(version=99),
        lambda d: d.update(vault_uuid="zz"),
        lambda d: d.update(slots=[]),
        lambda d: d["slots"][0].pop("verifier"),
        lambda d: d["slots"][0].update(verifier="***"),
        lambda d: d["slots"][0]["kdf"].update(alg="md5"),
        lambda d: d["slots"][0]["kdf"]["params"].update(memory_kib=8),
    ],
)
def test_malformed_keyring_json_is_rejected_clearly(ring_and_keys, mutate):
    data = copy.deepcopy(ring_and_keys[0].to_json())
    mutate(data)
    with pytest.raises(KeyringFormatError):
        Keyring.from_json(data)


def test_slot_bound_to_its_vault_and_id(ring_and_keys):
    ring, _ = ring_and_keys
    # The same slot pasted into another vault's keyring does not open (AAD has the uuid).
    data = ring.to_json()
    data["vault_uuid"] = "00" * 16
    with pytest.raises(WrongPassphrase):
        Keyring.from_json(data).unlock(PW)
    data = ring.to_json()
    data["slots"][0]["id"] = "deadbeef"
    with pytest.raises(WrongPassphrase):
        Keyring.from_json(data).unlock(PW)


def test_kdf_params_validated_and_salt_random():
    a, b = KdfParams.new("argon2id"), KdfParams.new("argon2id")
    assert a.salt != b.salt and len(a.salt) >= 16
    assert KdfParams.from_json(a.to_json()) == a
    with pytest.raises(KdfError):
        KdfParams.new("pbkdf2")  # type: ignore[arg-type]
    short = a.to_json() | {"salt": "AAAA"}
    with pytest.raises(KdfError, match="salt"):
        KdfParams.from_json(short)
    scrypt = KdfParams.new("scrypt")
    assert scrypt.derive("pw") == scrypt.derive("pw") != a.derive("pw")

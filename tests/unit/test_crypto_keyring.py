"""Key slots: verifier semantics, slot management, JSON round trip, tamper detection."""

import base64
import copy
import dataclasses
import json

import pytest

from chunkvault.crypto.kdf import KdfError, KdfParams
from chunkvault.crypto.keyring import (
    MAX_SLOTS,
    KdfCache,
    Keyring,
    KeyringCorrupted,
    KeyringFormatError,
    KeyringTampered,
    SlotError,
    WrongPassphrase,
)
from chunkvault.crypto.material import MasterKeys

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
    assert [s.label for s in added.active_slots] == ["default"]
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


# --- version 2: authenticated revision, strict parsing, caps (issue 8) ------------------


def test_revision_and_slots_are_authenticated(ring_and_keys):
    ring, keys = ring_and_keys
    # Version 3: a new vault has its key pair from `init` on (write-only hosts).
    assert ring.version == 3 and ring.authenticated and ring.vault_key is not None
    ring.verify(keys)
    for mutate in (
        lambda d: d.update(revision=1_000_000),
        lambda d: d["vault_key"].update(public=base64.b64encode(bytes(range(32))).decode()),
        lambda d: d["slots"][0].update(label="renamed"),
        lambda d: d["slots"][0].update(created="2020-01-01T00:00:00Z"),
    ):
        data = copy.deepcopy(ring.to_json())
        mutate(data)
        forged = Keyring.from_json(data)
        with pytest.raises(KeyringTampered) as info:
            forged.unlock(PW)
        assert info.value.exit_code == 4 and "failed authentication" in str(info.value)


def test_mac_key_is_not_derived_from_the_id_key(ring_and_keys):
    # Write-only hosts will hold the id key: with only it, a keyring cannot be forged.
    ring, keys = ring_and_keys
    other = MasterKeys(keys.vault_uuid, keys.id_key, {1: b"\x07" * 32}, 1)
    assert ring.sealed(other).mac != ring.mac


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.update(revision=float("inf")),
        lambda d: d.update(revision=1e6),
        lambda d: d.update(revision=True),
        lambda d: d.update(revision=-1),
        lambda d: d.update(revision=2**53),
        lambda d: d.update(revision="7"),
        lambda d: d.update(mac="AAAA"),
        lambda d: d.pop("mac"),
        lambda d: d.update(slots=d["slots"] * 2),  # duplicate ids
        lambda d: d["slots"][0]["kdf"]["params"].update(memory_kib=4 * 1024 * 1024),
        lambda d: d["slots"][0]["kdf"]["params"].update(iterations=64),
        lambda d: d["slots"][0]["kdf"]["params"].update(iterations=float("inf")),
        lambda d: d["slots"][0]["kdf"]["params"].update(iterations=3.0),
        lambda d: d["slots"][0].update(superseded_by="x"),
        lambda d: d["slots"][0].update(id="not-hex!"),
        lambda d: d["slots"][0].update(label=["a"]),
        lambda d: d["slots"][0].update(verifier="AAAA"),
        lambda d: d.update(vault_id={"a": 1}),
    ],
)
def test_hostile_keyring_json_is_a_format_error(ring_and_keys, mutate):
    data = copy.deepcopy(ring_and_keys[0].to_json())
    mutate(data)
    with pytest.raises(KeyringFormatError):
        Keyring.from_json(data)


def test_slot_count_and_total_kdf_cost_are_capped(ring_and_keys):
    ring, _keys = ring_and_keys
    data = ring.to_json()
    slot = data["slots"][0]
    many = [dict(slot, id=f"{i:08x}", label=f"s{i}") for i in range(MAX_SLOTS + 1)]
    with pytest.raises(KeyringFormatError, match="slots"):
        Keyring.from_json(data | {"slots": many})
    costly = copy.deepcopy(slot)
    costly["kdf"]["params"] = {"memory_kib": 1024 * 1024, "iterations": 8, "lanes": 4}
    heavy = [dict(costly, id=f"{i:08x}", label=f"s{i}") for i in range(2)]
    with pytest.raises(KeyringFormatError, match="KDF cost"):
        Keyring.from_json(data | {"slots": heavy})
    scrypt = copy.deepcopy(slot)
    scrypt["kdf"] = {"alg": "scrypt", "salt": slot["kdf"]["salt"],
                     "params": {"n": 3 * 2**15, "r": 8, "p": 1}}  # fmt: skip
    with pytest.raises(KeyringFormatError, match="power of two"):
        Keyring.from_json(data | {"slots": [scrypt]})


def test_kdf_cache_derives_each_slot_once_across_copies(ring_and_keys, monkeypatch):
    ring, _keys = ring_and_keys
    calls = []
    real = KdfParams.derive
    monkeypatch.setattr(KdfParams, "derive", lambda self, pw: calls.append(1) or real(self, pw))
    cache = KdfCache()
    copy_a = Keyring.from_json(ring.to_json())
    copy_b = Keyring.from_json(ring.to_json())
    copy_a.unlock(PW, cache)
    copy_b.unlock(PW, cache)
    assert len(calls) == 1


def test_interrupted_passwd_leaves_one_active_label_and_a_rerun_clears_the_chain(ring_and_keys):
    ring, keys = ring_and_keys
    added, _final = ring.replace_slot_passphrase(keys, ring.slots[0], "second phrase", "argon2id")
    # Killed here: both passphrases open, one active slot per label, the old one marked.
    assert [s.label for s in added.active_slots] == ["default"]
    old = added.unlock(PW)[1]
    assert not old.active and old.superseded_by == added.unlock("second phrase")[1].id
    # Rerun from the OLD passphrase: the interrupted new slot goes too, with the first
    # keyring already (killed again there: still two slots, the old and the newest open).
    again, final = added.replace_slot_passphrase(keys, old, "third phrase!", "argon2id")
    assert [s.label for s in again.active_slots] == ["default"] and len(again.slots) == 2
    assert again.unlock(PW) and again.unlock("third phrase!")
    assert len(final.slots) == 1 and final.slots[0].label == "default"
    for gone in (PW, "second phrase"):
        with pytest.raises(WrongPassphrase):
            final.unlock(gone)
    assert final.unlock("third phrase!")[0].keks == keys.keks
    # Rerun from the NEW passphrase: the superseded old slot goes.
    new_slot = added.unlock("second phrase")[1]
    again, final = added.replace_slot_passphrase(keys, new_slot, "fourth phrase", "argon2id")
    assert len(again.slots) == 2 and again.unlock("second phrase") and again.unlock("fourth phrase")
    assert len(final.slots) == 1
    # `key verify` with the new passphrase finishes the change instead.
    finished = added.without_superseded(keys)
    assert len(finished.slots) == 1 and finished.unlock("second phrase")
    finished.verify(keys)


def test_version_1_keyrings_are_read_and_upgraded(ring_and_keys):
    ring, keys = ring_and_keys
    legacy = ring.to_json()
    legacy.update(version=1)
    legacy.pop("mac")
    # An interrupted passwd of version 1 left two slots labelled "default".
    legacy["slots"].append(dict(legacy["slots"][0], id="0badc0de"))
    old = Keyring.from_json(legacy)
    assert not old.authenticated
    old.unlock(PW)  # no MAC to check
    new = old.upgraded(keys)
    assert new.version == 2 and new.revision == old.revision + 1
    assert len({s.label for s in new.slots}) == 2
    assert Keyring.from_json(new.to_json()).unlock(PW)[0].keks == keys.keks


# --- version 3: the vault key pair and writers (write-only hosts, issue 14) -------------


def test_a_writer_brings_the_vault_key_and_both_are_authenticated(ring_and_keys):
    from chunkvault.crypto import vault_seal

    ring, keys = ring_and_keys
    with_writer, writer, secret = ring.add_writer(keys, "laptop")
    assert with_writer.version == 3 and with_writer.revision == ring.revision + 1
    assert with_writer.vault_key == ring.vault_key  # made at create
    private = with_writer.vault_private_key(keys)
    assert vault_seal.public_key_of(private) == with_writer.vault_key.public
    assert with_writer.writer_key(keys, writer) == secret
    text = json.dumps(with_writer.to_json())
    assert private.hex() not in text and secret.hex() not in text  # only wrapped
    again = Keyring.from_json(json.loads(text))
    again.unlock(PW)  # round trip, MAC verified
    assert again.find_writer("laptop").id == writer.id
    with pytest.raises(SlotError, match="exists"):
        again.add_writer(keys, "laptop")
    for mutate in (
        lambda d: d["writers"][0].update(label="desktop"),
        lambda d: d["writers"][0].pop("revoked", None) or d["writers"][0].update(created="x"),
        lambda d: d["vault_key"].update(public=d["vault_key"]["private"][:44]),
        lambda d: d["writers"][0].update(revoked="yesterday"),
        lambda d: d["writers"][0].update(revoked="2026-12-01T10:00:00"),  # no time zone
        lambda d: d.pop("writers"),
    ):
        data = copy.deepcopy(with_writer.to_json())
        mutate(data)
        with pytest.raises((KeyringTampered, KeyringFormatError)):
            Keyring.from_json(data).unlock(PW)


def test_revoking_a_writer_and_rotating_the_master_key_keep_its_key(ring_and_keys):
    ring, keys = ring_and_keys
    ring, writer, secret = ring.add_writer(keys, "nas")
    private = ring.vault_private_key(keys)
    revoked = ring.revoke_writer(keys, "nas")
    assert revoked.find_writer(writer.id).revoked is not None
    with pytest.raises(SlotError, match="was revoked"):
        revoked.revoke_writer(keys, "nas")
    # rotate-master: a new generation, the secrets re-wrapped, then the old one dropped.
    rotated = MasterKeys(keys.vault_uuid, keys.id_key, dict(keys.keks), keys.current)
    rotated.add_generation()
    moved = revoked.rewrapped_secrets(rotated)
    rotated.drop_generations_except(rotated.current)
    assert moved.vault_key.generation == rotated.current
    assert moved.vault_private_key(rotated) == private
    assert moved.writer_key(rotated, moved.find_writer("nas")) == secret
    with pytest.raises(KeyringCorrupted):  # the old ring's wrapping needs the old KEK
        revoked.vault_private_key(rotated)


def test_a_keyring_without_the_feature_stays_version_2(ring_and_keys):
    # A vault made before the feature: its first writer brings the key pair.
    old, keys = ring_and_keys
    ring = dataclasses.replace(old, vault_key=None).sealed(keys)
    assert ring.version == 2
    assert "vault_key" not in ring.to_json() and "writers" not in ring.to_json()
    with_writer, _, _ = ring.add_writer(keys, "nas")
    assert with_writer.version == 3 and with_writer.vault_key is not None
    assert with_writer.revision == ring.revision + 2

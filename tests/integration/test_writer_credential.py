"""`key writer-credential`, `key list` and `key revoke-writer` through the real path (the
CLI as a subprocess, moto peers): the credential file holds the public key, the chunk-id
key and its writer key, nothing that decrypts; the keyring records the writer on every
peer; `rotate-master` keeps the vault key and the writer key as they were."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest
import yaml
from support.cli import run_cli, write_config
from support.moto_peers import unique_bucket

from chunkvault.config import load_config
from chunkvault.crypto import vault_seal
from chunkvault.crypto.domains import writer_id_key
from chunkvault.crypto.envelope import EnvelopeError
from chunkvault.keystore import KeyStore
from chunkvault.writer_credential import WriterCredential, load, writer_keys

PW = {"CHUNKVAULT_PASSPHRASE": "owner passphrase"}


@pytest.fixture
def vault(tmp_path: Path, moto_peers) -> Path:
    config = write_config(tmp_path / "cv.yaml", moto_peers.endpoints, unique_bucket())
    assert run_cli(config, "init", env=PW).returncode == 0
    return config


def opened(config: Path):  # type: ignore[no-untyped-def]
    cfg = load_config(config)
    return KeyStore(cfg.vault.state_dir, cfg.vault.id, []).open(PW["CHUNKVAULT_PASSPHRASE"])


def test_a_credential_holds_what_a_writer_needs_and_nothing_that_decrypts(
    vault: Path, tmp_path: Path
) -> None:
    out = tmp_path / "nas.cred"
    result = run_cli(vault, "key", "writer-credential", "--out", str(out), "--label", "nas",
                     env=PW)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    credential = load(out)
    keys_now = opened(vault)
    ring, keys = keys_now.ring, keys_now.keys
    writer = ring.find_writer("nas")
    assert (credential.vault_id, credential.vault_uuid) == (ring.vault_id, ring.vault_uuid)
    assert credential.public_key == ring.vault_key.public
    # Its own id domain: it tells nothing about the owner's chunk ids.
    assert credential.id_key == writer_id_key(keys.id_key, writer.id) != keys.id_key
    assert credential.writer_key == ring.writer_key(keys, writer)
    text = out.read_bytes()
    private = ring.vault_private_key(keys)
    for secret in (private, *keys.keks.values()):
        assert secret.hex().encode() not in text and base64.b64encode(secret) not in text
    # What a writer seals, the owner opens; the credential alone does not.
    sealed = vault_seal.seal_dek(credential.public_key, credential.vault_uuid, "ab" * 32, b"k" * 32)
    assert vault_seal.open_dek(private, ring.vault_uuid, "ab" * 32, sealed) == b"k" * 32
    with pytest.raises(EnvelopeError):
        vault_seal.open_dek(credential.writer_key, ring.vault_uuid, "ab" * 32, sealed)

    listed = json.loads(run_cli(vault, "key", "list", "--json").stdout)
    assert [(r["kind"], r["label"], r["state"]) for r in listed] == [
        ("slot", "default", "active"), ("writer", "nas", "active")
    ]  # fmt: skip
    again = run_cli(vault, "key", "writer-credential", "--out", str(out), env=PW)
    assert again.returncode != 0 and "never written over a file" in again.stderr
    assert load(out) == credential

    revoked = run_cli(vault, "key", "revoke-writer", "nas", env=PW)
    assert revoked.returncode == 0, revoked.stderr
    listed = json.loads(run_cli(vault, "key", "list", "--json").stdout)
    assert listed[1]["state"].startswith("revoked ")
    twice = run_cli(vault, "key", "revoke-writer", "nas", env=PW)
    assert twice.returncode != 0 and "was revoked" in twice.stderr


def test_rotate_master_keeps_the_vault_key_and_writers_working(vault: Path, tmp_path: Path) -> None:
    out = tmp_path / "w.cred"
    assert run_cli(vault, "key", "writer-credential", "--out", str(out), env=PW).returncode == 0
    credential = load(out)
    before = opened(vault)
    private = before.ring.vault_private_key(before.keys)
    rotated = run_cli(vault, "key", "rotate-master", "--yes", env=PW, timeout=300)
    assert rotated.returncode == 0, rotated.stderr
    after = opened(vault)
    assert after.keys.current == before.keys.current + 1
    assert after.ring.vault_key.generation == after.keys.current
    assert after.ring.vault_private_key(after.keys) == private
    writer = after.ring.find_writer("writer-1")
    assert after.ring.writer_key(after.keys, writer) == credential.writer_key


def test_a_credential_readable_by_others_or_malformed_is_refused(tmp_path: Path) -> None:
    good = WriterCredential("home", b"\x01" * 16, "0a0b0c0d", "nas", b"\x02" * 32,
                            b"\x03" * 32, b"\x04" * 32)  # fmt: skip
    path = tmp_path / "c.cred"
    path.write_bytes(good.to_bytes())
    path.chmod(0o644)
    with pytest.raises(Exception, match="readable by others"):
        load(path)
    path.chmod(0o600)
    assert load(path) == good and "0404" not in repr(good)
    for broken in (b"{}", b"not json", good.to_bytes().replace(b'"v": 1', b'"v": 9')):
        path.write_bytes(broken)
        with pytest.raises(Exception, match="credential"):
            load(path)


def test_a_paper_backup_keeps_the_vault_key_and_writers(vault: Path, tmp_path: Path) -> None:
    out = tmp_path / "w.cred"
    assert run_cli(vault, "key", "writer-credential", "--out", str(out), env=PW).returncode == 0
    before = opened(vault)
    paper = run_cli(vault, "key", "export", "--paper")
    assert paper.returncode == 0, paper.stderr
    (tmp_path / "state" / "keyring.json").unlink()
    imported = run_cli(vault, "key", "import", "--paper", input=paper.stdout, env=PW)
    assert imported.returncode == 0, imported.stderr
    after = opened(vault)
    assert after.ring.vault_private_key(after.keys) == before.ring.vault_private_key(before.keys)
    assert after.ring.find_writer("writer-1").id == before.ring.find_writer("writer-1").id


def test_a_state_dir_is_either_the_owner_or_one_writer_and_each_says_so(
    vault: Path, tmp_path: Path
) -> None:
    cred = tmp_path / "w.cred"
    other = tmp_path / "x.cred"
    for out in (cred, other):
        assert run_cli(vault, "key", "writer-credential", "--out", str(out), env=PW).returncode == 0
    owner_cfg = load_config(vault)
    raw = yaml.safe_load(vault.read_text())

    def config(name: str, **changes: object) -> Path:
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({**raw, **changes}))
        return path

    writer_state = str(tmp_path / "writer-state")
    writer = config("writer", keys={"writer_credential_file": str(cred)},
                    vault={"id": "test", "state_dir": writer_state})  # fmt: skip
    assert run_cli(writer, "ls").returncode == 0
    # The same credential in the same state dir: the same id domain, every time.
    first = writer_keys(load(cred), Path(writer_state))
    assert writer_keys(load(cred), Path(writer_state)).id_key == first.id_key
    assert first.id_key != load(cred).id_key  # derived, per state dir
    elsewhere = writer_keys(load(cred), tmp_path / "another-state")
    assert elsewhere.id_key != first.id_key

    cases = [
        # Another writer's credential in that state dir.
        (config("x", keys={"writer_credential_file": str(other)},
                vault={"id": "test", "state_dir": writer_state}), {}, "belongs to writer"),
        # A writer credential in the owner's state dir.
        (config("y", keys={"writer_credential_file": str(cred)}), {}, "opened with the passphrase"),
        # The owner in the writer's state dir.
        (config("z", vault={"id": "test", "state_dir": writer_state}), PW,
         "write-only host's"),
        # A credential of another vault.
        (config("v", keys={"writer_credential_file": str(cred)},
                vault={"id": "other", "state_dir": str(tmp_path / "v")}), {}, "for vault 'test'"),
    ]  # fmt: skip
    for path, env, message in cases:
        result = run_cli(path, "ls", env=env)
        assert result.returncode != 0 and message in result.stderr, (message, result.stderr)
        assert "Traceback" not in result.stderr
    assert owner_cfg.vault.state_dir.is_dir()

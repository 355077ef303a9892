"""`chunkvault init` and `chunkvault key ...` end to end: CLI subprocesses, real HTTP S3
peers (moto_server), real files."""

from __future__ import annotations

import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from support.cli import run_cli, write_config
from support.moto_peers import unique_bucket

from chunkvault.backends.stack import build_peers
from chunkvault.config import load_config
from chunkvault.crypto.envelope import open_chunk, seal_blob, seal_chunk
from chunkvault.keystore import KeyStore
from chunkvault.layout import chunk_key, chunk_metadata, parse_chunk_metadata
from chunkvault.manifest import KIND, ChunkRef, Manifest, new_manifest_name

PW = {"CHUNKVAULT_PASSPHRASE": "first passphrase"}


@pytest.fixture
def vault(tmp_path: Path, moto_peers) -> Path:
    """An initialised vault over the 3 shared moto peers (fresh bucket)."""
    config = write_config(tmp_path / "cv.yaml", moto_peers.endpoints, unique_bucket())
    result = run_cli(config, "init", env=PW)
    assert result.returncode == 0, result.stderr
    return config


def peers_of(config: Path):
    return build_peers(load_config(config))


def snapshot(config: Path) -> dict[str, tuple]:
    """Every object on every peer (key -> etag, metadata) plus every local state file."""
    state: dict[str, tuple] = {}

    def stat_of(peer, key: str) -> None:  # type: ignore[no-untyped-def]
        stat = peer.stat(key)
        state[f"{peer.name}:{key}"] = (stat.etag, tuple(sorted(stat.metadata.items())))

    with ThreadPoolExecutor(8) as pool:  # thousands of HEADs one by one took half a minute
        for peer in peers_of(config):
            list(pool.map(lambda key, p=peer: stat_of(p, key), [i.key for i in peer.list("")]))
    for path in sorted((config.parent / "state").rglob("*")):
        if path.is_file() and path.name != "lock":  # who holds the writer lock, not state
            state[str(path)] = (path.read_bytes(), path.stat().st_mtime_ns)
    return state


def unlock(config: Path, passphrase: str = PW["CHUNKVAULT_PASSPHRASE"]):
    cfg = load_config(config)
    return KeyStore(cfg.vault.state_dir, cfg.vault.id, []).open(passphrase).keys


def put_chunks(config: Path, n: int) -> dict[str, bytes]:
    """Vault content without the pipeline: n one-chunk files, each a sealed chunk object
    (2 replicas) and an encrypted manifest, written the way the pipeline writes them."""
    keys = unlock(config)
    peers = peers_of(config)
    vault_id = load_config(config).vault.id
    plain = {}

    def put_one(i: int) -> None:
        data = f"file {i} ".encode() * 50
        sealed = seal_chunk(keys, data)
        plain[sealed.chunk_id] = data
        for peer in (peers[i % 3], peers[(i + 1) % 3]):
            peer.put(chunk_key(vault_id, sealed.chunk_id), sealed.body, chunk_metadata(sealed))
        manifest = Manifest(
            f"file-{i}", len(data), 0, 0o100644, "00" * 32,
            (ChunkRef(sealed.chunk_id, len(data), sealed.wrapped_dek),),
        )  # fmt: skip
        name = new_manifest_name(vault_id, keys, manifest)
        peers[i % 3].put(name, seal_blob(keys, KIND, name, manifest.to_json()))

    with ThreadPoolExecutor(8) as pool:  # a setup step: 3n requests one by one took a minute
        list(pool.map(put_one, range(n)))
    return plain


def test_init_creates_keyring_here_and_on_every_peer_and_refuses_to_overwrite(vault, tmp_path):
    state = tmp_path / "state"
    local = json.loads((state / "keyring.json").read_text())
    assert (state / "keyring.json").stat().st_mode & 0o777 == 0o600
    for peer in peers_of(vault):
        assert json.loads(peer.get("test/keyring")) == local
    again = run_cli(vault, "init", env=PW)
    assert again.returncode == 1 and "already initialised" in again.stderr
    # A second machine (empty state dir) must not create a new vault over the old one.
    shutil.rmtree(state)
    other = run_cli(vault, "init", env={"CHUNKVAULT_PASSPHRASE": "attacker passphrase"})
    assert other.returncode == 1
    assert "already exists on peer(s) p0, p1, p2" in other.stderr
    assert not state.exists() or not (state / "keyring.json").exists()
    for peer in peers_of(vault):
        assert json.loads(peer.get("test/keyring")) == local


def test_init_if_missing_checks_the_passphrase_of_an_existing_vault(vault, tmp_path):
    """compose's one-shot init runs on every `up`: exit 0 when the vault is there and opens,
    refuse a passphrase that does not open it, never write a new keyring over it."""
    state = tmp_path / "state"
    local = (state / "keyring.json").read_bytes()
    again = run_cli(vault, "init", "--if-missing", env=PW)
    assert again.returncode == 0, again.stderr
    assert "already exists here" in again.stdout and "nothing to do" in again.stdout
    shutil.rmtree(state)  # a new machine: the vault is only on the peers
    wrong = run_cli(vault, "init", "--if-missing", env={"CHUNKVAULT_PASSPHRASE": "wrong"})
    assert wrong.returncode != 0 and "passphrase" in wrong.stderr.lower(), wrong.stderr
    fresh = run_cli(vault, "init", "--if-missing", env=PW)
    assert fresh.returncode == 0, fresh.stderr
    assert "already exists on p0, p1, p2" in fresh.stdout
    assert (state / "keyring.json").read_bytes() == local
    for peer in peers_of(vault):
        assert peer.get("test/keyring") == local


def test_init_if_missing_gives_a_new_peer_the_keyring(vault, tmp_path, moto_peer_factory):
    """Adding a fourth peer in compose: peers-init makes its bucket, the one-shot init
    (--if-missing) copies the keyring to it."""
    data = yaml.safe_load(vault.read_text())
    data["peers"].append(
        {**data["peers"][0], "name": "p3", "endpoint": moto_peer_factory().endpoint}
    )
    vault.write_text(yaml.safe_dump(data))
    assert run_cli(vault, "peers", "init").returncode == 0
    result = run_cli(vault, "init", "--if-missing", env=PW)
    assert result.returncode == 0, result.stderr
    assert "keyring copied to peer(s) p3" in result.stderr
    local = (tmp_path / "state" / "keyring.json").read_bytes()
    assert peers_of(vault)[3].get("test/keyring") == local


def test_init_if_missing_creates_a_missing_vault(tmp_path, moto_peers):
    config = write_config(tmp_path / "cv.yaml", moto_peers.endpoints, unique_bucket())
    result = run_cli(config, "init", "--if-missing", env=PW)
    assert result.returncode == 0 and "initialised" in result.stdout, result.stderr


def test_wrong_passphrase_is_one_line_and_changes_nothing(vault):
    put_chunks(vault, 3)
    before = snapshot(vault)
    for args in (
        ["key", "verify"],
        ["key", "passwd"],
        ["key", "add", "--label", "x"],
        ["key", "remove", "default"],
        ["key", "rotate-master", "--yes"],
    ):
        result = run_cli(
            vault,
            *args,
            env={
                "CHUNKVAULT_PASSPHRASE": "not it at all",
                "CHUNKVAULT_NEW_PASSPHRASE": "new one!!",
            },
        )
        assert result.returncode == 3, (args, result.stderr)
        assert result.stderr.startswith("error: wrong passphrase")
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert snapshot(vault) == before


def test_passphrase_sources_in_order(vault, tmp_path):
    good = tmp_path / "pw"
    good.write_text("first passphrase\n")
    bad = tmp_path / "bad"
    bad.write_text("wrong passphrase\n")
    wrong = {"CHUNKVAULT_PASSPHRASE": "wrong passphrase"}
    assert (
        run_cli(vault, "key", "verify", "--passphrase-file", str(good), env=wrong).returncode == 0
    )
    assert (
        run_cli(vault, "--passphrase-file", str(good), "key", "verify", env=wrong).returncode == 0
    )
    env = {"CHUNKVAULT_PASSPHRASE_FILE": str(good), **wrong}
    assert run_cli(vault, "key", "verify", env=env).returncode == 0
    env = {"CHUNKVAULT_PASSPHRASE_FILE": str(bad), **PW}
    assert run_cli(vault, "key", "verify", env=env).returncode == 3
    no_source = run_cli(vault, "key", "verify")
    assert no_source.returncode == 1 and "no passphrase given" in no_source.stderr
    missing = run_cli(vault, "key", "verify", "--passphrase-file", str(tmp_path / "nope"))
    assert missing.returncode == 1 and "cannot read passphrase file" in missing.stderr


def _timed_passwd(config: Path, old: str, new: str) -> float:
    start = time.perf_counter()
    result = run_cli(
        config,
        "key",
        "passwd",
        env={"CHUNKVAULT_PASSPHRASE": old, "CHUNKVAULT_NEW_PASSPHRASE": new},
    )
    assert result.returncode == 0, result.stderr
    return time.perf_counter() - start


@pytest.mark.slow
def test_passwd_is_o1_and_rewrites_only_the_keyring(tmp_path, moto_peers):
    small = write_config(tmp_path / "small" / "cv.yaml", moto_peers.endpoints, unique_bucket())
    large = write_config(tmp_path / "large" / "cv.yaml", moto_peers.endpoints, unique_bucket())
    for config, n in ((small, 5), (large, 150)):
        assert run_cli(config, "init", env=PW).returncode == 0
        put_chunks(config, n)
    before = snapshot(large)
    t_small = _timed_passwd(small, "first passphrase", "second passphrase")
    t_large = _timed_passwd(large, "first passphrase", "second passphrase")
    # Same work whatever the vault size: KDFs plus one keyring write per peer.
    assert t_large < t_small * 1.5 + 0.5, (t_small, t_large)
    after = snapshot(large)
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert changed == {
        "p0:test/keyring",
        "p1:test/keyring",
        "p2:test/keyring",
        str(tmp_path / "large" / "state" / "keyring.json"),
    }
    assert run_cli(large, "key", "verify", env=PW).returncode == 3
    ok = run_cli(large, "key", "verify", env={"CHUNKVAULT_PASSPHRASE": "second passphrase"})
    assert ok.returncode == 0, ok.stderr


def test_two_slots_either_unlocks_and_removing_one_keeps_the_other(vault):
    env = {**PW, "CHUNKVAULT_NEW_PASSPHRASE": "second passphrase"}
    assert run_cli(vault, "key", "add", "--label", "laptop", env=env).returncode == 0
    listed = json.loads(run_cli(vault, "key", "list", "--json").stdout)
    assert [s["label"] for s in listed] == ["default", "laptop"]
    assert {s["kdf"] for s in listed} == {"argon2id"}
    second = {"CHUNKVAULT_PASSPHRASE": "second passphrase"}
    assert "slot 'default'" in run_cli(vault, "key", "verify", env=PW).stdout
    assert "slot 'laptop'" in run_cli(vault, "key", "verify", env=second).stdout
    assert run_cli(vault, "key", "remove", "default", env=second).returncode == 0
    assert run_cli(vault, "key", "verify", env=PW).returncode == 3
    assert run_cli(vault, "key", "verify", env=second).returncode == 0
    last = run_cli(vault, "key", "remove", "laptop", env=second)
    assert last.returncode == 2 and "last one" in last.stderr
    dup = run_cli(
        vault,
        "key",
        "add",
        "--label",
        "laptop",
        env={**second, "CHUNKVAULT_NEW_PASSPHRASE": "third passphrase"},
    )
    assert dup.returncode == 2 and "already exists" in dup.stderr
    short = run_cli(
        vault, "key", "add", "--label", "x", env={**second, "CHUNKVAULT_NEW_PASSPHRASE": "short"}
    )
    assert short.returncode == 2 and "too short" in short.stderr


def test_fresh_machine_loads_the_keyring_from_the_peers(vault, tmp_path):
    state = tmp_path / "state"
    original = (state / "keyring.json").read_bytes()
    shutil.rmtree(state)
    result = run_cli(vault, "key", "verify", env=PW)
    assert result.returncode == 0, result.stderr
    assert (state / "keyring.json").read_bytes() == original


def test_missing_and_corrupted_keyrings_have_distinct_errors(tmp_path, moto_peers, vault):
    empty = write_config(tmp_path / "empty" / "cv.yaml", moto_peers.endpoints, unique_bucket())
    assert run_cli(empty, "peers", "init").returncode == 0
    missing = run_cli(empty, "key", "verify", env=PW)
    assert missing.returncode == 5 and "chunkvault init" in missing.stderr
    path = tmp_path / "state" / "keyring.json"
    data = json.loads(path.read_text())
    material = bytearray(__import__("base64").b64decode(data["slots"][0]["material"]))
    material[20] ^= 0x40
    data["slots"][0]["material"] = __import__("base64").b64encode(bytes(material)).decode()
    path.write_text(json.dumps(data))
    corrupted = run_cli(vault, "ls", env=PW)
    assert corrupted.returncode == 4 and "keyring corrupted" in corrupted.stderr
    # `key verify` reads the peers' copies too: the local one is repaired from them.
    repaired = run_cli(vault, "key", "verify", env=PW)
    assert repaired.returncode == 0, repaired.stderr
    assert "keyring copy on local refused: keyring corrupted" in repaired.stderr
    assert run_cli(vault, "ls", env=PW).returncode == 0
    path.write_text("{not json")
    garbage = run_cli(vault, "key", "verify", env=PW)
    assert garbage.returncode == 4 and "not valid JSON" in garbage.stderr


def test_rotate_master_rewraps_every_data_key_without_resending_data(vault):
    plain = put_chunks(vault, 12)
    old_keys = unlock(vault)
    env = {**PW, "CHUNKVAULT_NEW_PASSPHRASE": "second passphrase"}
    assert run_cli(vault, "key", "add", "--label", "other", env=env).returncode == 0
    refused = run_cli(vault, "key", "rotate-master", env=PW)
    assert refused.returncode == 1 and "--yes" in refused.stderr
    bodies = {
        (p.name, i.key): p.get(i.key) for p in peers_of(vault) for i in p.list("test/chunks/")
    }
    result = run_cli(vault, "key", "rotate-master", "--yes", env=PW)
    assert result.returncode == 0, result.stderr
    assert "24 data key(s) re-wrapped" in result.stdout
    keys = unlock(vault)
    assert sorted(keys.keks) == [2] and keys.id_key == old_keys.id_key
    assert keys.keks[2] != old_keys.keks[1]
    for peer in peers_of(vault):
        for info in peer.list("test/chunks/"):
            chunk_id = info.key.rsplit("/", 1)[1]
            body = peer.get(info.key)
            assert body == bodies[(peer.name, info.key)]  # data untouched
            meta = parse_chunk_metadata(peer.stat(info.key).metadata)
            assert meta.generation == 2
            assert open_chunk(keys, chunk_id, body, meta.wrapped_dek) == plain[chunk_id]
    slots = json.loads(run_cli(vault, "key", "list", "--json").stdout)
    assert [s["label"] for s in slots] == ["default"]
    again = run_cli(vault, "key", "rotate-master", "--yes", env=PW)
    assert again.returncode == 0 and "generation 3" in again.stdout


def test_rotate_master_resumes_after_a_peer_failure(tmp_path, moto_peer_factory):
    servers = [moto_peer_factory() for _ in range(3)]
    config = write_config(
        tmp_path / "cv.yaml",
        [s.endpoint for s in servers],
        "cvrotate",
        transfer={"timeout_seconds": 1, "retries": 0},
    )
    assert run_cli(config, "init", env=PW).returncode == 0
    plain = put_chunks(config, 6)
    servers[2].stop()  # hung peer: its objects cannot be re-wrapped now
    try:
        failed = run_cli(config, "key", "rotate-master", "--yes", env=PW)
    finally:
        servers[2].cont()
    assert failed.returncode == 1, failed.stderr
    assert "rotation incomplete" in failed.stderr and "rerun" in failed.stderr
    assert sorted(unlock(config).keks) == [1, 2]  # both kept until done
    resumed = run_cli(config, "key", "rotate-master", "--yes", env=PW)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming rotation to generation 2" in resumed.stderr
    keys = unlock(config)
    assert sorted(keys.keks) == [2]
    for peer in peers_of(config):
        for info in peer.list("test/chunks/"):
            chunk_id = info.key.rsplit("/", 1)[1]
            meta = parse_chunk_metadata(peer.stat(info.key).metadata)
            assert (
                open_chunk(keys, chunk_id, peer.get(info.key), meta.wrapped_dek) == plain[chunk_id]
            )


def test_paper_export_and_import_restore_a_lost_keyring(vault, tmp_path):
    paper = run_cli(vault, "key", "export", "--paper")
    assert paper.returncode == 0
    assert "first passphrase" not in paper.stdout
    text = paper.stdout
    shutil.rmtree(tmp_path / "state")
    for peer in peers_of(vault):
        peer.delete("test/keyring")
    assert run_cli(vault, "key", "verify", env=PW).returncode == 5
    lines = text.splitlines()
    typo_line = next(i for i, line in enumerate(lines) if line.startswith("002:"))
    typo = lines.copy()
    typo[typo_line] = (
        typo[typo_line][:6] + ("0" if typo[typo_line][6] != "0" else "1") + typo[typo_line][7:]
    )
    bad = run_cli(vault, "key", "import", "--paper", input="\n".join(typo), env=PW)
    assert bad.returncode == 1 and "line 002: checksum mismatch" in bad.stderr
    imported = run_cli(vault, "key", "import", "--paper", input=text, env=PW)
    assert imported.returncode == 0, imported.stderr
    assert run_cli(vault, "key", "verify", env=PW).returncode == 0
    for peer in peers_of(vault):
        assert json.loads(peer.get("test/keyring"))["slots"]

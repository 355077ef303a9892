from pathlib import Path

import pytest

from chunkvault.config import ConfigError, load_config, parse_config

S3 = {"name": "a", "endpoint": "http://127.0.0.1:9000", "bucket": "chunkvault"}


def peers(n: int) -> list[dict]:
    return [{**S3, "name": f"p{i}"} for i in range(n)]


def problems(data: dict, **kw) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, **kw)
    return dict(info.value.problems)


def test_defaults_match_the_design_brief():
    cfg = parse_config({"peers": peers(2)})
    assert cfg.chunking.min_size == 512 * 1024
    assert cfg.chunking.avg_size == 2 * 1024**2
    assert cfg.chunking.max_size == 8 * 1024**2
    assert cfg.transfer.segment_size == 8 * 1024**2
    assert cfg.transfer.timeout_seconds == 10
    assert (cfg.replication.replicas, cfg.replication.min_replicas) == (2, 1)
    assert cfg.api.listen == "127.0.0.1:8080"
    assert cfg.keys.kdf == "argon2id"
    assert "*.swp" in cfg.watch.ignore
    assert cfg.flows[0].match == "**"


def test_size_strings_and_peer_kinds():
    cfg = parse_config(
        {
            "chunking": {"min_size": "256KiB", "avg_size": "1MiB", "max_size": "4MiB"},
            "transfer": {"segment_size": "5MiB"},
            "peers": [S3, {"name": "usb", "path": "/mnt/usb", "weight": 2}],
        }
    )
    assert cfg.chunking.min_size == 256 * 1024
    assert cfg.transfer.segment_size == 5 * 1024**2
    assert [p.kind for p in cfg.peers] == ["s3", "filesystem"]
    assert cfg.peer("usb").weight == 2


def test_every_error_is_reported_at_once_with_its_key_path():
    found = problems(
        {
            "vault": {"id": "Bad Name!", "colour": "red"},
            "chunking": {"min_size": "8MiB", "avg_size": "1MiB"},
            "transfer": {"segment_size": "1MiB"},
            "replication": {"replicas": 3, "min_replicas": 4},
            "peers": [S3, {**S3, "bucket": "x"}],
        }
    )
    assert set(found) == {
        "vault.id",
        "vault.colour",
        "chunking.avg_size",
        "transfer.segment_size",
        "peers[1].bucket",
        # cross-section checks still run although other sections failed
        "replication.replicas",
        "replication.min_replicas",
        "peers[1].name",
    }
    assert "unknown key" in found["vault.colour"]
    assert "5MiB" in found["transfer.segment_size"]


def test_cross_field_checks_name_their_keys():
    found = problems(
        {
            "replication": {"replicas": 3, "min_replicas": 4},
            "peers": [S3, {**S3, "bucket": "other"}],
        }
    )
    assert set(found) == {"peers[1].name", "replication.replicas", "replication.min_replicas"}
    assert "only 2 peer(s)" in found["replication.replicas"]
    assert "duplicate" in found["peers[1].name"]


def test_flow_replicas_cannot_exceed_peers():
    found = problems({"peers": peers(2), "flows": [{"match": "**", "replicas": 3}]})
    assert set(found) == {"flows[0].replicas"}


@pytest.mark.parametrize(
    ("peer", "key"),
    [
        ({"name": "a", "endpoint": "http://x:1", "bucket": "bkt", "path": "/x"}, "peers[0].path"),
        ({"name": "a"}, "peers[0].endpoint"),
        ({"name": "a", "endpoint": "http://x:1"}, "peers[0].bucket"),
        ({"name": "a", "path": "/x", "bucket": "bkt"}, "peers[0].bucket"),
        ({**S3, "access_key": "k"}, "peers[0].secret_key"),
        ({**S3, "endpoint": "ftp://x"}, "peers[0].endpoint"),
        ({**S3, "weight": 0}, "peers[0].weight"),
    ],
)
def test_a_peer_is_s3_xor_directory(peer, key):
    found = problems({"peers": [peer], "replication": {"replicas": 1}})
    assert key in found, found


def test_no_peers_is_an_error():
    assert "peers" in problems({})
    assert "peers" in problems({"peers": []})


def test_env_expansion_and_missing_variables():
    cfg = parse_config(
        {
            "peers": [{**S3, "access_key": "${AK}", "secret_key": "pre-${SK}-$${LIT}"}],
            "replication": {"replicas": 1},
        },
        env={"AK": "access", "SK": "secret"},
    )
    assert cfg.peers[0].access_key.get_secret_value() == "access"
    assert cfg.peers[0].secret_key.get_secret_value() == "pre-secret-${LIT}"
    found = problems(
        {
            "peers": [{**S3, "access_key": "${NOPE}", "secret_key": "s"}],
            "replication": {"replicas": 1},
        },
        env={},
    )
    assert found == {"peers[0].access_key": "environment variable NOPE is not set"}


def test_secret_files_relative_to_the_config(tmp_path: Path):
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "sk").write_text("s3cr3t\n")
    (tmp_path / "token").write_text("tok")
    cfg_file = tmp_path / "chunkvault.yaml"
    cfg_file.write_text(
        "vault: {state_dir: state}\n"
        "replication: {replicas: 1}\n"
        "api: {token_file: token}\n"
        "peers:\n"
        "  - {name: a, endpoint: 'http://127.0.0.1:1', bucket: bkt, access_key: ak,"
        " secret_key_file: secrets/sk}\n"
    )
    cfg = load_config(cfg_file)
    assert cfg.peers[0].secret_key.get_secret_value() == "s3cr3t"
    assert cfg.api.token.get_secret_value() == "tok"
    assert cfg.vault.state_dir == tmp_path / "state"
    redacted = cfg.redacted()
    assert redacted["peers"][0]["secret_key"] == "***"
    assert redacted["api"]["token"] == "***"
    assert "s3cr3t" not in repr(cfg) and "s3cr3t" not in str(redacted)


def test_secret_given_twice_or_unreadable():
    found = problems(
        {
            "peers": [{**S3, "access_key": "a", "secret_key": "b", "secret_key_file": "/x"}],
            "replication": {"replicas": 1},
        }
    )
    assert "not both" in found["peers[0].secret_key_file"]
    found = problems(
        {
            "peers": [{**S3, "access_key": "a", "secret_key_file": "/nonexistent/sk"}],
            "replication": {"replicas": 1},
        }
    )
    assert "cannot read secret file" in found["peers[0].secret_key_file"]


def test_load_config_file_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("peers: [\n")
    with pytest.raises(ConfigError, match="invalid YAML: line"):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just a string\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(scalar)


def test_api_listen_and_chunk_bounds():
    cfg = parse_config({"peers": peers(2), "api": {"listen": "[::1]:9090"}})
    assert (cfg.api.host, cfg.api.port) == ("::1", 9090)
    found = problems({"peers": peers(2), "chunking": {"min_size": 10}, "api": {"listen": "nope"}})
    assert set(found) == {"chunking.min_size", "api.listen"}

"""Deployment material stays valid: compose files against the Compose spec schema, the
example peer registry against our config schema, the S3 policy against what we call."""

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from chunkvault.config import parse_config

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "tests" / "data" / "compose-spec.json").read_text())


COMPOSE = ROOT / "compose"


@pytest.mark.parametrize("path", sorted(COMPOSE.glob("compose*.yaml")), ids=lambda p: p.name)
def test_compose_files_match_the_compose_spec(path):
    data = yaml.safe_load(path.read_text())
    # The schema names draft-07 by an id jsonschema does not know; say it explicitly.
    jsonschema.Draft7Validator(SCHEMA).validate(data)
    for name, service in data["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_compose_runs_the_agent_beside_three_minio_peers():
    data = yaml.safe_load((COMPOSE / "compose.yaml").read_text())
    services = data["services"]
    minio = [n for n, s in services.items() if s.get("image", "").startswith("minio/minio")]
    assert len(minio) >= 3
    assert all(services[n].get("healthcheck") for n in minio)
    assert len({v for n in minio for v in services[n]["volumes"]}) == len(minio)  # own volumes
    agent = services["agent"]
    assert agent["image"] == "chunkvault:latest" and agent["command"] == ["run"]
    assert "./inbox:/data:ro" in agent["volumes"]
    assert {n: c["condition"] for n, c in agent["depends_on"].items()} == {
        **{n: "service_healthy" for n in minio},
        "init": "service_completed_successfully",
    }
    assert services["peers-init"]["command"] == ["peers", "init"]
    assert services["init"]["command"] == ["init", "--if-missing"]
    assert agent["environment"]["CHUNKVAULT_PASSPHRASE_FILE"].startswith("/run/secrets/")
    assert set(data["secrets"]) <= set(agent["secrets"])


def _compose_config(name: str, tmp_path: Path, env: dict[str, str] | None = None):
    """A compose config parsed as the agent would, with stand-in secret files."""
    text = (COMPOSE / name).read_text().replace("/run/secrets/", f"{tmp_path}/")
    for secret in ("chunkvault_api_token", "minio_root_user", "minio_root_password"):
        (tmp_path / secret).write_text("value\n")
    return parse_config(yaml.safe_load(text), base_dir=tmp_path, env=env or {})


def test_compose_configs_name_the_compose_peers(tmp_path):
    services = yaml.safe_load((COMPOSE / "compose.yaml").read_text())["services"]
    three = _compose_config("chunkvault.yaml", tmp_path)
    assert [p.name for p in three.peers] == ["minio-a", "minio-b", "minio-c"]
    assert all(p.endpoint == f"http://{p.name}:9000" and p.name in services for p in three.peers)
    assert three.api.host == "0.0.0.0" and three.api.token is not None
    # The fourth-peer file is the same config plus minio-d, which the override defines.
    four = _compose_config("chunkvault.peer-d.yaml", tmp_path)
    assert four.model_dump(exclude={"peers"}) == three.model_dump(exclude={"peers"})
    assert four.peers[:3] == three.peers and [p.name for p in four.peers[3:]] == ["minio-d"]
    override = yaml.safe_load((COMPOSE / "compose.peer-d.yaml").read_text())["services"]
    assert "minio-d" in override


def test_host_config_reaches_the_published_peer_ports(tmp_path):
    services = yaml.safe_load((COMPOSE / "compose.yaml").read_text())["services"]
    (tmp_path / "secrets").mkdir()
    for secret in ("minio_root_user", "minio_root_password"):
        (tmp_path / "secrets" / secret).write_text("value\n")
    data = yaml.safe_load((COMPOSE / "host.yaml").read_text())
    host = parse_config(data, base_dir=tmp_path, env={})
    inside = _compose_config("chunkvault.yaml", tmp_path)
    assert host.vault.id == inside.vault.id
    for peer, twin in zip(host.peers, inside.peers, strict=True):
        published = services[peer.name]["ports"][0]  # 127.0.0.1:HOSTPORT:9000
        assert peer.endpoint == "http://127.0.0.1:" + published.split(":")[1]
        assert (peer.name, peer.bucket) == (twin.name, twin.bucket)


def test_example_peer_registry_is_a_valid_config(tmp_path):
    data = yaml.safe_load((ROOT / "peers" / "example-peers.yaml").read_text())
    (tmp_path / "minio-a").write_text("secret-a\n")
    (tmp_path / "minio-b").write_text("secret-b\n")
    for peer in data["peers"]:
        if "secret_key_file" in peer:
            peer["secret_key_file"] = str(tmp_path / Path(peer["secret_key_file"]).name)
    cfg = parse_config(data, env={"MINIO_A_ACCESS_KEY": "a", "MINIO_B_ACCESS_KEY": "b"})
    assert [p.kind for p in cfg.peers] == ["s3", "s3", "filesystem"]
    assert cfg.peer("minio-a").secret_key.get_secret_value() == "secret-a"


def test_s3_policy_grants_exactly_what_the_backend_uses():
    policy = json.loads((ROOT / "peers" / "s3-policy.json").read_text())
    actions = {a for s in policy["Statement"] for a in s["Action"]}
    assert {
        "s3:GetObject",
        "s3:PutObject",
        "s3:DeleteObject",
        "s3:ListBucket",
        "s3:AbortMultipartUpload",
    } <= actions
    assert not any(a.endswith("*") for a in actions)
    assert "s3:CreateBucket" not in actions and "s3:DeleteBucket" not in actions

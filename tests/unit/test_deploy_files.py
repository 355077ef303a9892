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


@pytest.mark.parametrize("path", sorted((ROOT / "compose").glob("*.yaml")), ids=lambda p: p.name)
def test_compose_files_match_the_compose_spec(path):
    data = yaml.safe_load(path.read_text())
    # The schema names draft-07 by an id jsonschema does not know; say it explicitly.
    jsonschema.Draft7Validator(SCHEMA).validate(data)
    for name, service in data["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_compose_dir_is_not_empty():
    assert list((ROOT / "compose").glob("*.yaml"))


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

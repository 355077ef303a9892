"""What a command costs before it does any work: exactly one passphrase KDF, no S3
client (nor boto3 or botocore at all) when no peer has to be asked - `ls`, a no-change
`push` - and one walk of the tree per push: the plan made before the unlock stands.

The CLI runs as a subprocess through a wrapper around the same ``main`` the installed
command calls, which counts KDF derivations and reports whether boto3 was imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.cli import init_vault, run_cli
from support.moto_peers import unique_bucket

PW = {"CHUNKVAULT_PASSPHRASE": "fixed cost passphrase"}

_WRAPPER = """
import atexit, json, os, sys
from chunkvault.crypto import kdf
calls = []
real = kdf.KdfParams.derive
def counted(self, passphrase):
    calls.append(self.alg)
    return real(self, passphrase)
kdf.KdfParams.derive = counted
from chunkvault.cli import push
plans = []
real_plan = push.plan_push
def planned(*args):
    plans.append(1)
    return real_plan(*args)
push.plan_push = planned
def report():
    with open(os.environ["CV_TEST_REPORT"], "w") as out:
        json.dump({"kdf": len(calls), "plans": len(plans), "boto3": "boto3" in sys.modules,
                   "botocore": "botocore" in sys.modules}, out)
atexit.register(report)
from chunkvault.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def run_counted(config: Path, *args: str, tmp_path: Path) -> tuple[str, dict[str, object]]:
    report = tmp_path / "report.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHUNKVAULT_")} | PW
    env["CV_TEST_REPORT"] = str(report)
    result = subprocess.run(
        [sys.executable, "-c", _WRAPPER, "--config", str(config), *args],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout, json.loads(report.read_text())


@pytest.fixture
def vault(tmp_path: Path, moto_peers) -> tuple[Path, Path]:
    config, inbox = init_vault(tmp_path, moto_peers.endpoints, unique_bucket(), PW)
    for i in range(16):
        (inbox / f"f{i}.txt").write_text(f"file {i}\n" * 50)
    return config, inbox


def test_ls_and_a_no_change_push_need_one_kdf_and_no_s3_client(
    vault: tuple[Path, Path], tmp_path: Path
) -> None:
    config, _inbox = vault
    synced = run_cli(config, "ls", env=PW)  # the first command on a new catalog lists peers
    assert synced.returncode == 0, synced.stderr
    out, cost = run_counted(config, "ls", tmp_path=tmp_path)
    assert cost == {"kdf": 1, "plans": 0, "boto3": False, "botocore": False}, cost

    first = run_cli(config, "push", env=PW)
    assert first.returncode == 0, first.stderr
    out, cost = run_counted(config, "push", tmp_path=tmp_path)
    assert "16 unchanged" in out
    assert cost == {"kdf": 1, "plans": 1, "boto3": False, "botocore": False}, cost


def test_a_push_that_stores_still_needs_one_kdf(vault: tuple[Path, Path], tmp_path: Path) -> None:
    config, _inbox = vault
    out, cost = run_counted(config, "push", tmp_path=tmp_path)
    assert "16 stored" in out
    # The first push after init: the unlock writes nothing to the catalog (init recorded
    # the key generation), so the plan made before it stands and the tree is walked once.
    assert cost == {"kdf": 1, "plans": 1, "boto3": True, "botocore": True}, cost


def test_the_command_does_not_scan_installed_packages_for_pydantic_plugins() -> None:
    """pydantic would read every installed distribution's entry points when the config's
    first model is built (~20-40 ms of every command); a user's own setting still wins."""
    probe = (
        "import chunkvault.cli.main\n"
        "from pydantic.plugin import _loader\n"
        "print(_loader._plugins is None)\n"
    )
    base = {k: v for k, v in os.environ.items() if k != "PYDANTIC_DISABLE_PLUGINS"}
    for env, never_scanned in ((base, "True"), (base | {"PYDANTIC_DISABLE_PLUGINS": ""}, "False")):
        out = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=60
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == never_scanned

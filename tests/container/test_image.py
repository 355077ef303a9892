"""chunkvault:latest as the agent: ``docker run --network host`` (loopback only) with the
documented mounts, against moto peers on 127.0.0.1. Files dropped in the bind-mounted
watch dir reach the peers and restore byte-identical on the host; the agent runs as a
non-root user, answers its HEALTHCHECK, and stops cleanly on ``docker stop``."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.cli import run_cli, write_config
from support.moto_peers import unique_bucket

IMAGE = os.environ.get("CHUNKVAULT_IMAGE", "chunkvault:latest")
UID = 10001  # the image's fixed user (Dockerfile)
PASSPHRASE = "container passphrase " + uuid.uuid4().hex[:8]


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check:
        assert result.returncode == 0, f"docker {' '.join(args)}: {result.stderr}"
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module", autouse=True)
def image() -> str:
    found = docker("image", "inspect", IMAGE, check=False)
    assert found.returncode == 0, f"{IMAGE} not found: build it first (make image-offline)"
    return IMAGE


class Vault:
    """A vault as the container sees it: host dirs for /data and /var/lib/chunkvault, a
    config mounted read-only at /etc/chunkvault/chunkvault.yaml, a passphrase secret."""

    def __init__(self, tmp_path: Path, endpoints: list[str]) -> None:
        self.watch = tmp_path / "watch"
        self.state = tmp_path / "state"
        self.watch.mkdir()
        # The image's user must own its state (documented: install -d -o 10001 STATE).
        self.state.mkdir(mode=0o700)
        os.chown(self.state, UID, UID)
        self.api_port = free_port()
        self.config = tmp_path / "container.yaml"
        self.bucket = unique_bucket()
        write_config(
            self.config, endpoints, self.bucket,
            vault={"id": "test", "state_dir": "/var/lib/chunkvault"},
            watch={"path": "/data", "settle_seconds": 0.3, "rescan_seconds": 0},
            api={
                "listen": f"127.0.0.1:{self.api_port}",
                "token_file": "/run/secrets/chunkvault_api_token",
            },
        )  # fmt: skip
        self.config.chmod(0o644)
        # A Docker secret is a bind-mounted file: the image's user must be able to read it.
        self.secret = self._secret(tmp_path / "passphrase", PASSPHRASE)
        self.token = self._secret(tmp_path / "api-token", uuid.uuid4().hex)
        # The host side: the same vault from a machine with nothing but config and passphrase.
        self.host_config = write_config(
            tmp_path / "host" / "cv.yaml", endpoints, self.bucket, vault={"id": "test"}
        )

    @staticmethod
    def _secret(path: Path, value: str) -> Path:
        path.write_text(value + "\n")
        path.chmod(0o400)
        os.chown(path, UID, UID)
        return path

    def mounts(self) -> list[str]:
        return [
            "-v", f"{self.watch}:/data:ro",
            "-v", f"{self.state}:/var/lib/chunkvault",
            "-v", f"{self.config}:/etc/chunkvault/chunkvault.yaml:ro",
            "-v", f"{self.token}:/run/secrets/chunkvault_api_token:ro",
        ]  # fmt: skip


@pytest.fixture
def vault(tmp_path: Path, moto_peers) -> Vault:
    return Vault(tmp_path, moto_peers.endpoints)


@pytest.fixture
def container_name() -> Iterator[str]:
    name = f"cv-test-{uuid.uuid4().hex[:12]}"
    yield name
    docker("rm", "--force", name, check=False)


def init_in_container(vault: Vault) -> None:
    result = docker(
        "run", "--rm", "--network", "host", *vault.mounts(),
        "-e", f"CHUNKVAULT_PASSPHRASE={PASSPHRASE}", IMAGE, "init",
    )  # fmt: skip
    assert "initialised" in (result.stdout + result.stderr).lower(), result


def start_agent(vault: Vault, name: str) -> None:
    docker(
        "run", "--detach", "--name", name, "--network", "host", *vault.mounts(),
        "-v", f"{vault.secret}:/run/secrets/chunkvault_passphrase:ro",
        "-e", "CHUNKVAULT_PASSPHRASE_FILE=/run/secrets/chunkvault_passphrase",
        # The image's own HEALTHCHECK command, asked every second instead of every 30 s.
        "--health-interval", "1s", "--health-start-period", "1s",
        IMAGE,
    )  # fmt: skip

    def started() -> bool:
        running = docker("inspect", "-f", "{{.State.Running}}", name).stdout.strip()
        assert running == "true", f"the agent exited: {logs(name)}"
        return "watching" in logs(name)

    wait_for(started, 60, lambda: f"agent start: {logs(name)}")


def logs(name: str) -> str:
    result = docker("logs", name, check=False)
    return result.stdout + result.stderr


def wait_for(predicate, timeout: float, what) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what()}"
        time.sleep(0.3)


def stored_in_container(name: str) -> dict[str, dict]:
    result = docker("exec", name, "chunkvault", "ls", "--json", check=False)
    if result.returncode != 0:
        return {}
    return {entry["path"]: entry for entry in json.loads(result.stdout)}


def test_agent_in_the_image_stores_what_lands_in_data(vault: Vault, container_name: str) -> None:
    init_in_container(vault)
    start_agent(vault, container_name)

    # Not root, by the image's own USER.
    assert docker("exec", container_name, "id", "-u").stdout.strip() == str(UID)
    assert docker("inspect", "-f", "{{.Config.User}}", container_name).stdout.strip() != ""

    files = {
        "note.txt": b"dropped on the host\n",
        "sub dir/big.bin": os.urandom(3 * 1024 * 1024 + 17),
        "sub dir/deeper/empty": b"",
    }
    for rel, data in files.items():
        path = vault.watch / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    wait_for(
        lambda: set(files) <= set(stored_in_container(container_name)), 60,
        lambda: f"files in the vault: {logs(container_name)}",
    )  # fmt: skip

    # The peers hold it: a fresh host state restores it with config and passphrase only.
    out = vault.watch.parent / "restored"
    env = {"CHUNKVAULT_PASSPHRASE": PASSPHRASE}
    result = run_cli(vault.host_config, "restore", "--to", str(out), env=env)
    assert result.returncode == 0, result.stderr
    for rel, data in files.items():
        assert (out / rel).read_bytes() == data, rel

    # The HEALTHCHECK Docker runs, and the same command by hand.
    def health() -> str:
        return docker("inspect", "-f", "{{.State.Health.Status}}", container_name).stdout

    wait_for(lambda: health().strip() == "healthy", 30, lambda: f"healthy, is {health()}")
    probe = docker("exec", container_name, "python3", "-m", "chunkvault.healthcheck")
    assert probe.stdout.strip() == "ok"

    # docker stop sends SIGTERM to PID 1 (exec-form ENTRYPOINT): a clean, quick stop.
    started = time.monotonic()
    docker("stop", "--time", "15", container_name, timeout=60)
    took = time.monotonic() - started
    state = json.loads(docker("inspect", "-f", "{{json .State}}", container_name).stdout)
    assert state["ExitCode"] == 0, logs(container_name)
    assert took < 10, f"docker stop took {took:.1f} s"
    assert PASSPHRASE not in logs(container_name)


def test_state_dir_the_user_cannot_write_is_a_clear_error(
    vault: Vault, container_name: str
) -> None:
    os.chown(vault.state, 0, 0)  # a bind mount left owned by root: the common mistake
    result = docker(
        "run", "--rm", "--network", "host", *vault.mounts(),
        "-e", f"CHUNKVAULT_PASSPHRASE={PASSPHRASE}", IMAGE, "init", check=False,
    )  # fmt: skip
    assert result.returncode != 0
    message = result.stdout + result.stderr
    assert "/var/lib/chunkvault" in message and "Traceback" not in message, message


def test_compose_configs_are_valid_in_the_image(tmp_path: Path) -> None:
    """The configs compose mounts parse inside the image, with the secrets compose mounts."""
    compose = Path(__file__).resolve().parents[2] / "compose"
    secrets = []
    for name in ("chunkvault_api_token", "minio_root_user", "minio_root_password"):
        (tmp_path / name).write_text(f"{name}-value\n")
        (tmp_path / name).chmod(0o444)
        secrets += ["-v", f"{tmp_path / name}:/run/secrets/{name}:ro"]
    for config in ("chunkvault.yaml", "chunkvault.peer-d.yaml"):
        result = docker(
            "run", "--rm", "--network", "none", *secrets,
            "-v", f"{compose / config}:/etc/chunkvault/chunkvault.yaml:ro",
            IMAGE, "config", "check", "--json", check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        effective = json.loads(result.stdout)
        assert effective["watch"]["path"] == "/data"
        assert effective["vault"]["state_dir"] == "/var/lib/chunkvault"
        assert "minio_root_password-value" not in result.stdout  # secrets stay masked

"""Run the installed `chunkvault` command as a subprocess, as users and scripts do."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import yaml

CLI = str(Path(sys.executable).parent / "chunkvault")


def run_cli(
    config: Path | None,
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    input: str | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CHUNKVAULT_")} | (
        env or {}
    )
    command = [CLI] + (["--config", str(config)] if config else []) + list(args)
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        input=input,
        cwd=cwd,
    )


def write_config(path: Path, endpoints: list[str], bucket: str, **sections: dict | list) -> Path:
    """A vault config over the given S3 endpoints (moto accepts any credentials)."""
    data = {
        "vault": {"id": "test", "state_dir": str(path.parent / "state")},
        "replication": {"replicas": min(2, len(endpoints)), "min_replicas": 1},
        "transfer": {"timeout_seconds": 2, "retries": 1},
        "peers": [
            {
                "name": f"p{i}",
                "endpoint": endpoint,
                "bucket": bucket,
                "access_key": "testing",
                "secret_key": "testing",
            }
            for i, endpoint in enumerate(endpoints)
        ],
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values} if isinstance(values, dict) else values
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def init_vault(
    tmp_path: Path, endpoints: list[str], bucket: str, env: dict[str, str], **sections: dict | list
) -> tuple[Path, Path]:
    """``tmp_path/inbox`` and an initialised vault watching it: (config, inbox)."""
    inbox = tmp_path / "inbox"
    inbox.mkdir(exist_ok=True)
    watch = {"path": str(inbox), **sections.pop("watch", {})}  # type: ignore[dict-item]
    config = write_config(tmp_path / "cv.yaml", endpoints, bucket, watch=watch, **sections)
    result = run_cli(config, "init", env=env)
    assert result.returncode == 0, result.stderr
    return config, inbox


def kill_when(
    config: Path, args: list[str], env: dict[str, str], reached: threading.Event,
    release: threading.Event,
) -> None:  # fmt: skip
    """Run the CLI with ``args`` and SIGKILL it once ``reached`` is set (by a proxy rule
    that then holds its request until ``release``, set here once the process is gone)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CHUNKVAULT_")} | env
    proc = subprocess.Popen([CLI, "--config", str(config), *args], env=full_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        assert reached.wait(timeout=60), f"{' '.join(args)} never got there"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        release.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()

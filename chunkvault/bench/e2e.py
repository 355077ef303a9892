"""A vault driven through the ``chunkvault`` command, as a user drives it: init, push,
restore (each a measured child process), plus the throwaway vault behind
``chunkvault bench e2e`` and its cleanup."""

from __future__ import annotations

import logging
import secrets
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from chunkvault.bench.data import MiB, random_tree, tree_state, verify_tree
from chunkvault.bench.micro import mb_per_s
from chunkvault.bench.procs import Measured, clean_env, run_measured

log = logging.getLogger(__name__)


def cli_command() -> list[str]:
    """The installed ``chunkvault`` beside this interpreter (what users run)."""
    script = Path(sys.executable).parent / "chunkvault"
    return [str(script)] if script.exists() else [sys.executable, "-m", "chunkvault"]


class VaultUnderTest:
    """One config file and passphrase; every method runs the CLI once and measures it."""

    def __init__(
        self, config: Path, passphrase: str | None = None, write_only: bool = False
    ) -> None:
        """``write_only``: the config names a writer credential; no passphrase is given."""
        self.config = config
        self.env = clean_env(
            {} if write_only else {"CHUNKVAULT_PASSPHRASE": passphrase or secrets.token_hex(16)}
        )

    def run(self, *args: str, timeout: float = 3600) -> Measured:
        return run_measured(
            [*cli_command(), "--config", str(self.config), *args], env=self.env, timeout=timeout
        )

    def init(self) -> Measured:
        return self.run("init").check("chunkvault init")

    def push(self, *paths: str) -> Measured:
        return self.run("push", *paths).check("chunkvault push")

    def restore(self, to: Path, *patterns: str) -> Measured:
        return self.run("restore", *patterns, "--to", str(to)).check("chunkvault restore")


def resolve_file_paths(node: Any, base: Path) -> Any:
    """Make every relative ``*_file`` value absolute against ``base`` (the directory of the
    config it came from), so a copy of the config elsewhere reads the same secrets."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if isinstance(key, str) and key.endswith("_file") and isinstance(value, str):
                path = Path(value).expanduser()
                value = str(path if path.is_absolute() or "${" in value else base / path)
            out[key] = resolve_file_paths(value, base)
        return out
    if isinstance(node, list):
        return [resolve_file_paths(item, base) for item in node]
    return node


def throwaway_config(source: Path, workdir: Path, vault_id: str) -> Path:
    """A copy of the user's config for a new vault ``vault_id`` on the same peers, with
    its own state dir and watched tree under ``workdir`` and no API."""
    raw = yaml.safe_load(source.read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: the config must be a mapping")
    raw = resolve_file_paths(raw, source.resolve().parent)
    raw["vault"] = {**(raw.get("vault") or {}), "id": vault_id, "state_dir": str(workdir / "state")}
    raw["watch"] = {**(raw.get("watch") or {}), "path": str(workdir / "data")}
    raw["api"] = {"enabled": False}
    raw.pop("flows", None)  # the user's rules may ignore or exec on the generated names
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "bench.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def purge_vault(config: Path) -> int:
    """Delete every object of the config's vault on every peer; how many were deleted.
    Only for a vault this module created (its id is ``bench-`` and random)."""
    from chunkvault.backends.base import PeerError
    from chunkvault.backends.stack import build_peers
    from chunkvault.config import load_config

    cfg = load_config(config)
    if not cfg.vault.id.startswith("bench-"):
        raise ValueError(f"refusing to purge vault {cfg.vault.id!r}: not a benchmark vault")
    deleted = 0
    for peer in build_peers(cfg):
        try:
            for info in list(peer.list(cfg.vault.id + "/")):
                peer.delete(info.key)
                deleted += 1
        except PeerError as exc:
            # The run's own result stands; say what is left so it can be removed by hand.
            log.warning(
                "benchmark objects left on peer %s under %s/: %s",
                peer.name, cfg.vault.id, exc.message,
            )  # fmt: skip
        finally:
            peer.close()
    return deleted


@contextmanager
def bench_vault(source: Path, workdir: Path) -> Iterator[VaultUnderTest]:
    """A fresh ``bench-<random>`` vault on the configured peers, purged afterwards."""
    vault_id = f"bench-{secrets.token_hex(6)}"
    config = throwaway_config(source, workdir, vault_id)
    vault = VaultUnderTest(config)
    try:
        yield vault
    finally:
        purge_vault(config)


def run_e2e(source: Path, workdir: Path, size: int, file_size: int) -> dict[str, Any]:
    """Generate ``size`` bytes of random files, push them to a throwaway vault, push again
    (nothing changed: the fixed cost), restore to an empty directory and verify every byte,
    mode and mtime. MB/s and the peak RSS of each command."""
    count = max(1, size // file_size)
    data = random_tree(workdir / "data", count, min(size, file_size))
    expected = tree_state(data.root)
    with bench_vault(source, workdir) as vault:
        vault.init()
        push = vault.push()
        again = vault.push()
        target = workdir / "restored"
        restore = vault.restore(target)
        verify_tree(expected, target, "chunkvault restore")
    shutil.rmtree(workdir / "restored", ignore_errors=True)
    return {
        "files": data.files,
        "bytes": data.bytes,
        "push_seconds": push.seconds,
        "push_mb_per_s": mb_per_s(data.bytes, push.seconds),
        "push_peak_rss": push.peak_rss,
        "nochange_push_seconds": again.seconds,
        "restore_seconds": restore.seconds,
        "restore_mb_per_s": mb_per_s(data.bytes, restore.seconds),
        "restore_peak_rss": restore.peak_rss,
        "verified": True,
    }


__all__ = ["MiB", "VaultUnderTest", "bench_vault", "purge_vault", "run_e2e", "throwaway_config"]

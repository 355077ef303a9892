"""The agent repairs in the background: files stored while a peer refused every write are
on fewer than R peers; once it takes writes again, the agent (no command run) copies what
is missing, rate-limited, until every object is on R peers and `check --read-data` is
clean. Copies a restore found missing or damaged are replaced the same way. Real moto
processes (behind a proxy that refuses writes), `chunkvault run` as a subprocess, real
files and inotify."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest
import yaml
from support.cli import init_vault, run_cli
from support.faults import (
    PW,
    assert_clean,
    restore_matches,
    start_agent,
    stop_agent,
    wait_stored,
    write,
)
from support.hostile_proxy import Reply, named
from support.moto_peers import unique_bucket
from support.vault_objects import holders, on_peer

from chunkvault.backends.base import Peer


def under_replicated(config: Path) -> int:
    result = run_cli(config, "status", "--json", env=PW)
    assert result.returncode == 0, result.stderr
    return int(json.loads(result.stdout)["under_replicated"])


@pytest.mark.slow
def test_what_was_stored_while_a_peer_refused_writes_is_healed_by_the_agent(
    tmp_path: Path, moto_peer_factory, hostile_proxy_factory
) -> None:
    proxies = [hostile_proxy_factory(moto_peer_factory().endpoint) for _ in range(2)]
    config, inbox = init_vault(
        tmp_path, [p.endpoint for p in proxies], unique_bucket(), PW,
        replication={"replicas": 2, "min_replicas": 1},
        watch={"settle_seconds": 0.3, "rescan_seconds": 0},
        transfer={"down_seconds": 1},
        repair={"interval_seconds": 0.5, "bytes_per_second": "4MiB"},
        api={"enabled": False},
    )  # fmt: skip

    def refuse(request, forward):
        if request.method in ("PUT", "POST") and request.key.startswith("test/"):
            return Reply(503, body=b"<Error><Code>SlowDown</Code></Error>")
        return None

    proxies[1].add(named("refuse", refuse))
    log = tmp_path / "agent.log"
    agent = start_agent(config, log)
    rng = random.Random(29)
    files = {f"r{i % 3}/f{i:02}.bin": rng.randbytes(rng.randint(2000, 30_000)) for i in range(30)}
    files["big.bin"] = rng.randbytes(700_000)  # a chunk object
    try:
        for rel, data in files.items():
            write(inbox, rel, data)
        wait_stored(config, files, agent, log, 60)
        assert proxies[1].hits("refuse") > 0
        assert all(held == {"p0"} for key, held in holders(config, keyring=False).items())
        assert under_replicated(config) > 0

        proxies[1].clear()  # p1 takes writes again: the agent heals on its own
        deadline = time.monotonic() + 60
        while not all(len(h) == 2 for h in holders(config, keyring=False).values()):
            assert agent.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, holders(config, keyring=False)
            time.sleep(0.5)
        assert under_replicated(config) == 0
        assert "background repair:" in log.read_text()
        assert_clean(config)
    finally:
        stop_agent(agent)
    restore_matches(config, tmp_path / "r", files)


@pytest.mark.slow
def test_copies_a_restore_found_missing_or_damaged_are_replaced_by_the_agent(
    tmp_path: Path, moto_peer_factory, hostile_proxy_factory
) -> None:
    """A restore (a reader: no lock) that finds a damaged chunk object and a missing pack
    copy notes them; the running agent then replaces both copies on its own, and `check
    --read-data` is clean. A restore reads around them meanwhile."""
    proxies = [hostile_proxy_factory(moto_peer_factory().endpoint) for _ in range(3)]
    config, inbox = init_vault(
        tmp_path, [p.endpoint for p in proxies], unique_bucket(), PW,
        replication={"replicas": 2, "min_replicas": 2},
        watch={"settle_seconds": 0.3, "rescan_seconds": 0},
        repair={"interval_seconds": 0.5}, api={"enabled": False},
    )  # fmt: skip
    log = tmp_path / "agent.log"
    agent = start_agent(config, log)
    rng = random.Random(31)
    files = {f"s{i % 2}/f{i:02}.bin": rng.randbytes(rng.randint(2000, 20_000)) for i in range(20)}
    files["big.bin"] = rng.randbytes(700_000)
    try:
        for rel, data in files.items():
            write(inbox, rel, data)
        wait_stored(config, files, agent, log, 60)
        held = holders(config, keyring=False)
        chunk = next(k for k in sorted(held) if "/chunks/" in k)
        pack = next(k for k in sorted(held) if "/packs/" in k and held[k] & held[chunk])
        bad = sorted(held[chunk] & held[pack])[0]
        on_peer(config, bad, lambda p: flip(p, chunk))
        on_peer(config, bad, lambda p: p.delete(pack))
        # A restore of each of those files alone, while the good copies are unavailable:
        # it tries the copy on `bad`, fails, and notes it (then gives up on that file).
        found = json.loads(run_cli(config, "check", "--json", env=PW).stdout)["problems"]
        in_pack = next(p["files"][0]["path"] for p in found if p["subject"].startswith("pack"))
        for i, proxy in enumerate(proxies):
            if f"p{i}" != bad:
                proxy.add(unavailable({chunk, pack}))
        for i, rel in enumerate(["big.bin", in_pack]):
            alone = run_cli(config, "restore", rel, "--to", str(tmp_path / f"r{i}"), env=PW)
            assert alone.returncode != 0 and "no readable replica" in alone.stderr
        for proxy in proxies:
            proxy.clear()
        restore_matches(config, tmp_path / "r", files)  # reads around both
        deadline = time.monotonic() + 60
        while True:
            check = run_cli(config, "check", "--read-data", env=PW, timeout=300)
            if check.returncode == 0:
                break
            assert agent.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, check.stdout
            time.sleep(0.5)
        assert holders(config, keyring=False)[pack] == held[pack]  # back where it was
    finally:
        stop_agent(agent)


def unavailable(keys: set[str]):
    """A proxy rule: GETs of ``keys`` fail (503, a transient error: not a missing copy)."""

    def rule(request, forward):
        if request.method == "GET" and request.key in keys:
            return Reply(503, body=b"<Error><Code>SlowDown</Code></Error>")
        return None

    return rule


def flip(peer: Peer, key: str) -> None:
    meta = dict(peer.stat(key).metadata)
    body = bytearray(peer.get(key))
    body[-1] ^= 0x10
    peer.put(key, bytes(body), meta)


@pytest.mark.slow
def test_a_write_only_host_heals_what_it_stored_without_opening_it(
    tmp_path: Path, moto_peer_factory, hostile_proxy_factory
) -> None:
    # It can open nothing it stored: it checks each copy by the SHA-256 it recorded at the
    # write (chunks, packs) or by its own MAC (batches) before it copies it as it is.
    proxies = [hostile_proxy_factory(moto_peer_factory().endpoint) for _ in range(2)]
    (tmp_path / "owner").mkdir()
    owner, _ = init_vault(
        tmp_path / "owner", [p.endpoint for p in proxies], unique_bucket(), PW,
        replication={"replicas": 2, "min_replicas": 1},
    )  # fmt: skip
    credential = tmp_path / "host" / "writer.cred"
    credential.parent.mkdir()
    issued = run_cli(owner, "key", "writer-credential", "--out", str(credential), env=PW)
    assert issued.returncode == 0, issued.stderr
    inbox = tmp_path / "host" / "inbox"
    inbox.mkdir()
    data = yaml.safe_load(owner.read_text())
    data.update(
        vault={"id": "test", "state_dir": str(tmp_path / "host" / "state")},
        keys={"writer_credential_file": str(credential)},
        watch={"path": str(inbox), "settle_seconds": 0.3, "rescan_seconds": 0},
        transfer={**data.get("transfer", {}), "down_seconds": 1},
        repair={"interval_seconds": 0.5, "bytes_per_second": "4MiB"},
        api={"enabled": False},
    )
    host = tmp_path / "host" / "cv.yaml"
    host.write_text(yaml.safe_dump(data))

    def refuse(request, forward):
        if request.method in ("PUT", "POST") and request.key.startswith("test/"):
            return Reply(503, body=b"<Error><Code>SlowDown</Code></Error>")
        return None

    proxies[1].add(named("refuse", refuse))
    log = tmp_path / "host" / "agent.log"
    agent = start_agent(host, log, env={})
    rng = random.Random(31)
    files = {f"w{i % 3}/f{i:02}.bin": rng.randbytes(rng.randint(2000, 30_000)) for i in range(20)}
    files["big.bin"] = rng.randbytes(700_000)  # a chunk object
    try:
        for rel, body in files.items():
            write(inbox, rel, body)
        wait_stored(host, files, agent, log, 60, env={})
        assert all(held == {"p0"} for held in holders(owner, keyring=False).values())
        proxies[1].clear()
        deadline = time.monotonic() + 60
        while not all(len(h) == 2 for h in holders(owner, keyring=False).values()):
            assert agent.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, holders(owner, keyring=False)
            time.sleep(0.5)
        assert "background repair:" in log.read_text()
    finally:
        stop_agent(agent)
    restore_matches(owner, tmp_path / "owner" / "out", files)
    assert_clean(owner)

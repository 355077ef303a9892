"""Issue 14's acceptance, black-box: a host that stores with a writer credential (no
passphrase anywhere) and can read nothing back, and an owner who restores all of it.

Everything through the real path: the CLI as subprocesses, `chunkvault run` with real
inotify and its API, real HTTP S3 peers (moto)."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from support.cli import CLI, run_cli, write_config
from support.moto_peers import unique_bucket
from support.trees import tree_bytes, write_tree

from chunkvault.catalog import Catalog
from chunkvault.config import load_config
from chunkvault.crypto import vault_seal
from chunkvault.crypto.envelope import EnvelopeError, open_chunk_into, unwrap_dek
from chunkvault.keystore import KeyStore
from chunkvault.writer_credential import load

PW = {"CHUNKVAULT_PASSPHRASE": "owner passphrase, kept off the agent host"}
TOKEN = "writer-api-token"
# A tree with what a real one holds: small files (packed), a large one (several chunk
# objects), a file name that is not UTF-8, with a newline, and one of 255 bytes.
TREE: dict[bytes, bytes] = {
    b"notes/todo.txt": b"buy milk\n" * 40,
    b"notes/empty": b"",
    b"photos/big.bin": os.urandom(3 * 1024 * 1024 + 123),
    b"odd/caf\xe9\nname.txt": b"latin-1 name with a newline",
    b"odd/" + b"n" * 255: b"a name of 255 bytes",
    **{f"many/f{i:03d}.txt".encode(): f"small file {i}\n".encode() * (i + 1) for i in range(40)},
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _call(base: str, method: str, path: str, body: bytes | None = None,
          content_type: str | None = None) -> tuple[int, bytes]:  # fmt: skip
    request = urllib.request.Request(base + path, data=body, method=method)
    request.add_header("Authorization", f"Bearer {TOKEN}")
    if content_type:
        request.add_header("Content-Type", content_type)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _no_passphrase() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CHUNKVAULT_")}


class Hosts:
    """The trusted machine (owner) and the write-only agent host, over the same peers."""

    def __init__(self, tmp_path: Path, endpoints: list[str]) -> None:
        bucket = unique_bucket()
        self.owner = write_config(
            tmp_path / "owner" / "cv.yaml", endpoints, bucket,
            watch={"path": str(tmp_path / "owner" / "inbox")},
            retention={"deleted_days": 0, "grace_hours": 0},
        )  # fmt: skip
        (tmp_path / "owner" / "inbox").mkdir()
        init = run_cli(self.owner, "init", env=PW)
        assert init.returncode == 0, init.stderr
        self.credential = tmp_path / "agent" / "writer.cred"
        self.credential.parent.mkdir()
        issued = run_cli(self.owner, "key", "writer-credential", "--out", str(self.credential),
                         "--label", "agent-host", env=PW)  # fmt: skip
        assert issued.returncode == 0, issued.stderr
        self.inbox = tmp_path / "agent" / "inbox"
        self.inbox.mkdir()
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        # Its own state_dir; the credential named relative to the config file.
        self.agent = write_config(
            tmp_path / "agent" / "cv.yaml", endpoints, bucket,
            vault={"id": "test", "state_dir": str(tmp_path / "agent" / "state")},
            keys={"writer_credential_file": "writer.cred"},
            watch={"path": str(self.inbox), "settle_seconds": 0.3, "rescan_seconds": 0},
            api={"listen": f"127.0.0.1:{self.port}", "token": TOKEN},
        )  # fmt: skip
        self.state = tmp_path / "agent" / "state"
        self.log = tmp_path / "agent" / "run.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([CLI, "--config", str(self.agent), "run"],
                                         env=_no_passphrase(), stdout=log, stderr=log)  # fmt: skip
        deadline = time.monotonic() + 30
        while b"watching" not in self.log.read_bytes():
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            assert self.proc.wait(timeout=30) == 0, self.log.read_text()[-3000:]

    def push(self) -> None:
        pushed = run_cli(self.agent, "push", env=_no_passphrase(), timeout=120)
        assert pushed.returncode == 0, pushed.stdout + pushed.stderr

    def agent_ls(self) -> set[bytes]:
        listed = run_cli(self.agent, "ls", "--json", env=_no_passphrase())
        assert listed.returncode == 0, listed.stderr
        rows = json.loads(listed.stdout)
        return {base64.b64decode(r["path_b64"]) if "path_b64" in r else r["path"].encode()
                for r in rows}  # fmt: skip

    def wait_stored(self, paths: set[bytes], seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while not paths <= self.agent_ls():
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, sorted(paths - self.agent_ls())[:5]
            time.sleep(0.3)


@pytest.fixture
def hosts(tmp_path: Path, moto_peers) -> Hosts:  # type: ignore[no-untyped-def]
    made = Hosts(tmp_path, moto_peers.endpoints)
    try:
        yield made
    finally:
        if made.proc is not None and made.proc.poll() is None:
            made.proc.kill()
            made.proc.wait()


def test_a_write_only_host_stores_a_tree_only_the_owner_can_read(
    hosts: Hosts, tmp_path: Path
) -> None:
    hosts.start()
    write_tree(hosts.inbox, TREE)
    hosts.wait_stored(set(TREE))

    # The API stores (POST /upload) but never reads back (GET /chunks/{id}).
    api_chunk = os.urandom(5000)
    assert _call(hosts.base, "PUT", "/chunks/api1", api_chunk,
                 "application/octet-stream")[0] in (200, 201)  # fmt: skip
    request = json.dumps({"request_id": "w1", "chunks": [{"id": "api1", "size_in_KB": 5}]})
    status, answer = _call(hosts.base, "POST", "/upload", request.encode(), "application/json")
    assert status == 200 and json.loads(answer)["chunks"][0]["send"] == "OK", answer
    status, answer = _call(hosts.base, "GET", "/chunks/api1")
    assert status == 403 and b"write-only" in answer, answer

    # On the agent host: restore, check and the key commands refuse, in one line.
    target = tmp_path / "agent" / "restored"
    for args in (["restore", "--to", str(target)], ["check", "--read-data"], ["key", "list"],
                 ["gc", "--dry-run"], ["repair"]):  # fmt: skip
        refused = run_cli(hosts.agent, *args, env=_no_passphrase())
        assert refused.returncode == 12, (args, refused.stdout, refused.stderr)
        assert "write-only credential" in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert not target.exists()
    status = run_cli(hosts.agent, "status", "--json", env=_no_passphrase())
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["extra"]["files"] == len(TREE) + 1  # and the API chunk
    # A passphrase offered to a write-only host is refused, not used.
    offered = run_cli(hosts.agent, "ls", env=_no_passphrase() | PW)
    assert offered.returncode == 2 and "must not hold the passphrase" in offered.stderr
    hosts.stop()

    # Back on the trusted machine: all of it lists and restores byte-identical, the chunk
    # POST /upload stored as a file (the owner has no other way to find it). The owner's
    # push of its own tree stores that tree, and leaves the writer's files as they are.
    own = {b"owner-notes.txt": b"the owner's own file\n"}
    write_tree(tmp_path / "owner" / "inbox", own)
    pushed = run_cli(hosts.owner, "push", env=PW, timeout=120)
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    assert "deleted" not in pushed.stdout, pushed.stdout
    uploaded = {b".chunkvault-api/req-w1/chunk-api1": api_chunk}
    out = tmp_path / "owner" / "restored"
    restored = run_cli(hosts.owner, "restore", "--to", str(out), env=PW, timeout=180)
    assert restored.returncode == 0, restored.stderr
    assert tree_bytes(out) == TREE | uploaded | own
    check = run_cli(hosts.owner, "check", "--read-data", env=PW, timeout=180)
    assert check.returncode == 0, check.stdout + check.stderr
    # A lost copy of a writer's chunk object and of one of its packs: `repair` opens them
    # with the private key and copies them back.
    from chunkvault.backends.stack import build_peers
    from chunkvault.layout import chunks_prefix, packs_prefix

    cfg = load_config(hosts.owner)
    peers = build_peers(cfg)
    try:
        for prefix in (chunks_prefix(cfg.vault.id), packs_prefix(cfg.vault.id)):
            holder = next(p for p in peers if list(p.list(prefix)))
            holder.delete(next(iter(holder.list(prefix))).key)
    finally:
        for peer in peers:
            peer.close()
    assert run_cli(hosts.owner, "check", env=PW, timeout=180).returncode != 0
    repaired = run_cli(hosts.owner, "repair", env=PW, timeout=180)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    check = run_cli(hosts.owner, "check", "--read-data", env=PW, timeout=180)
    assert check.returncode == 0, check.stdout + check.stderr

    # rotate-master re-wraps the vault's private key: the writer keeps working unchanged,
    # and the owner still opens what it stored before and after.
    rotated = run_cli(hosts.owner, "key", "rotate-master", "--yes", env=PW, timeout=180)
    assert rotated.returncode == 0, rotated.stderr
    later = {b"notes/after-rotation.txt": b"stored after rotate-master\n"}
    write_tree(hosts.inbox, later)
    hosts.push()
    again = tmp_path / "owner" / "again"
    restored = run_cli(hosts.owner, "restore", "--to", str(again), env=PW, timeout=180)
    assert restored.returncode == 0, restored.stderr
    assert tree_bytes(again) == TREE | later | uploaded | own


def test_gc_keeps_what_a_writer_may_deduplicate_against(hosts: Hosts, tmp_path: Path) -> None:
    # The writer stores two files, then deletes one; the owner's gc drops its versions.
    # The writer cannot learn what gc deletes and still lists the deleted file's chunks as
    # stored: a new file with the same content deduplicates against them, so gc keeps
    # them, and that file restores.
    content = os.urandom(2 * 1024 * 1024)
    write_tree(hosts.inbox, {b"keep.txt": b"kept\n", b"gone.bin": content})
    hosts.push()
    (hosts.inbox / "gone.bin").unlink()
    hosts.push()
    # And a chunk object no version names (its commit never came), marked as a writer's
    # by its metadata, as writers write them: gc asks the peer, and keeps it too.
    cfg = load_config(hosts.agent)
    from chunkvault.backends.stack import build_peers
    from chunkvault.layout import chunk_key

    orphan = chunk_key(cfg.vault.id, "ab" * 32)
    peers = build_peers(cfg)
    try:
        peers[0].put(orphan, b"x" * 100, {"cv-v": "1", "cv-gen": "0"})
    finally:
        for peer in peers:
            peer.close()
    gc = run_cli(hosts.owner, "gc", "--json", env=PW, timeout=180)
    assert gc.returncode == 0, gc.stderr
    summary = json.loads(gc.stdout)
    assert summary["versions_dropped"] >= 1 and summary["objects_deleted"] == 0, summary
    assert summary["kept_for_writers"]["objects"] >= 2, summary

    write_tree(hosts.inbox, {b"again.bin": content})
    hosts.push()
    out = tmp_path / "owner" / "restored"
    restored = run_cli(hosts.owner, "restore", "--to", str(out), env=PW, timeout=180)
    assert restored.returncode == 0, restored.stderr
    assert tree_bytes(out) == {b"keep.txt": b"kept\n", b"again.bin": content}


def test_a_revoked_writer_is_refused_from_its_revocation_on(hosts: Hosts, tmp_path: Path) -> None:
    write_tree(hosts.inbox, {b"before.txt": b"stored while trusted\n"})
    hosts.push()
    time.sleep(1.1)  # batch names and revocations are dated to the second
    revoked = run_cli(hosts.owner, "key", "revoke-writer", "agent-host", env=PW)
    assert revoked.returncode == 0, revoked.stderr
    time.sleep(1.1)
    write_tree(hosts.inbox, {b"after.txt": b"stored by a revoked writer\n"})
    hosts.push()  # the writer cannot tell: its credential still seals

    out = tmp_path / "owner" / "restored"
    restored = run_cli(hosts.owner, "restore", "--to", str(out), env=PW, timeout=180)
    assert restored.returncode == 1
    assert "revoked" in restored.stderr and "Traceback" not in restored.stderr
    assert tree_bytes(out) == {b"before.txt": b"stored while trusted\n"}
    listed = run_cli(hosts.owner, "ls", env=PW)
    assert listed.returncode == 1 and "before.txt" in listed.stdout
    assert "after.txt" not in listed.stdout
    # gc deletes what the keyring refuses (it is not blocked by it), and then all is clean.
    gc = run_cli(hosts.owner, "gc", "--json", env=PW, timeout=180)
    assert gc.returncode == 0, gc.stderr
    assert json.loads(gc.stdout)["refused_batches_deleted"] == 1
    listed = run_cli(hosts.owner, "ls", env=PW)
    assert listed.returncode == 0 and "before.txt" in listed.stdout, listed.stderr


def _secrets_of_the_owner(owner: Path, chunk_rows) -> list[bytes]:  # type: ignore[no-untyped-def]
    """What opens the writer's data: the vault's private key, every KEK, every data key."""
    cfg = load_config(owner)
    opened = KeyStore(cfg.vault.state_dir, cfg.vault.id, []).open(PW["CHUNKVAULT_PASSPHRASE"])
    keys = opened.keys
    assert keys.vault_private is not None
    deks = [unwrap_dek(keys, row.id, row.wrapped_dek) for row in chunk_rows]
    return [keys.vault_private, *keys.keks.values(), *deks]


def test_the_credential_and_the_whole_state_dir_decrypt_nothing(
    hosts: Hosts, tmp_path: Path
) -> None:
    hosts.start()
    write_tree(hosts.inbox, TREE)
    hosts.wait_stored(set(TREE))
    hosts.stop()

    catalog = Catalog(hosts.state / "catalog.db")
    try:
        rows = catalog.query("SELECT id FROM chunks")
        chunk_rows = [catalog.chunk(r[0]) for r in rows]
    finally:
        catalog.close()
    assert len(chunk_rows) >= 4  # packed small files and the large file's chunks
    assert all(vault_seal.is_sealed_dek(r.wrapped_dek) for r in chunk_rows)

    # Every byte the agent host keeps: its state dir (catalog, WAL, staging, lock) and the
    # credential. None of what opens a chunk is in it, raw, hex or base64.
    kept = b"".join(p.read_bytes() for p in sorted(hosts.state.rglob("*")) if p.is_file())
    kept += hosts.credential.read_bytes()
    secrets = _secrets_of_the_owner(hosts.owner, chunk_rows)
    for secret in secrets:
        for form in (secret, secret.hex().encode(), base64.b64encode(secret)):
            assert form not in kept

    # And what it does hold opens nothing: every key of the credential, tried as the
    # vault's private key on every sealed data key, and as the data key on every chunk.
    credential = load(hosts.credential)
    held = [credential.id_key, credential.writer_key, credential.public_key]
    cfg = load_config(hosts.agent)
    from chunkvault.backends.stack import build_peers
    from chunkvault.layout import chunk_key
    from chunkvault.writer_credential import writer_keys

    keys = writer_keys(credential, hosts.state)
    peers = build_peers(cfg)
    try:
        objects = [r for r in chunk_rows if r.pack is None]
        assert objects
        for row in chunk_rows:
            for key in held:
                with pytest.raises(EnvelopeError):
                    vault_seal.open_dek(key, credential.vault_uuid, row.id, row.wrapped_dek)
            with pytest.raises(EnvelopeError, match="write-only host"):
                unwrap_dek(keys, row.id, row.wrapped_dek)
        for row in objects:
            body = None
            for placed in peers:
                try:
                    body = placed.get(chunk_key(cfg.vault.id, row.id))
                    break
                except Exception:
                    continue
            assert body is not None
            for key in held:  # as the data key itself
                with pytest.raises(EnvelopeError):
                    open_chunk_into(keys, row.id, memoryview(bytearray(body)), key,
                                    check_id=False)  # fmt: skip
    finally:
        for peer in peers:
            peer.close()

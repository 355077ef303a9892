"""Restore into a target directory someone else may have prepared: planted symlinks must
never redirect a write. The CLI as a subprocess, real HTTP S3 peers (moto)."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
from support.cli import CLI, init_vault, run_cli
from support.moto_peers import unique_bucket

PW = {"CHUNKVAULT_PASSPHRASE": "restore target passphrase"}
VICTIM_MTIME_NS = 1_500_000_000_123_456_789


def pushed_vault(tmp_path: Path, endpoints: list[str], files: dict[str, bytes]) -> Path:
    config, inbox = init_vault(tmp_path, endpoints, unique_bucket(), PW)
    for rel, data in files.items():
        path = inbox / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    os.chmod(inbox / next(iter(files)), 0o640)
    result = run_cli(config, "push", env=PW)
    assert result.returncode == 0, result.stderr
    return config


def make_victim(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, 0o600)
    os.utime(path, ns=(VICTIM_MTIME_NS, VICTIM_MTIME_NS))
    return path


def snapshot(root: Path) -> dict[str, tuple[bytes, int, int]]:
    """Everything under ``root`` (or the one file): content, mode and mtime."""
    paths = [root] if root.is_file() else sorted(p for p in root.rglob("*"))
    out = {}
    for path in paths:
        st = path.lstat()
        content = path.read_bytes() if stat.S_ISREG(st.st_mode) else b""
        out[str(path)] = (content, stat.S_IMODE(st.st_mode), st.st_mtime_ns)
    return out


def assert_restored(path: Path, data: bytes) -> None:
    assert not path.is_symlink(), f"{path} is a symlink"
    assert path.read_bytes() == data


def cli_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CHUNKVAULT_")} | PW


def test_restore_never_writes_through_a_symlinked_directory_in_the_target(tmp_path, moto_peers):
    files = {
        "TopSecret/plan.txt": b"the restored plan\n",
        "TopSecret/deeper/notes.bin": os.urandom(5000),
        "other.txt": b"a file beside it\n",
        "docs/readme.md": b"# readme\n",
    }
    config = pushed_vault(tmp_path, moto_peers.endpoints, files)
    victim = tmp_path / "victim"
    make_victim(victim / "plan.txt", b"the victim's own file\n")
    target = tmp_path / "target"
    target.mkdir()
    (target / "TopSecret").symlink_to(victim)
    before = snapshot(victim)

    result = run_cli(config, "restore", "--to", str(target), env=PW)

    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert f"refusing to restore through symlink {target / 'TopSecret'}" in result.stderr
    assert "TopSecret/plan.txt" in result.stderr and "TopSecret/deeper/notes.bin" in result.stderr
    assert snapshot(victim) == before  # nothing written, made, chmod'ed or touched there
    assert_restored(target / "other.txt", files["other.txt"])
    assert_restored(target / "docs/readme.md", files["docs/readme.md"])
    assert (target / "TopSecret").is_symlink()  # left as the user had it


def test_restore_never_writes_through_planted_temp_file_symlinks(tmp_path, moto_peers):
    """The old temp name was ``.cv-restore-<pid>-<name>``: predictable. Plant it as a symlink
    to a victim for the exact pid of the restore (a shell waits, we plant, it execs)."""
    files = {"report.txt": b"quarterly report " * 100, "sub/data.bin": os.urandom(3000)}
    config = pushed_vault(tmp_path, moto_peers.endpoints, files)
    victim = make_victim(tmp_path / "victim" / "passwd", b"root:x:0:0\n")
    before = snapshot(victim)
    target = tmp_path / "target"
    (target / "sub").mkdir(parents=True)

    proc = subprocess.Popen(
        ["sh", "-c", 'read _ && exec "$0" "$@"', CLI, "--config", str(config), "restore",
         "--to", str(target)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env(),
    )  # fmt: skip
    planted = [
        target / f".cv-restore-{proc.pid}-report.txt",
        target / "sub" / f".cv-restore-{proc.pid}-data.bin",
    ]
    for link in planted:
        link.symlink_to(victim)
    _out, err = proc.communicate(b"go\n", timeout=120)

    assert proc.returncode == 0, err.decode()
    assert snapshot(victim) == before
    assert_restored(target / "report.txt", files["report.txt"])
    assert_restored(target / "sub" / "data.bin", files["sub/data.bin"])
    assert stat.S_IMODE((target / "report.txt").stat().st_mode) == 0o640
    assert all(link.is_symlink() for link in planted)  # planted links are not ours to remove


def test_a_symlink_at_the_final_name_is_replaced_not_written_through(tmp_path, moto_peers):
    files = {"top.txt": b"top content\n", "a/b/c.txt": b"deep content\n"}
    config = pushed_vault(tmp_path, moto_peers.endpoints, files)
    victim = make_victim(tmp_path / "victim.txt", b"do not touch\n")
    before = snapshot(victim)
    real = tmp_path / "real-target"
    (real / "a" / "b").mkdir(parents=True)
    (real / "top.txt").symlink_to(victim)
    (real / "a" / "b" / "c.txt").symlink_to(victim)
    chosen = tmp_path / "chosen"
    chosen.symlink_to(real)  # --to itself may be a symlink: that is the user's choice

    # The default (--overwrite never) keeps an existing symlink: test_restore_overwrite.py.
    result = run_cli(config, "restore", "--to", str(chosen), "--overwrite", "if-changed", env=PW)

    assert result.returncode == 0, result.stderr
    assert snapshot(victim) == before
    assert_restored(real / "top.txt", files["top.txt"])
    assert_restored(real / "a" / "b" / "c.txt", files["a/b/c.txt"])
    assert [p.name for p in real.iterdir() if p.name.startswith(".")] == []  # no temp left


def test_a_component_that_is_a_file_fails_that_file_only(tmp_path, moto_peers):
    files = {"dir/inner.txt": b"inner\n", "z.txt": b"z\n"}
    config = pushed_vault(tmp_path, moto_peers.endpoints, files)
    target = tmp_path / "target"
    target.mkdir()
    (target / "dir").write_bytes(b"a file where a directory belongs\n")

    result = run_cli(config, "restore", "--to", str(target), env=PW)

    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert f"{target / 'dir'} is not a directory" in result.stderr
    assert (target / "dir").read_bytes() == b"a file where a directory belongs\n"
    assert_restored(target / "z.txt", files["z.txt"])


def test_a_target_that_cannot_be_a_directory_is_a_clear_error(tmp_path, moto_peers):
    config = pushed_vault(tmp_path, moto_peers.endpoints, {"f.txt": b"f\n"})
    dangling = tmp_path / "unmounted"
    dangling.symlink_to(tmp_path / "nowhere" / "disk")

    result = run_cli(config, "restore", "--to", str(dangling), env=PW)

    assert result.returncode == 1, result.stderr
    assert f"cannot create the restore target {dangling}" in result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("name", ["n" * 251 + ".txt", "é" * 127 + "x"])
def test_restores_names_of_the_maximum_length(tmp_path, moto_peers, name):
    assert len(os.fsencode(name)) == 255
    files = {f"d/{name}": b"longest name\n", name: os.urandom(70_000)}
    config = pushed_vault(tmp_path, moto_peers.endpoints, files)
    target = tmp_path / "target"

    result = run_cli(config, "restore", "--to", str(target), env=PW)

    assert result.returncode == 0, result.stderr
    for rel, data in files.items():
        assert_restored(target / rel, data)

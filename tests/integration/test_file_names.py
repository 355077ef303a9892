"""File names are bytes: every name Linux allows pushes, lists and restores exactly.

The CLI as subprocesses, real files, real HTTP S3 peers (moto). Names that are not UTF-8
(Latin-1), hold newlines or control characters, or are 255 bytes long must push without an
internal error, show escaped on one line in `ls`, come back losslessly from `ls --json`, and
restore byte-identical into an empty directory from an empty state dir.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from rich.cells import cell_len
from support.cli import CLI, init_vault, run_cli, write_config
from support.moto_peers import unique_bucket
from support.trees import tree_bytes

PW = {"CHUNKVAULT_PASSPHRASE": "file names passphrase"}

# name (bytes, relative to the tree) -> how `ls` shows it
NAMES: dict[bytes, str] = {
    b"caf\xe9.txt": r"caf\xe9.txt",  # Latin-1: not UTF-8
    b"dir-\xff/inner-\xfe.bin": r"dir-\xff/inner-\xfe.bin",  # an undecodable directory too
    b"n" * 251 + b".txt": "n" * 251 + ".txt",  # 255 bytes
    b"long/" + b"\xe9" * 255: "long/" + r"\xe9" * 255,  # 255 bytes, none of them UTF-8
    b"new\nline.txt": r"new\nline.txt",
    b"ends with a newline\n": r"ends with a newline\n",
    b"tab\tand\x01ctl\x1b[7m.txt": r"tab\tand\x01ctl\x1b[7m.txt",
    b"back\\x41slash.txt": r"back\\x41slash.txt",  # a backslash is escaped, so never ambiguous
    "é-utf8 ok.txt".encode(): "é-utf8 ok.txt",  # valid UTF-8 shows as it is
    "zero\u200bwidth.txt".encode(): r"zero\xe2\x80\x8bwidth.txt",  # invisible: its bytes
}


def write_tree(inbox: Path) -> dict[bytes, bytes]:
    """The NAMES files under ``inbox`` (created through bytes paths): name -> content."""
    files = {}
    for i, name in enumerate(NAMES):
        path = os.fsencode(inbox) + b"/" + name
        os.makedirs(os.path.dirname(path), exist_ok=True)
        data = f"file {i}\n".encode() * (i * 1000 + 1)
        with open(path, "wb") as f:
            f.write(data)
        files[name] = data
    return files


def fresh_machine_config(tmp_path: Path, config: Path) -> Path:
    """Another config for the same vault and peers with an empty state dir."""
    peers = yaml.safe_load(config.read_text())["peers"]
    endpoints = [p["endpoint"] for p in peers]
    return write_config(tmp_path / "fresh" / "cv.yaml", endpoints, peers[0]["bucket"])


def no_internal_error(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode != 70, result.stderr
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr, result.stderr


def without_dac_override() -> list[str] | None:
    """A command prefix under which a chmod 000 directory really is unreadable, or None.

    Tests run as root, which reads anything: `setpriv` drops CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH from the bounding set, so the CLI still runs as root (it owns the
    state dir and config) but obeys file modes. Not root: no prefix needed."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        return None
    prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
    probe = subprocess.run([*prefix, "true"], capture_output=True)
    return prefix if probe.returncode == 0 else None


def cells(header: str, line: str) -> list[str]:
    """``line`` cut where the header's columns start, counted in terminal cells (a wide
    character takes two)."""
    wide = "".join(ch + " " * (cell_len(ch) - 1) for ch in line)
    starts = [header.index(name) for name in header.split()]
    return [wide[a:b] for a, b in zip(starts, [*starts[1:], None], strict=True)]


def assert_aligned(lines: list[str]) -> None:
    """Every cell of every row starts exactly under its column's header."""
    for line in lines[1:]:
        parts = cells(lines[0], line)
        for i, part in enumerate(parts):
            assert i == 0 or not part.strip() or part[0] != " ", (i, line)
            if any(later.strip() for later in parts[i + 1 :]):
                assert part.endswith("  "), (i, line)


@pytest.fixture
def names_vault(tmp_path: Path, moto_peers):
    return init_vault(tmp_path, moto_peers.endpoints, unique_bucket(), PW)


@pytest.mark.parametrize("unreadable_dir", [False, True], ids=["names", "unreadable-dir"])
def test_odd_names_and_an_unreadable_directory_push_and_restore_byte_identical(
    names_vault, tmp_path, unreadable_dir
):
    """The acceptance of issue 9: push the whole tree, then on a "new machine" (an empty
    state dir) restore everything into an empty directory."""
    config, inbox = names_vault
    files = write_tree(inbox)
    prefix = without_dac_override() if unreadable_dir else []
    if prefix is None:
        pytest.fail("cannot make a directory unreadable: root without setpriv (util-linux)")
    locked = inbox / "locked"
    (locked / "sub").mkdir(parents=True)
    (locked / "sub" / "secret.txt").write_bytes(b"cannot be read\n")
    if unreadable_dir:
        os.chmod(locked, 0)
    else:
        files[b"locked/sub/secret.txt"] = b"cannot be read\n"  # readable after all
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHUNKVAULT_")} | PW
        pushed = subprocess.run(
            [*prefix, CLI, "--config", str(config), "push"],
            capture_output=True, text=True, env=env, timeout=180,
        )  # fmt: skip
    finally:
        os.chmod(locked, 0o755)
    no_internal_error(pushed)
    assert f"{len(files)} stored" in pushed.stdout, pushed.stdout + pushed.stderr

    fresh = fresh_machine_config(tmp_path, config)
    target = tmp_path / "restored"
    restored = run_cli(fresh, "restore", "--to", str(target), env=PW)

    assert restored.returncode == 0, restored.stderr
    assert tree_bytes(target) == files


def test_ls_shows_each_name_escaped_on_one_line_with_a_header_for_every_column(names_vault):
    config, inbox = names_vault
    write_tree(inbox)
    (inbox / "gone.txt").write_bytes(b"deleted later\n")
    assert run_cli(config, "push", env=PW).returncode == 0
    (inbox / "gone.txt").unlink()
    pushed = run_cli(config, "push", env=PW)
    no_internal_error(pushed)

    listed = run_cli(config, "ls", "--deleted", env=PW)

    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert len(lines) == 1 + len(NAMES) + 1, listed.stdout  # a header, one line per file
    header = lines[0].split()
    assert header == ["PATH", "SIZE", "MTIME", "VERSIONS", "DELETED"]
    shown = {line.split("  ")[0] for line in lines[1:]}
    assert shown == set(NAMES.values()) | {"gone.txt"}
    gone = next(line for line in lines if line.startswith("gone.txt"))
    assert gone.split()[-1] == "yes"
    assert_aligned(lines)


def test_ls_json_gives_every_name_losslessly(names_vault):
    config, inbox = names_vault
    files = write_tree(inbox)
    assert run_cli(config, "push", env=PW).returncode == 0

    listed = run_cli(config, "ls", "--json", env=PW)

    assert listed.returncode == 0, listed.stderr
    entries = json.loads(listed.stdout)
    raw = {}
    for entry in entries:
        if "path_b64" in entry:
            name = base64.b64decode(entry["path_b64"])
            assert entry["path"] == NAMES[name]  # the display form, for people
            raw[name] = entry
        else:
            raw[entry["path"].encode()] = entry  # valid UTF-8: path is the name itself
    assert set(raw) == set(files)
    assert "path_b64" not in raw[b"new\nline.txt"]  # UTF-8, so `path` is exact
    assert raw[b"new\nline.txt"]["path"] == "new\nline.txt"
    assert all(raw[name]["size"] == len(data) for name, data in files.items())


def test_ls_versions_rows_line_up_with_the_columns(names_vault):
    config, inbox = names_vault
    (inbox / "a.txt").write_bytes(b"one\n")
    (inbox / "caf\udce9.txt").write_bytes(b"latin\n")
    (inbox / "写真 2024.jpg").write_bytes(b"wide characters take two terminal cells\n")
    assert run_cli(config, "push", env=PW).returncode == 0
    (inbox / "a.txt").write_bytes(b"two, longer\n")
    os.utime(inbox / "a.txt", ns=(1_600_000_000 * 10**9, 1_600_000_000 * 10**9))
    assert run_cli(config, "push", env=PW).returncode == 0

    listed = run_cli(config, "ls", "--versions", env=PW)

    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["PATH", "SIZE", "MTIME", "VERSIONS", "DELETED"]
    history = [line for line in lines[1:] if line.startswith(" ")]
    assert len(history) == 4  # two versions of a.txt, one of each other file
    assert_aligned(lines)
    assert all(cells(lines[0], line)[1].strip() for line in lines)  # every row has a SIZE
    assert "2020-09-13T12:26:40Z" in listed.stdout  # the mtime of a.txt's version two


def test_restore_patterns_and_push_paths_match_undecodable_names(names_vault, tmp_path):
    config, inbox = names_vault
    files = write_tree(inbox)
    pushed = run_cli(config, "push", str(inbox / "dir-\udcff"), env=PW)
    no_internal_error(pushed)
    assert "1 stored" in pushed.stdout, pushed.stdout + pushed.stderr
    assert run_cli(config, "push", env=PW).returncode == 0

    target = tmp_path / "some"
    restored = run_cli(config, "restore", "caf\udce9.txt", "long/**", "--to", str(target), env=PW)

    assert restored.returncode == 0, restored.stderr
    assert tree_bytes(target) == {
        b"caf\xe9.txt": files[b"caf\xe9.txt"],
        b"long/" + b"\xe9" * 255: files[b"long/" + b"\xe9" * 255],
    }


def test_a_failure_in_the_target_directory_does_not_point_at_the_peers(names_vault, tmp_path):
    config, inbox = names_vault
    long_name = "n" * 251 + ".txt"
    (inbox / "d").mkdir()
    (inbox / "d" / long_name).write_bytes(b"a long name\n")
    (inbox / "ok.txt").write_bytes(b"fine\n")
    assert run_cli(config, "push", env=PW).returncode == 0
    target = tmp_path / "target"
    target.mkdir()
    (target / "d").write_bytes(b"a file where the directory belongs\n")

    result = run_cli(config, "restore", "--to", str(target), env=PW)

    assert result.returncode == 1, result.stderr
    no_internal_error(result)
    assert f"failed: d/{long_name}: {target / 'd'} is not a directory" in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "peers list" not in last, last  # nothing is wrong with the peers
    assert "target directory" in last, last
    assert (target / "ok.txt").read_bytes() == b"fine\n"

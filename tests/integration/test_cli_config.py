"""The CLI as users and scripts see it: real subprocesses of the installed `chunkvault`."""

from pathlib import Path

import yaml
from support.cli import run_cli, write_config
from support.moto_peers import unique_bucket

import chunkvault


def run(*args: str, cwd: Path | None = None, env: dict | None = None):
    return run_cli(None, *args, cwd=cwd, env=env)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


GOOD = """
vault: {id: test, state_dir: state}
replication: {replicas: 2}
peers:
  - {name: a, endpoint: "http://127.0.0.1:9", bucket: cvault, access_key: AK,
     secret_key: "${SECRET_FROM_ENV}"}
  - {name: b, path: disk-b, weight: 2, zone: z2}
"""


def test_help_and_version():
    result = run("--help")
    assert result.returncode == 0
    for group in ("config", "peers"):
        assert group in result.stdout
    result = run("--version")
    assert result.returncode == 0
    assert chunkvault.__version__ in result.stdout


def test_config_check_prints_effective_config_with_secrets_masked(tmp_path: Path):
    cfg = write(tmp_path / "cv.yaml", GOOD)
    env = {"SECRET_FROM_ENV": "hunter2-very-secret", "PATH": "/usr/bin:/bin"}
    result = run("--config", str(cfg), "config", "check", env=env)
    assert result.returncode == 0, result.stderr
    data = yaml.safe_load(result.stdout)
    assert data["peers"][0]["secret_key"] == "***"
    assert data["peers"][0]["access_key"] == "***"
    assert data["peers"][1]["path"] == str(tmp_path / "disk-b")
    assert data["vault"]["state_dir"] == str(tmp_path / "state")
    assert "hunter2" not in result.stdout + result.stderr
    assert "valid" in result.stderr


def test_config_found_through_env_and_cwd(tmp_path: Path):
    write(tmp_path / "chunkvault.yaml", GOOD)
    env = {"SECRET_FROM_ENV": "x", "PATH": "/usr/bin:/bin"}
    assert run("config", "check", cwd=tmp_path, env=env).returncode == 0
    other = tmp_path / "elsewhere"
    other.mkdir()
    env["CHUNKVAULT_CONFIG"] = str(tmp_path / "chunkvault.yaml")
    assert run("config", "check", "--json", cwd=other, env=env).returncode == 0


def test_bad_config_names_every_bad_key_without_traceback(tmp_path: Path):
    cfg = write(
        tmp_path / "bad.yaml",
        """
replication: {replicas: 5, min_replicas: 1}
transfer: {segment_size: 1MiB, timeout_secs: 3}
chunking: {min_size: 4MiB, avg_size: 1MiB}
peers:
  - {name: a, endpoint: "http://127.0.0.1:9", bucket: cvault}
  - {name: a, path: /tmp/x}
""",
    )
    result = run("--config", str(cfg), "config", "check")
    assert result.returncode == 2
    err = result.stderr
    assert "Traceback" not in err
    for key in (
        "replication.replicas",
        "transfer.segment_size",
        "transfer.timeout_secs",
        "chunking.avg_size",
        "peers[1].name",
    ):
        assert key in err, err
    assert result.stdout == ""


def test_missing_config_and_bad_yaml_are_one_line_errors(tmp_path: Path):
    result = run("--config", str(tmp_path / "nope.yaml"), "peers", "list")
    assert result.returncode == 2
    assert "not found" in result.stderr and "Traceback" not in result.stderr
    cfg = write(tmp_path / "broken.yaml", "peers: [ {name: a\n")
    result = run("--config", str(cfg), "config", "check")
    assert result.returncode == 2
    assert "invalid YAML" in result.stderr and "Traceback" not in result.stderr


def test_unknown_command_is_a_usage_error():
    result = run("frobnicate")
    assert result.returncode == 2
    assert "No such command" in result.stderr


def test_chunk_sizes_the_chunker_refuses_are_a_config_error_not_a_crash(tmp_path: Path, moto_peers):
    """The review's config validated, then every push died with "internal error:
    ValueError: min_size 7340032 is out of range" (exit 70). Now every command refuses
    it up front (exit 2), naming each bad key."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "file.txt").write_bytes(b"some content\n" * 1000)
    config = write_config(
        tmp_path / "cv.yaml",
        moto_peers.endpoints,
        unique_bucket(),
        watch={"path": str(inbox)},
        chunking={"min_size": "6MiB", "avg_size": "7MiB", "max_size": "8MiB"},
    )
    env = {"CHUNKVAULT_PASSPHRASE": "chunk sizes"}
    for command in (["config", "check"], ["init"], ["push"]):
        result = run_cli(config, *command, env=env)
        assert result.returncode == 2, (command, result.stderr)
        lines = result.stderr.splitlines()
        assert "  chunking.min_size: must be 64 B..1 MiB (FastCDC's limit), got 6 MiB" in lines
        assert "  chunking.avg_size: must be 256 B..4 MiB (FastCDC's limit), got 7 MiB" in lines
        assert "internal error" not in result.stderr and "Traceback" not in result.stderr


def test_an_uncreatable_state_dir_is_a_clear_error_not_a_crash(tmp_path: Path):
    """vault.state_dir validates (it need not exist yet) but cannot be created here: that
    was "internal error: FileNotFoundError" (exit 70); it is the machine's problem."""
    (tmp_path / "a-file").write_text("not a directory\n")
    (tmp_path / "inbox").mkdir()
    cfg = write(
        tmp_path / "cv.yaml",
        """
vault: {id: test, state_dir: a-file/state}
replication: {replicas: 1}
watch: {path: inbox}
peers: [{name: d, path: disk}]
""",
    )
    result = run("--config", str(cfg), "init", env={"CHUNKVAULT_PASSPHRASE": "long enough pw"})
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines() == [
        f"error: Not a directory: {tmp_path / 'a-file' / 'state'} (check the paths in the "
        "config: vault.state_dir, watch.path, directory peers, their permissions and free space)"
    ]


def test_config_check_shows_the_pack_settings_and_refuses_a_pack_over_half_the_budget(
    tmp_path: Path,
):
    env = {"SECRET_FROM_ENV": "x", "PATH": "/usr/bin:/bin"}
    cfg = write(tmp_path / "cv.yaml", GOOD + "transfer: {max_inflight_bytes: 16MiB}\n")
    result = run("--config", str(cfg), "config", "check", env=env)
    assert result.returncode == 0, result.stderr
    chunking = yaml.safe_load(result.stdout)["chunking"]
    assert (chunking["pack_threshold"], chunking["pack_size"]) == (512 * 1024, 8 * 1024**2)
    assert chunking["pack_flush_seconds"] == 2

    bad = GOOD + "chunking: {pack_size: 16MiB, pack_flush_seconds: 0}\n"
    cfg = write(tmp_path / "bad.yaml", bad + "transfer: {max_inflight_bytes: 16MiB}\n")
    result = run("--config", str(cfg), "config", "check", env=env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = [ln for ln in result.stderr.splitlines() if "chunking.pack_size:" in ln]
    assert "transfer.max_inflight_bytes" in line and "at most 8388608" in line
    assert "chunking.pack_flush_seconds:" in result.stderr

import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from chunkvault.backends.stack import build_peers
from chunkvault.chunking import Chunker
from chunkvault.config import ConfigError, load_config, parse_config
from chunkvault.crypto.envelope import open_chunk, seal_chunk
from chunkvault.crypto.material import MasterKeys

MiB = 1024 * 1024
S3 = {"name": "a", "endpoint": "http://127.0.0.1:9000", "bucket": "chunkvault"}


def peers(n: int) -> list[dict]:
    return [{**S3, "name": f"p{i}"} for i in range(n)]


def problems(data: dict, **kw) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, **kw)
    return dict(info.value.problems)


def test_defaults_match_the_design_brief():
    cfg = parse_config({"peers": peers(2)})
    assert cfg.chunking.min_size == 512 * 1024
    assert cfg.chunking.avg_size == 2 * 1024**2
    assert cfg.chunking.max_size == 8 * 1024**2
    assert cfg.transfer.segment_size == 8 * 1024**2
    assert cfg.transfer.timeout_seconds == 10
    assert (cfg.replication.replicas, cfg.replication.min_replicas) == (2, 1)
    assert cfg.api.listen == "127.0.0.1:8080"
    assert cfg.keys.kdf == "argon2id"
    assert "*.swp" in cfg.watch.ignore
    assert cfg.flows[0].match == "**"


def test_size_strings_and_peer_kinds():
    cfg = parse_config(
        {
            "chunking": {"min_size": "256KiB", "avg_size": "1MiB", "max_size": "4MiB"},
            "transfer": {"segment_size": "5MiB"},
            "peers": [S3, {"name": "usb", "path": "/mnt/usb", "weight": 2}],
        }
    )
    assert cfg.chunking.min_size == 256 * 1024
    assert cfg.transfer.segment_size == 5 * 1024**2
    assert [p.kind for p in cfg.peers] == ["s3", "filesystem"]
    assert cfg.peer("usb").weight == 2


def test_every_error_is_reported_at_once_with_its_key_path():
    found = problems(
        {
            "vault": {"id": "Bad Name!", "colour": "red"},
            "chunking": {"min_size": "8MiB", "avg_size": "1MiB"},
            "transfer": {"segment_size": "1MiB"},
            "replication": {"replicas": 3, "min_replicas": 4},
            "peers": [S3, {**S3, "bucket": "x"}],
        }
    )
    assert set(found) == {
        "vault.id",
        "vault.colour",
        "chunking.min_size",  # 8 MiB: over FastCDC's 1 MiB
        "chunking.avg_size",  # and below min_size
        "transfer.segment_size",
        "peers[1].bucket",
        # cross-section checks still run although other sections failed
        "replication.replicas",
        "replication.min_replicas",
        "peers[1].name",
    }
    assert "unknown key" in found["vault.colour"]
    assert "5MiB" in found["transfer.segment_size"]


def test_cross_field_checks_name_their_keys():
    found = problems(
        {
            "replication": {"replicas": 3, "min_replicas": 4},
            "peers": [S3, {**S3, "bucket": "other"}],
        }
    )
    assert set(found) == {"peers[1].name", "replication.replicas", "replication.min_replicas"}
    assert "only 2 peer(s)" in found["replication.replicas"]
    assert "duplicate" in found["peers[1].name"]


def test_inflight_byte_budget_is_a_size_that_fits_the_largest_chunk():
    cfg = parse_config({"peers": peers(2)})
    assert cfg.transfer.max_inflight_bytes == 64 * 1024 * 1024
    cfg = parse_config({"peers": peers(2), "transfer": {"max_inflight_bytes": "32MiB"}})
    assert cfg.transfer.max_inflight_bytes == 32 * 1024 * 1024
    found = problems({"peers": peers(2), "transfer": {"max_inflight_bytes": "4MiB"}})
    assert "chunking.max_size" in found["transfer.max_inflight_bytes"]
    found = problems({"peers": peers(2), "transfer": {"max_inflight_bytes": 1000}})
    assert "between 1MiB and 64GiB" in found["transfer.max_inflight_bytes"]
    small = {"min_size": "64KiB", "avg_size": "256KiB", "max_size": "1MiB"}
    cfg = parse_config(
        {"peers": peers(2), "chunking": small, "transfer": {"max_inflight_bytes": "1MiB"}}
    )
    assert cfg.transfer.max_inflight_bytes == cfg.chunking.max_size


def test_in_fixed_mode_the_budget_is_checked_against_the_fixed_size_not_max_size():
    """Fixed mode ignores max_size, so a leftover large one must not fail the budget
    (hypothesis found this); the fixed size itself still must fit."""
    fixed = {"mode": "fixed", "avg_size": "4MiB", "max_size": "100MiB"}
    cfg = parse_config({"peers": peers(2), "chunking": fixed})
    assert cfg.transfer.max_inflight_bytes == 64 * 1024 * 1024
    found = problems(
        {"peers": peers(2), "chunking": fixed | {"avg_size": "16MiB"},
         "transfer": {"max_inflight_bytes": "8MiB"}}
    )  # fmt: skip
    assert "chunking.avg_size" in found["transfer.max_inflight_bytes"]


def test_pack_settings_default_and_accept_sizes():
    cfg = parse_config({"peers": peers(2)})
    c = cfg.chunking
    assert (c.pack_threshold, c.pack_size, c.pack_flush_seconds) == (512 * 1024, 16 * MiB, 2)
    chunking = {"pack_threshold": "1MiB", "pack_size": "32MiB", "pack_flush_seconds": 0.5}
    c = parse_config({"peers": peers(2), "chunking": chunking}).chunking
    assert (c.pack_threshold, c.pack_size, c.pack_flush_seconds) == (MiB, 32 * MiB, 0.5)
    assert (
        parse_config({"peers": peers(2), "chunking": {"pack_threshold": 0}}).chunking.pack_threshold
        == 0
    )


@pytest.mark.parametrize(
    ("chunking", "transfer", "refused"),
    [
        ({"pack_size": "1MiB"}, {}, None),
        ({"pack_size": MiB - 1}, {}, "between 1MiB and 256MiB"),
        ({"pack_size": "256MiB"}, {"max_inflight_bytes": "512MiB"}, None),
        ({"pack_size": 256 * MiB + 1}, {"max_inflight_bytes": "1GiB"}, "between 1MiB and 256MiB"),
        ({"pack_size": "x"}, {}, "expected a size"),
        ({"pack_threshold": 16 * MiB - 1}, {}, None),
        ({"pack_threshold": "16MiB"}, {}, "not less than chunking.pack_size"),
        ({"pack_threshold": "2MiB", "pack_size": "2MiB"}, {}, "not less than chunking.pack_size"),
        ({"pack_threshold": -1}, {}, "must not be negative"),
        ({"pack_threshold": "1.5B"}, {}, "whole number of bytes"),
        ({"pack_flush_seconds": 0.05}, {}, None),
        ({"pack_flush_seconds": 0.049}, {}, "greater than or equal to 0.05"),
        ({"pack_flush_seconds": 3600}, {}, None),
        ({"pack_flush_seconds": 3600.5}, {}, "less than or equal to 3600"),
        ({"pack_flush_seconds": float("nan")}, {}, "finite number"),
        ({"pack_flush_seconds": "soon"}, {}, "valid number"),
    ],
)
def test_each_pack_bound(chunking, transfer, refused):
    raw = {"peers": peers(2), "chunking": chunking, "transfer": transfer}
    if refused is None:
        parse_config(raw)
        return
    found = problems(raw)  # one problem, named by the key that is wrong
    assert list(found) == [f"chunking.{next(iter(chunking))}"]
    assert refused in next(iter(found.values()))


def test_a_pack_may_take_at_most_half_the_byte_budget():
    """Chunks keep flowing while a pack fills: the error names both keys and what to set."""
    half = parse_config(
        {
            "peers": peers(2),
            "chunking": {"pack_size": "8MiB"},
            "transfer": {"max_inflight_bytes": "16MiB"},
        }
    )
    assert half.chunking.pack_size == 8 * MiB
    found = problems(
        {
            "peers": peers(2),
            "chunking": {"pack_size": "8MiB"},
            "transfer": {"max_inflight_bytes": 16 * MiB - 2},
        }
    )
    assert set(found) == {"chunking.pack_size"}
    assert "transfer.max_inflight_bytes" in found["chunking.pack_size"]
    assert f"at most {8 * MiB - 1}" in found["chunking.pack_size"]
    assert f"at least {16 * MiB}" in found["chunking.pack_size"]
    found = problems({"peers": peers(2), "chunking": {"pack_size": "64MiB"}})  # default budget
    assert "more than half of transfer.max_inflight_bytes" in found["chunking.pack_size"]
    # Packing off: the pack size does not matter.
    off = parse_config({"peers": peers(2), "chunking": {"pack_threshold": 0, "pack_size": "64MiB"}})
    assert off.chunking.pack_size == 64 * MiB


def test_the_default_pack_size_fits_a_small_byte_budget():
    """A budget that validated before packs existed still does: the default pack shrinks to
    half of it, and under 2MiB (no pack fits) packing is off unless asked for."""
    small = {"min_size": "64KiB", "avg_size": "256KiB", "max_size": "1MiB"}
    for budget, size in (
        ("32MiB", 16 * MiB),
        ("8MiB", 4 * MiB),
        ("2MiB", MiB),
        ("64GiB", 16 * MiB),
    ):
        raw = {"peers": peers(2), "chunking": small, "transfer": {"max_inflight_bytes": budget}}
        c = parse_config(raw).chunking
        assert (c.pack_size, c.pack_threshold) == (size, 512 * 1024), budget
    raw = {"peers": peers(2), "chunking": small, "transfer": {"max_inflight_bytes": "1MiB"}}
    assert parse_config(raw).chunking.pack_threshold == 0
    found = problems(raw | {"chunking": small | {"pack_threshold": "100KiB"}})
    assert set(found) == {"transfer.max_inflight_bytes"}
    assert "chunking.pack_threshold: 0" in found["transfer.max_inflight_bytes"]
    assert "at least 2097152" in found["transfer.max_inflight_bytes"]
    # What the user sets is checked, never changed.
    found = problems({"peers": peers(2), "chunking": {"pack_threshold": "5MiB"},
                      "transfer": {"max_inflight_bytes": "8MiB"}})  # fmt: skip
    assert "chunking.pack_size (4194304)" in found["chunking.pack_threshold"]


def test_pack_problems_are_reported_with_every_other_problem():
    found = problems(
        {
            "peers": peers(2),
            "replication": {"replicas": 3},
            "chunking": {"pack_size": "32MiB", "pack_flush_seconds": 0, "min_size": "big"},
            "transfer": {"max_inflight_bytes": "32MiB", "segment_size": "1MiB"},
        }
    )
    assert set(found) == {
        "replication.replicas",
        "chunking.min_size",
        "chunking.pack_flush_seconds",
        "chunking.pack_size",
        "transfer.segment_size",
    }


def test_flow_replicas_cannot_exceed_peers():
    found = problems({"peers": peers(2), "flows": [{"match": "**", "replicas": 3}]})
    assert set(found) == {"flows[0].replicas"}


@pytest.mark.parametrize(
    ("peer", "key"),
    [
        ({"name": "a", "endpoint": "http://x:1", "bucket": "bkt", "path": "/x"}, "peers[0].path"),
        ({"name": "a"}, "peers[0].endpoint"),
        ({"name": "a", "endpoint": "http://x:1"}, "peers[0].bucket"),
        ({"name": "a", "path": "/x", "bucket": "bkt"}, "peers[0].bucket"),
        ({**S3, "access_key": "k"}, "peers[0].secret_key"),
        ({**S3, "endpoint": "ftp://x"}, "peers[0].endpoint"),
        ({**S3, "weight": 0}, "peers[0].weight"),
    ],
)
def test_a_peer_is_s3_xor_directory(peer, key):
    found = problems({"peers": [peer], "replication": {"replicas": 1}})
    assert key in found, found


def test_no_peers_is_an_error():
    assert "peers" in problems({})
    assert "peers" in problems({"peers": []})


def test_env_expansion_and_missing_variables():
    cfg = parse_config(
        {
            "peers": [{**S3, "access_key": "${AK}", "secret_key": "pre-${SK}-$${LIT}"}],
            "replication": {"replicas": 1},
        },
        env={"AK": "access", "SK": "secret"},
    )
    assert cfg.peers[0].access_key.get_secret_value() == "access"
    assert cfg.peers[0].secret_key.get_secret_value() == "pre-secret-${LIT}"
    found = problems(
        {
            "peers": [{**S3, "access_key": "${NOPE}", "secret_key": "s"}],
            "replication": {"replicas": 1},
        },
        env={},
    )
    assert found == {"peers[0].access_key": "environment variable NOPE is not set"}


def test_secret_files_relative_to_the_config(tmp_path: Path):
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "sk").write_text("s3cr3t\n")
    (tmp_path / "token").write_text("tok")
    cfg_file = tmp_path / "chunkvault.yaml"
    cfg_file.write_text(
        "vault: {state_dir: state}\n"
        "replication: {replicas: 1}\n"
        "api: {token_file: token}\n"
        "peers:\n"
        "  - {name: a, endpoint: 'http://127.0.0.1:1', bucket: bkt, access_key: ak,"
        " secret_key_file: secrets/sk}\n"
    )
    cfg = load_config(cfg_file)
    assert cfg.peers[0].secret_key.get_secret_value() == "s3cr3t"
    assert cfg.api.token.get_secret_value() == "tok"
    assert cfg.vault.state_dir == tmp_path / "state"
    redacted = cfg.redacted()
    assert redacted["peers"][0]["secret_key"] == "***"
    assert redacted["api"]["token"] == "***"
    assert "s3cr3t" not in repr(cfg) and "s3cr3t" not in str(redacted)


def test_secret_given_twice_or_unreadable():
    found = problems(
        {
            "peers": [{**S3, "access_key": "a", "secret_key": "b", "secret_key_file": "/x"}],
            "replication": {"replicas": 1},
        }
    )
    assert "not both" in found["peers[0].secret_key_file"]
    found = problems(
        {
            "peers": [{**S3, "access_key": "a", "secret_key_file": "/nonexistent/sk"}],
            "replication": {"replicas": 1},
        }
    )
    assert "cannot read secret file" in found["peers[0].secret_key_file"]


def test_load_config_file_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("peers: [\n")
    with pytest.raises(ConfigError, match="invalid YAML: line"):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just a string\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(scalar)


def test_api_listen_and_chunk_bounds():
    cfg = parse_config({"peers": peers(2), "api": {"listen": "[::1]:9090"}})
    assert (cfg.api.host, cfg.api.port) == ("::1", 9090)
    found = problems({"peers": peers(2), "chunking": {"min_size": 10}, "api": {"listen": "nope"}})
    assert set(found) == {"chunking.min_size", "api.listen"}
    for port in ("0", "65536", "99999"):
        bad = problems({"peers": peers(2), "api": {"listen": f"127.0.0.1:{port}"}})
        assert "between 1 and 65535" in bad["api.listen"], port


# --- item 13: what validates must run; what cannot run is refused with its key ----------

MiB = 1024 * 1024


def test_the_reviews_chunk_sizes_are_refused_naming_each_key():
    found = problems(
        {
            "peers": peers(2),
            "chunking": {"min_size": "6MiB", "avg_size": "7MiB", "max_size": "8MiB"},
        }
    )
    assert found == {
        "chunking.min_size": "must be 64 B..1 MiB (FastCDC's limit), got 6 MiB",
        "chunking.avg_size": "must be 256 B..4 MiB (FastCDC's limit), got 7 MiB",
    }


def test_fixed_mode_validates_only_the_size_it_uses():
    cfg = parse_config(
        {"peers": peers(2), "chunking": {"mode": "fixed", "avg_size": "16MiB", "min_size": "6MiB"}}
    )
    assert cfg.chunking.avg_size == 16 * MiB
    found = problems({"peers": peers(2), "chunking": {"mode": "fixed", "avg_size": "32MiB"}})
    assert found == {"chunking.avg_size": "must be 1 KiB..16 MiB in fixed mode, got 32 MiB"}


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"region": "us east 1"}, "peers[0].region"),
        ({"region": "r" * 64}, "peers[0].region"),
        ({"endpoint": "http://127.0.0.1:99999"}, "peers[0].endpoint"),
        ({"endpoint": "http://127.0.0.1:0"}, "peers[0].endpoint"),
        ({"endpoint": "http://127.0.0.1:port"}, "peers[0].endpoint"),
        ({"endpoint": "http://[::1"}, "peers[0].endpoint"),
        ({"endpoint": "http://[zz]:9000"}, "peers[0].endpoint"),
        ({"endpoint": "http://a..b"}, "peers[0].endpoint"),
    ],
)
def test_peer_values_boto3_refuses_are_config_errors(change, key):
    # Each of these validated before and then crashed building the S3 client.
    found = problems({"peers": [{**S3, **change}], "replication": {"replicas": 1}})
    assert list(found) == [key]


def test_usable_endpoints_and_regions_still_validate():
    for endpoint in ("http://[::1]:9000", "https://s3.example.com/base", "http://minio-a:9000"):
        for region in ("us-east-1", "eu-central-2", "garage", ""):
            peer = {**S3, "endpoint": endpoint, "region": region}
            parse_config({"peers": [peer], "replication": {"replicas": 1}})


def validates(raw: dict, *sections: str) -> bool:
    """Validate ``raw``; when refused, every problem must name a key under ``sections``."""
    try:
        parse_config(raw)
    except ConfigError as exc:
        assert exc.problems
        for path, message in exc.problems:
            assert path.startswith(sections) and message, (path, message)
        event(f"refused {sorted({p for p, _ in exc.problems})}")
        return False
    event("accepted")
    return True


# Values around every limit, across the plausible range, and plain nonsense.
size_values = st.one_of(
    st.integers(1024, 16 * MiB),
    st.integers(0, 1 << 40),
    st.sampled_from([0, 63, 64, 255, 256, 1023, 1024, MiB, MiB + 1, 4 * MiB, 4 * MiB + 1]),
    st.sampled_from([16 * MiB, 16 * MiB + 1, "512KiB", "2MiB", "6MiB", "7MiB", "8MiB", "17MiB"]),
    st.sampled_from(["1.5KiB", "1GB", "-1", "x", -1, 2.5, None, True]),
)
chunking_sections = st.fixed_dictionaries(
    {},
    optional={
        "mode": st.sampled_from(["cdc", "cdc", "fixed", "fixed", "rabin"]),
        "min_size": size_values,
        "avg_size": size_values,
        "max_size": size_values,
        "compression": st.sampled_from(["zstd", "zstd", "none", "lz4"]),
        "zstd_level": st.integers(1, 22) | st.integers(-3, 25),
        "pack_threshold": size_values,
        "pack_size": size_values | st.sampled_from([32 * MiB, 32 * MiB + 1, 256 * MiB]),
        "pack_flush_seconds": st.floats(0, 4000) | st.sampled_from([0.05, 3600, "2"]),
    },
)
# Ordered triples near the accepted region, so many examples validate and run.
ordered_sizes = st.lists(st.integers(32, 20 * MiB), min_size=3, max_size=3).map(
    lambda s: dict(zip(("min_size", "avg_size", "max_size"), sorted(s), strict=True))
)
chunking_sections = st.one_of(
    chunking_sections, st.tuples(chunking_sections, ordered_sizes).map(lambda t: t[0] | t[1])
)


@settings(max_examples=300, deadline=None)
@given(chunking_sections, st.binary(max_size=5000))
def test_chunking_that_validates_chunks_and_seals(chunking, data):
    """Any chunking section either fails validation naming its keys, or builds the real
    chunker (the way ingest does), splits data and seals it at the configured level."""
    raw = {"peers": peers(1), "replication": {"replicas": 1}, "chunking": chunking}
    if not validates(raw, "chunking."):
        return
    c = parse_config(raw).chunking
    chunker = Chunker(c.mode, c.min_size, c.avg_size, c.max_size)
    assert b"".join(chunker.split(io.BytesIO(data))) == data
    keys = MasterKeys(bytes(16), b"\x01" * 32, {1: b"\x02" * 32}, 1)
    sealed = seal_chunk(keys, data, compress=c.compression == "zstd", level=c.zstd_level)
    assert open_chunk(keys, sealed.chunk_id, sealed.body, sealed.wrapped_dek) == data


transfer_sections = st.fixed_dictionaries(
    {},
    optional={
        "concurrency": st.integers(1, 64) | st.integers(-1, 300),
        "peer_concurrency": st.none() | st.integers(-1, 300),
        "timeout_seconds": st.floats(0.1, 60) | st.sampled_from([0, -1, 601, float("nan")]),
        "retries": st.integers(-1, 25),
        "down_after_failures": st.integers(-1, 5),
        "down_seconds": st.floats(-1, 100),
    },
)
peer_values = st.fixed_dictionaries(
    {},
    optional={
        "region": st.sampled_from(["us-east-1", "", "garage", "us east 1", "a" * 64, "-x", "1"])
        | st.text(max_size=8),
        "endpoint": st.sampled_from(
            ["http://127.0.0.1:9", "https://[::1]:9/p", "http://h:0", "http://h:65536"]
        )
        | st.text(max_size=10).map(lambda s: f"http://{s}"),
    },
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(transfer_sections, peer_values)
def test_transfer_and_peer_values_that_validate_build_the_peer_stack(transfer, peer):
    """The same for what reaches boto3 (client config, endpoint, region, pool size) and the
    thread pools. Building an S3 client is slow, hence fewer examples."""
    raw = {"peers": [{**S3, **peer}], "replication": {"replicas": 1}, "transfer": transfer}
    if not validates(raw, "transfer.", "peers[0]."):
        return
    cfg = parse_config(raw)
    for built in build_peers(cfg):  # boto3 client + limit/retry/health wrappers
        built.close()
    ThreadPoolExecutor(max_workers=cfg.transfer.concurrency).shutdown()


ENDPOINTS = [
    "http://127.0.0.1:9000", "https://s3.example.com/base", "http://minio-a:9000",
    "http://MinIO.Example.COM.", "http://a..b", "http://-a.b", "http://a-.b", "http://a_b:1",
    "http://" + "a" * 63 + ".b", "http://" + "a" * 64 + ".b", "http://" + "a." * 127 + "b",
    "http://" + "a." * 127 + "bc", "http://" + "a." * 128, "http://[::1]:9000",
    "http://[fe80::1%25eth0]:9000", "http://[zz]:9000", "http://[::1", "http://x:0",
    "http://x:65535", "http://x:65536", "http://x:port", "http://x\t:1", "http://x\n",
    "http://", "http://:9000", "http://user@host:9000", "http://1.2.3.4.5", "http://ä.example",
]  # fmt: skip
REGIONS = ["us-east-1", "", "garage", "us east 1", "a" * 63, "a" * 64, "-x", "x-", "1", "12a",
           "EU-West-1", "a_b", "a.b"]  # fmt: skip


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_endpoints_are_judged_as_botocore_judges_them(endpoint: str) -> None:
    from botocore.utils import is_valid_endpoint_url, is_valid_ipv6_endpoint_url

    from chunkvault.config import endpoint_usable

    try:
        port = urlsplit(endpoint).port
    except ValueError:
        port = 0
    botocore_says = port != 0 and bool(
        is_valid_endpoint_url(endpoint) or is_valid_ipv6_endpoint_url(endpoint)
    )
    assert endpoint_usable(endpoint) == botocore_says


@pytest.mark.parametrize("region", REGIONS)
def test_regions_are_judged_as_botocore_judges_them(region: str) -> None:
    from botocore.exceptions import InvalidRegionError
    from botocore.utils import validate_region_name

    try:
        validate_region_name(region)
        botocore_says = True
    except InvalidRegionError:
        botocore_says = False
    peer = {**S3, "region": region}
    try:
        parse_config({"vault": {"id": "v"}, "peers": [peer, {**peer, "name": "b"}]})
        ours = True
    except ConfigError:
        ours = False
    assert ours == botocore_says


@pytest.mark.parametrize(
    ("erasure", "key", "message"),
    [
        ({"data": 3, "parity": 3}, "replication.erasure", "needs data + parity = 6 peers"),
        ({"data": 0, "parity": 2}, "replication.erasure.data", "greater than or equal to 1"),
        ({"data": 3, "parity": 0}, "replication.erasure.parity", "greater than or equal to 1"),
        ({"data": 3}, "replication.erasure.parity", "required"),
        ({"data": 3, "parity": 2, "extra": 1}, "replication.erasure.extra", "unknown key"),
        ({"data": "three", "parity": 2}, "replication.erasure.data", "integer"),
    ],
)
def test_erasure_is_validated_with_its_key_path(erasure, key, message):
    found = problems({"peers": peers(5), "replication": {"erasure": erasure}})
    assert key in found, found
    assert message in found[key], found


def test_erasure_gives_the_scheme_and_parity_plus_one_metadata_copies():
    from chunkvault.erasure import Scheme

    cfg = parse_config({"peers": peers(5), "replication": {"erasure": {"data": 3, "parity": 2}}})
    assert cfg.replication.scheme == Scheme(3, 2)
    assert cfg.replication.metadata_copies == 3
    plain = parse_config({"peers": peers(5), "replication": {"replicas": 2}})
    assert plain.replication.scheme is None and plain.replication.metadata_copies == 2


def test_min_replicas_with_erasure_is_bounded_by_the_parity():
    erasure = {"data": 3, "parity": 2}
    ok = parse_config({"peers": peers(5), "replication": {"erasure": erasure, "min_replicas": 3}})
    assert ok.replication.min_replicas == 3
    found = problems({"peers": peers(5),
                      "replication": {"erasure": erasure, "min_replicas": 4}})  # fmt: skip
    assert "erasure.parity >= 3" in found["replication.min_replicas"]

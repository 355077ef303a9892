"""Typed, validated configuration (DESIGN.md §5).

Loading is three steps: YAML -> ``${VAR}`` expansion (strings only, after parsing, so
values never change the YAML structure) -> pydantic validation. Every problem is
collected with its key path (``replication.replicas``, ``peers[1].endpoint``) and raised
together as one :class:`ConfigError`, so a user fixes a config in one round.

Relative paths (``vault.state_dir``, ``watch.path``, filesystem peers, ``*_file``
secrets) are resolved against the directory of the config file.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from chunkvault.chunking import chunker_problems
from chunkvault.erasure import MAX_SHARES, Scheme
from chunkvault.sizes import parse_size

MiB = 1024 * 1024
S3_MIN_PART = 5 * MiB
S3_MAX_PART = 5 * 1024 * MiB
API_MAX_CHUNK = 1024 * MiB  # envelope.MAX_PLAINTEXT: what a reader accepts
PACK_THRESHOLD = 512 * 1024
PACK_SIZE = 16 * MiB
PACK_MIN, PACK_MAX = MiB, 256 * MiB
DEFAULT_IGNORE = ["*.tmp", "*.part", "*.swp", "*~", ".~lock*", ".#*", "*.crdownload"]

_NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
# The checks botocore makes of an endpoint's host name and of a region (botocore.utils:
# is_valid_endpoint_url, validate_region_name), its patterns copied: importing botocore to
# call them cost 0.13 s of every command's start-up, `ls` and a no-change push included.
# IPv6 hosts still go to botocore. tests/unit/test_config.py compares both on examples.
_UNSAFE_URL_CHARS = frozenset("\t\r\n")
_HOST = re.compile(r"^((?!-)[A-Z\d-]{1,63}(?<!-)\.)*((?!-)[A-Z\d-]{1,63}(?<!-))$", re.IGNORECASE)
_REGION = re.compile(r"^(?![0-9]+$)(?!-)[a-zA-Z0-9-]{,63}(?<!-)$")


def endpoint_usable(url: str) -> bool:
    """What boto3 would accept as ``endpoint_url``, with a port (if any) in 1-65535."""
    if _UNSAFE_URL_CHARS.intersection(url):
        return False
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    host = parts.hostname
    if port == 0 or host is None:
        return False
    if ":" in host:  # an IPv6 literal: rare enough to pay for botocore's own check
        from botocore.utils import is_valid_ipv6_endpoint_url

        return is_valid_ipv6_endpoint_url(url)
    if len(host) > 255:
        return False
    return _HOST.match(host[:-1] if host.endswith(".") else host) is not None


_ENV_REF = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ConfigError(Exception):
    """One or more config problems, each as ``(key path, message)``."""

    def __init__(self, problems: list[tuple[str, str]], source: str = "config") -> None:
        self.problems = problems
        self.source = source
        lines = [f"{path}: {msg}" if path else msg for path, msg in problems]
        super().__init__(f"{source}: {len(problems)} problem(s)\n  " + "\n  ".join(lines))


def _field_error(field: str, message: str) -> PydanticCustomError:
    """A validation error that names the field it is about (relative to the model)."""
    return _field_errors([(field, message)])


def _field_errors(problems: list[tuple[str, str]]) -> PydanticCustomError:
    """Several problems found by one validator, each naming its field."""
    message = "; ".join(f"{f}: {m}" for f, m in problems)
    return PydanticCustomError("config", "{message}", {"problems": problems, "message": message})


class _Model(BaseModel):
    # Unknown keys are typos until proven otherwise.
    model_config = ConfigDict(extra="forbid", frozen=True)


def _size_validator(*fields: str) -> Any:
    def parse(cls: type, value: Any) -> int:
        return parse_size(value)

    return field_validator(*fields, mode="before")(classmethod(parse))


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    value = value.expanduser()
    if not value.is_absolute() and base is not None:
        value = Path(base) / value
    return value


def _read_secret(path: Path, info: ValidationInfo) -> SecretStr:
    path = _resolve_path(path, info)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read secret file {path}: {exc.strerror}") from None
    return SecretStr(text.rstrip("\r\n"))


class VaultConfig(_Model):
    id: str = Field("home", pattern=_NAME, description="vault name; prefix of every object key")
    state_dir: Path = Path("/var/lib/chunkvault")

    _paths = field_validator("state_dir")(classmethod(lambda cls, v, info: _resolve_path(v, info)))


class WatchConfig(_Model):
    path: Path = Path("/data")
    ignore: list[str] = Field(default_factory=lambda: list(DEFAULT_IGNORE))
    settle_seconds: float = Field(1.0, ge=0, le=3600)
    rescan_seconds: float = Field(600, ge=0, description="0 disables the periodic rescan")
    mode: Literal["inotify", "poll", "both"] = "inotify"
    poll_seconds: float = Field(5.0, gt=0, le=3600)

    _paths = field_validator("path")(classmethod(lambda cls, v, info: _resolve_path(v, info)))


class ChunkingConfig(_Model):
    mode: Literal["cdc", "fixed"] = "cdc"
    min_size: int = 512 * 1024
    avg_size: int = 2 * MiB
    max_size: int = 8 * MiB
    compression: Literal["zstd", "none"] = "zstd"
    zstd_level: int = Field(3, ge=1, le=22)
    # Chunks under this many plaintext bytes go into packs; 0 stores every chunk as its
    # own object. Both pack defaults shrink to fit a small transfer.max_inflight_bytes
    # (see _pack_defaults).
    pack_threshold: int = PACK_THRESHOLD
    pack_size: int = PACK_SIZE
    # The agent flushes a pack that is not full after this long, so a lone small file is
    # not held back waiting for others.
    pack_flush_seconds: float = Field(2.0, ge=0.05, le=3600, allow_inf_nan=False)

    _sizes = _size_validator("min_size", "avg_size", "max_size", "pack_threshold", "pack_size")

    @field_validator("pack_size")
    @classmethod
    def _pack_size_bounds(cls, value: int) -> int:
        if not PACK_MIN <= value <= PACK_MAX:
            raise ValueError(f"must be between 1MiB and 256MiB, got {value}")
        return value

    @model_validator(mode="after")
    def _threshold_below_pack_size(self) -> ChunkingConfig:
        if self.pack_threshold >= self.pack_size:
            raise _field_error(
                "pack_threshold",
                f"is {self.pack_threshold} bytes, not less than chunking.pack_size "
                f"({self.pack_size}): lower it (0 turns packing off) or raise pack_size",
            )
        return self

    @property
    def largest_chunk(self) -> int:
        """The largest chunk this chunking cuts: fixed mode cuts at avg_size and ignores
        max_size."""
        return self.avg_size if self.mode == "fixed" else self.max_size

    @property
    def one_chunk_up_to(self) -> int:
        """The largest file this chunking always keeps whole (one chunk): FastCDC never
        cuts before min_size; fixed mode cuts every avg_size bytes."""
        return self.avg_size if self.mode == "fixed" else self.min_size

    @model_validator(mode="after")
    def _chunker_accepts(self) -> ChunkingConfig:
        # The chunker's own check, so what validates here always builds a chunker.
        problems = chunker_problems(self.mode, self.min_size, self.avg_size, self.max_size)
        if problems:
            raise _field_errors(problems)
        return self


class TransferConfig(_Model):
    segment_size: int = 8 * MiB
    concurrency: int = Field(8, ge=1, le=256)
    # Per-peer cap on requests in flight; defaults to `concurrency`.
    peer_concurrency: int | None = Field(None, ge=1, le=256)
    timeout_seconds: float = Field(10.0, gt=0, le=600)
    retries: int = Field(3, ge=0, le=20, description="retries after the first attempt")
    down_after_failures: int = Field(3, ge=1)
    down_seconds: float = Field(30.0, ge=0)
    # Plaintext bytes read but not yet durable, across every file in flight: what bounds
    # memory in push, the agent and restore (not a count of chunks).
    max_inflight_bytes: int = 64 * MiB

    _sizes = _size_validator("segment_size", "max_inflight_bytes")

    @field_validator("max_inflight_bytes")
    @classmethod
    def _budget_bounds(cls, value: int) -> int:
        if not MiB <= value <= 64 * 1024 * MiB:
            raise ValueError(f"must be between 1MiB and 64GiB, got {value}")
        return value

    @field_validator("segment_size")
    @classmethod
    def _s3_part_bounds(cls, value: int) -> int:
        if not S3_MIN_PART <= value <= S3_MAX_PART:
            raise ValueError(f"must be between 5MiB and 5GiB (S3 part limits), got {value}")
        return value


class ErasureConfig(_Model):
    """Data objects as Reed-Solomon shares: any ``data`` of ``data + parity`` rebuild one."""

    data: int = Field(ge=1, le=MAX_SHARES - 1)
    parity: int = Field(ge=1, le=MAX_SHARES - 1)

    @model_validator(mode="after")
    def _width(self) -> ErasureConfig:
        if self.data + self.parity > MAX_SHARES:
            raise ValueError(f"data + parity is {self.data + self.parity}, at most {MAX_SHARES}")
        return self


class ReplicationConfig(_Model):
    replicas: int = Field(2, ge=1, le=16)
    min_replicas: int = Field(1, ge=1, le=16)
    # Set: chunk objects and packs are stored as shares (chunkvault.erasure), and the small
    # metadata objects (manifest batches) as parity + 1 copies; ``replicas`` is then only
    # for flows that set their own.
    erasure: ErasureConfig | None = None

    @property
    def scheme(self) -> Scheme | None:
        """The erasure scheme of new data objects; None: whole copies."""
        e = self.erasure
        return None if e is None else Scheme(e.data, e.parity)

    @property
    def metadata_copies(self) -> int:
        """Copies of each manifest batch: as many losses survived as the data's."""
        return self.replicas if self.erasure is None else self.erasure.parity + 1


class RetentionConfig(_Model):
    """What `chunkvault gc` keeps (docs/config.md)."""

    # A deleted file's versions stay restorable (`restore --deleted`) this long.
    deleted_days: float = Field(30.0, ge=0, le=36_500, allow_inf_nan=False)
    # The newest N versions of each file's content are kept; None keeps them all.
    versions: int | None = Field(None, ge=1)
    # A pack is rewritten without its garbage once this fraction of its bytes is garbage:
    # repacking costs reading and writing the live rest, so a little garbage is left.
    repack_threshold: float = Field(0.3, gt=0, le=1, allow_inf_nan=False)
    # An object no version references, and that no version gc dropped referenced, is an
    # upload whose commit may still be coming (from another machine): kept this long.
    grace_hours: float = Field(24.0, ge=0, le=87_600, allow_inf_nan=False)


class RepairConfig(_Model):
    """The agent's background repair (docs/config.md)."""

    # How often the agent looks for what it stored on fewer than R peers; 0: never.
    interval_seconds: float = Field(60.0, ge=0, le=86_400, allow_inf_nan=False)
    # The most it copies per second, so repair never crowds out new files.
    bytes_per_second: int = 8 * MiB

    _sizes = _size_validator("bytes_per_second")

    @field_validator("bytes_per_second")
    @classmethod
    def _rate_bounds(cls, value: int) -> int:
        if not 64 * 1024 <= value <= 64 * 1024 * MiB:
            raise ValueError(f"must be between 64KiB and 64GiB, got {value}")
        return value


class PeerConfig(_Model):
    """One peer: S3 (``endpoint`` + ``bucket``) xor a local directory (``path``)."""

    name: str = Field(pattern=_NAME)
    weight: float = Field(1.0, gt=0, le=1_000_000)
    zone: str | None = None
    # S3
    endpoint: str | None = Field(None, pattern=r"^https?://[^\s/]+(/.*)?$")
    bucket: str | None = None
    region: str = "us-east-1"
    access_key: SecretStr | None = None
    access_key_file: Path | None = None
    secret_key: SecretStr | None = None
    secret_key_file: Path | None = None
    verify_tls: bool = True
    # filesystem
    path: Path | None = None

    _paths = field_validator("path")(classmethod(lambda cls, v, info: _resolve_path(v, info)))

    @field_validator("bucket")
    @classmethod
    def _bucket_name(cls, value: str | None) -> str | None:
        if value is not None and not _BUCKET.match(value):
            raise ValueError(f"{value!r} is not a valid bucket name (3-63 of a-z 0-9 . -)")
        return value

    @field_validator("endpoint")
    @classmethod
    def _endpoint_usable(cls, value: str | None) -> str | None:
        # boto3's own checks, here so a bad URL is a config error, not a crash at first use.
        if value is not None and not endpoint_usable(value):
            raise ValueError(
                f"{value!r} is not a usable URL (http[s]://host[:port 1-65535][/path])"
            )
        return value

    @field_validator("region")
    @classmethod
    def _region_usable(cls, value: str) -> str:
        if not _REGION.match(value):
            raise ValueError(f"{value!r} is not a valid region name (a-z 0-9 -)")
        return value

    @property
    def kind(self) -> str:
        return "s3" if self.endpoint else "filesystem"

    @model_validator(mode="before")
    @classmethod
    def _load_secret_files(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for secret in ("access_key", "secret_key"):
            file_key = f"{secret}_file"
            if data.get(file_key) is None:
                continue
            if data.get(secret) is not None:
                raise _field_error(file_key, f"give {secret} or {file_key}, not both")
            try:
                data[secret] = _read_secret(Path(data[file_key]), info)
            except (ValueError, TypeError) as exc:
                raise _field_error(file_key, str(exc)) from None
        return data

    @model_validator(mode="after")
    def _one_kind(self) -> PeerConfig:
        if self.endpoint and self.path:
            raise _field_error("path", "a peer is S3 (endpoint) or a directory (path), not both")
        if not self.endpoint and not self.path:
            raise _field_error("endpoint", "set endpoint (S3 peer) or path (directory peer)")
        if self.endpoint and not self.bucket:
            raise _field_error("bucket", "an S3 peer needs a bucket")
        if self.path and self.bucket:
            raise _field_error("bucket", "only S3 peers have a bucket")
        if (self.access_key is None) != (self.secret_key is None):
            raise _field_error("secret_key", "give both access_key and secret_key, or neither")
        return self


class KeysConfig(_Model):
    kdf: Literal["argon2id", "scrypt"] = "argon2id"
    # A write-only host (issue 14): stores with this credential, never holds the passphrase.
    writer_credential_file: Path | None = None

    _paths = field_validator("writer_credential_file")(
        classmethod(lambda cls, v, info: None if v is None else _resolve_path(v, info))
    )


class ApiConfig(_Model):
    enabled: bool = True
    listen: str = Field("127.0.0.1:8080", pattern=r"^(\[[0-9a-fA-F:.]+\]|[^\s:]+):\d{1,5}$")
    token: SecretStr | None = None
    token_file: Path | None = None
    max_chunk_bytes: int = 64 * MiB
    # Staged-but-not-uploaded bytes; over it PUT /chunks/{id} is refused (507).
    staging_quota: int = 1024 * MiB
    staging_ttl_seconds: float = Field(3600, ge=1, le=30 * 86400)

    _sizes = _size_validator("max_chunk_bytes", "staging_quota")

    @field_validator("max_chunk_bytes")
    @classmethod
    def _chunk_bound(cls, value: int) -> int:
        # A chunk is read whole to be sealed, and a reader refuses plaintexts over 1 GiB.
        if not 1 <= value <= API_MAX_CHUNK:
            raise ValueError(f"must be between 1 byte and 1GiB, got {value}")
        return value

    @field_validator("listen")
    @classmethod
    def _port_in_range(cls, value: str) -> str:
        port = int(value.rsplit(":", 1)[1])
        if not 1 <= port <= 65535:
            raise ValueError(f"port {port} is not between 1 and 65535")
        return value

    @model_validator(mode="after")
    def _quota_fits_a_chunk(self) -> ApiConfig:
        if self.staging_quota < self.max_chunk_bytes:
            raise _field_error(
                "staging_quota",
                f"is {self.staging_quota} bytes, less than api.max_chunk_bytes "
                f"({self.max_chunk_bytes}): a chunk of the largest size could never be staged",
            )
        return self

    @model_validator(mode="before")
    @classmethod
    def _load_token_file(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, dict) and data.get("token_file") is not None:
            data = dict(data)
            if data.get("token") not in (None, ""):
                raise _field_error("token_file", "give token or token_file, not both")
            try:
                data["token"] = _read_secret(Path(data["token_file"]), info)
            except (ValueError, TypeError) as exc:
                raise _field_error("token_file", str(exc)) from None
        return data

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])


class FlowRule(_Model):
    """First matching rule (glob on the path relative to watch.path) decides a file's flow."""

    match: str = Field(min_length=1)
    ignore: bool = False
    replicas: int | None = Field(None, ge=1, le=16)
    compression: Literal["zstd", "none"] | None = None
    on_delete: Literal["keep", "tombstone", "purge"] = "tombstone"
    exec: list[str] | None = Field(None, min_length=1)


class LogConfig(_Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["plain", "json"] = "plain"


class Config(_Model):
    vault: VaultConfig = Field(default_factory=VaultConfig)
    watch: WatchConfig = Field(default_factory=WatchConfig)
    chunking: ChunkingConfig = Field(default_factory=ChunkingConfig)
    transfer: TransferConfig = Field(default_factory=TransferConfig)
    replication: ReplicationConfig = Field(default_factory=ReplicationConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    repair: RepairConfig = Field(default_factory=RepairConfig)
    peers: list[PeerConfig] = Field(min_length=1)
    keys: KeysConfig = Field(default_factory=KeysConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    flows: list[FlowRule] = Field(default_factory=lambda: [FlowRule(match="**")])
    log: LogConfig = Field(default_factory=LogConfig)

    @model_validator(mode="before")
    @classmethod
    def _fit_pack_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("chunking", {}), dict):
            return data
        fitted = _pack_defaults(data)
        if not fitted:
            return data
        return {**data, "chunking": {**data.get("chunking", {}), **fitted}}

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        # What was set, as in raw data: a check may depend on whether the user set a key.
        problems = _cross_field_problems(self.model_dump(exclude_unset=True))
        if problems:
            raise _field_errors(problems)
        return self

    def peer(self, name: str) -> PeerConfig:
        for peer in self.peers:
            if peer.name == name:
                return peer
        raise KeyError(name)

    def redacted(self) -> dict[str, Any]:
        """The effective config as plain data with every secret masked."""
        data = self.model_dump(mode="json", exclude_none=True)
        for peer in data["peers"]:
            for key in ("access_key", "secret_key"):
                if key in peer:
                    peer[key] = "***"
        if "token" in data["api"]:
            data["api"]["token"] = "***"
        return data


def _budget(data: Mapping[str, Any]) -> int | None:
    """transfer.max_inflight_bytes of raw data, if it is a valid one (else its own check
    speaks)."""
    transfer = data.get("transfer")
    value = transfer.get("max_inflight_bytes") if isinstance(transfer, Mapping) else None
    if value is None:
        return int(TransferConfig.model_fields["max_inflight_bytes"].default)
    try:
        budget = parse_size(value)
    except (ValueError, TypeError):
        return None
    return budget if MiB <= budget <= 64 * 1024 * MiB else None


def _pack_defaults(data: Mapping[str, Any]) -> dict[str, int]:
    """The pack sizes of raw data that were left out, where the defaults would not fit the
    byte budget: a pack fills while it waits in memory, and at most half the budget may
    wait like this so chunks keep flowing. pack_size defaults to 16MiB or half the budget,
    whichever is smaller; under a 2MiB budget no pack fits and packing is off unless set.
    What the user sets is never changed, only checked (_cross_field_problems)."""
    chunking = data.get("chunking")
    chunking = chunking if isinstance(chunking, Mapping) else {}
    budget = _budget(data)
    if "pack_size" in chunking or budget is None or budget // 2 >= PACK_SIZE:
        return {}
    if budget // 2 >= PACK_MIN:
        return {"pack_size": budget // 2}
    return {} if "pack_threshold" in chunking else {"pack_threshold": 0}


def _cross_field_problems(data: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Checks that span sections. Works on raw data too, so they are reported even when
    other sections fail validation (the user sees every problem in one round)."""

    def as_int(value: Any) -> int | None:
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def section(name: str) -> Mapping[str, Any]:
        value = data.get(name)
        return value if isinstance(value, Mapping) else {}

    problems: list[tuple[str, str]] = []
    peers = data.get("peers") if isinstance(data.get("peers"), list) else []
    seen: dict[str, int] = {}
    for i, peer in enumerate(peers):
        name = peer.get("name") if isinstance(peer, Mapping) else None
        if isinstance(name, str) and name in seen:
            problems.append(
                (f"peers[{i}].name", f"duplicate peer name {name!r} (also peers[{seen[name]}])")
            )
        elif isinstance(name, str):
            seen[name] = i
    n = len(peers)
    rep = section("replication")
    replicas = as_int(rep.get("replicas", ReplicationConfig.model_fields["replicas"].default))
    minimum = as_int(
        rep.get("min_replicas", ReplicationConfig.model_fields["min_replicas"].default)
    )
    if n and replicas is not None and replicas > n:
        problems.append(
            ("replication.replicas", f"is {replicas} but only {n} peer(s) are configured")
        )
    erasure = rep.get("erasure")
    if isinstance(erasure, Mapping):
        k, m = as_int(erasure.get("data")), as_int(erasure.get("parity"))
        if n and k is not None and m is not None and k + m > n:
            problems.append(
                (
                    "replication.erasure",
                    f"needs data + parity = {k + m} peers (one share each) but only {n} "
                    "peer(s) are configured",
                )
            )
    if isinstance(erasure, Mapping):
        m = as_int(erasure.get("parity"))
        if minimum is not None and m is not None and minimum > m + 1:
            problems.append(
                (
                    "replication.min_replicas",
                    f"is {minimum}: a write that must survive {minimum - 1} lost peers needs "
                    f"erasure.parity >= {minimum - 1} (it is {m})",
                )
            )
    elif replicas is not None and minimum is not None and minimum > replicas:
        problems.append(
            (
                "replication.min_replicas",
                f"is {minimum}, more than replication.replicas ({replicas})",
            )
        )
    budget = as_int(section("transfer").get("max_inflight_bytes"))
    # The largest chunk: max_size in cdc mode; fixed mode cuts every chunk at avg_size and
    # ignores max_size (which may then hold anything, hypothesis found).
    size_key = "avg_size" if section("chunking").get("mode") == "fixed" else "max_size"
    largest = section("chunking").get(size_key, ChunkingConfig.model_fields[size_key].default)
    with contextlib.suppress(ValueError, TypeError):
        largest = parse_size(largest)
        if budget is not None and MiB <= budget < largest:  # else its own check speaks
            problems.append(
                (
                    "transfer.max_inflight_bytes",
                    f"is {budget} bytes, less than chunking.{size_key} ({largest}): "
                    "a chunk of the largest size would never fit",
                )
            )
    problems.extend(_pack_problems(data))
    flows = data.get("flows") if isinstance(data.get("flows"), list) else []
    for i, rule in enumerate(flows):
        count = as_int(rule.get("replicas")) if isinstance(rule, Mapping) else None
        if n and count is not None and count > n:
            problems.append(
                (f"flows[{i}].replicas", f"is {count} but only {n} peer(s) are configured")
            )
    return problems


def _pack_problems(data: Mapping[str, Any]) -> list[tuple[str, str]]:
    """A pack set larger than half the byte budget (see _pack_defaults), named by the key
    the user set: pack_size if given, else the budget that is too small for any pack."""
    given = data.get("chunking")
    given = given if isinstance(given, Mapping) else {}
    chunking = {**given, **_pack_defaults(data)}
    budget = _budget(data)
    try:
        threshold = parse_size(chunking.get("pack_threshold", PACK_THRESHOLD))
        size = parse_size(chunking.get("pack_size", PACK_SIZE))
    except (ValueError, TypeError):
        return []  # their own checks speak
    if budget is None or threshold == 0 or not PACK_MIN <= size <= PACK_MAX:
        return []
    if size <= budget // 2:
        return []
    if "pack_size" in given:
        return [
            (
                "chunking.pack_size",
                f"is {size} bytes, more than half of transfer.max_inflight_bytes ({budget}): "
                "a filling pack would hold back the chunks behind it; lower "
                f"chunking.pack_size to at most {budget // 2} or raise "
                f"transfer.max_inflight_bytes to at least {2 * size}",
            )
        ]
    return [
        (
            "transfer.max_inflight_bytes",
            f"is {budget} bytes, too small for packs (chunking.pack_threshold is set): "
            f"raise it to at least {2 * PACK_MIN}, or set chunking.pack_threshold: 0 to "
            "store small chunks unpacked",
        )
    ]


# --- loading -------------------------------------------------------------------------------


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _expand_env(
    node: Any, env: Mapping[str, str], loc: tuple[Any, ...], problems: list[tuple[str, str]]
) -> Any:
    if isinstance(node, dict):
        return {k: _expand_env(v, env, (*loc, k), problems) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand_env(v, env, (*loc, i), problems) for i, v in enumerate(node)]
    if not isinstance(node, str):
        return node

    def substitute(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        if name not in env:
            problems.append((_format_loc(loc), f"environment variable {name} is not set"))
            return ""
        return env[name]

    return _ENV_REF.sub(substitute, node)


def _problems_from(exc: ValidationError) -> list[tuple[str, str]]:
    problems = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        ctx = err.get("ctx") or {}
        msg = err["msg"]
        if err["type"] == "config":
            # Our validators name the field they are about, relative to the model that
            # raised (root checks name a full path).
            where = _format_loc(loc)
            for field, message in ctx["problems"]:
                problems.append((f"{where}.{field}" if where else field, message))
            continue
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see docs/config.md)"
        elif err["type"] == "missing":
            msg = "required"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        elif err["type"] == "string_pattern_mismatch":
            msg = f"invalid value {err.get('input')!r} (must match {ctx.get('pattern')})"
        problems.append((_format_loc(loc), msg))
    return problems


def parse_config(
    data: Any,
    *,
    base_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
    source: str = "config",
) -> Config:
    """Validate already-parsed YAML data; raise :class:`ConfigError` listing every problem."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([("", "the top level must be a mapping of sections")], source)
    problems: list[tuple[str, str]] = []
    data = _expand_env(data, os.environ if env is None else env, (), problems)
    try:
        config = Config.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        env_paths = {p for p, _ in problems}
        for problem in _problems_from(exc) + _cross_field_problems(data):
            if problem[0] not in env_paths and problem not in problems:
                problems.append(problem)
        raise ConfigError(problems, source) from None
    if problems:
        raise ConfigError(problems, source)
    return config


def default_config_path() -> Path:
    """``$CHUNKVAULT_CONFIG``, else ``./chunkvault.yaml``."""
    return Path(os.environ.get("CHUNKVAULT_CONFIG") or "chunkvault.yaml")


def load_config(path: Path | str | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read, expand and validate a YAML config file."""
    path = Path(path) if path is not None else default_config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            [("", f"config file {path} not found (use --config FILE or $CHUNKVAULT_CONFIG)")],
            str(path),
        ) from None
    except OSError as exc:
        raise ConfigError([("", f"cannot read {path}: {exc.strerror}")], str(path)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([("", f"invalid YAML: {where}{problem}")], str(path)) from None
    return parse_config(data, base_dir=path.resolve().parent, env=env, source=str(path))

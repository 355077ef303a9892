"""S3-compatible peer (MinIO, Ceph RGW, Garage, AWS, moto) over boto3.

One client per peer, path-style addressing (works with every S3 clone and with bucket
names containing dots), SigV4, explicit timeouts, no botocore retries (``retry.py`` does
them), and no aws-chunked/CRC trailers (several S3 clones mishandle them; integrity is
ours: AES-GCM tags and stored SHA-256).

Every exception leaves through :func:`~chunkvault.backends.s3errors.classify_error`, the
one place that decides NotFound / PermanentError / MalformedReply / TransientError, and
never puts credentials in a message.

The client is made on first use (a command that never talks to the peer, like ``ls`` or
a no-change ``push``, never imports boto3), with a connection pool sized to the peer's
concurrency, and reused for every request after.

Replies are not trusted: ``get`` checks Content-Length against the caller's cap and then
reads at most cap + 1 bytes (the header may lie or be absent); a reply botocore cannot
parse (a Size of "abc", a date of "yesterday") is MalformedReply; a ranged GET must be
answered by a 206 whose Content-Range and Content-Length are exactly the range asked
(a 200 is a server that ignored Range; a 416 or a clamped range, an object shorter than
ours) before a byte of it is read; listings are fetched page
by page here (no paginator) so that a truncated page without a token, a repeated token, or
an endless run of empty pages is caught, and every key goes through ``checked_listing``.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from typing import Any, TypeVar

from chunkvault.backends.base import (
    DEFAULT_MAX_GET,
    MAX_LISTING,
    Buffer,
    MalformedReply,
    NotFound,
    ObjectInfo,
    Peer,
    PermanentError,
    TransientError,
    validate_buffer,
    validate_key,
    validate_max_size,
    validate_metadata,
    validate_prefix,
    validate_range,
)
from chunkvault.backends.listing import checked_listing, checked_size
from chunkvault.config import PeerConfig, TransferConfig

T = TypeVar("T")
log = logging.getLogger(__name__)

MAX_PARTS = 10_000
INIT_HINT = "run `chunkvault peers init`"
#: Truncated listing pages in a row that hold no key. Real servers may return a few (AWS
#: skipping delete markers); an endless run is a peer that never finishes.
MAX_EMPTY_PAGES = 100
#: ``get_into`` reads a body in pieces of this size: http.client makes a fresh buffer per
#: read, and pieces this small are recycled by malloc, where one read of a whole multi-MiB
#: body faulted in fresh pages (measured: 256 KiB as good as 128 KiB, better than 512 KiB
#: or 1 MiB).
READ_PIECE = 256 * 1024
# What a 206 says it holds: "bytes first-last/total" (total "*" when the server does not know).
_CONTENT_RANGE = re.compile(r"bytes (\d{1,20})-(\d{1,20})/(\d{1,20}|\*)")
# Clients of every peer come from one boto3 session (its loader parses the S3 service
# model once, not once per peer); creating clients from one session is not thread-safe,
# and peers create theirs on first use from any thread, hence the lock.
_session: Any = None
_session_lock = threading.Lock()


def make_client(peer: PeerConfig, transfer: TransferConfig) -> Any:
    """A boto3 S3 client configured for one peer."""
    global _session
    import boto3
    from botocore.config import Config as BotoConfig

    in_flight = transfer.peer_concurrency or transfer.concurrency
    config = BotoConfig(
        region_name=peer.region,
        signature_version="s3v4",
        # No SHA-256 of every body for the signature (UNSIGNED-PAYLOAD): it cost a full
        # pass over each replica's body, and what we store is authenticated by us anyway
        # (AES-GCM tags, the body's SHA-256 in its metadata, checked on every read).
        s3={"addressing_style": "path", "payload_signing_enabled": False},
        connect_timeout=transfer.timeout_seconds,
        read_timeout=transfer.timeout_seconds,
        # Exactly one attempt per call: retrying is RetryPeer's job, done once, in one
        # place. (Note `max_attempts` would count *retries*; `total_max_attempts` counts
        # attempts.)
        retries={"total_max_attempts": 1, "mode": "standard"},
        # boto3 >= 1.36 otherwise sends aws-chunked bodies with CRC trailers.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        # One connection per request LimitPeer lets through, plus slack for the abort of
        # a failed multipart upload and for probes.
        max_pool_connections=in_flight + 2,
    )
    credentials: dict[str, str] = {}
    if peer.access_key is not None and peer.secret_key is not None:
        credentials = {
            "aws_access_key_id": peer.access_key.get_secret_value(),
            "aws_secret_access_key": peer.secret_key.get_secret_value(),
        }  # else boto3's default chain: env, shared files, instance roles
    with _session_lock:
        if _session is None:
            _session = boto3.session.Session()
        return _session.client(
            "s3",
            endpoint_url=peer.endpoint,
            # None keeps boto3's default (and AWS_CA_BUNDLE); False disables verification.
            verify=None if peer.verify_tls else False,
            config=config,
            **credentials,
        )


def _etag(response: Mapping[str, Any]) -> str:
    return str(response.get("ETag", "")).strip('"')


class S3Peer(Peer):
    """A bucket on an S3-compatible endpoint."""

    kind = "s3"
    #: per instance so that tests can lower them
    max_listing = MAX_LISTING
    max_empty_pages = MAX_EMPTY_PAGES

    def __init__(self, peer: PeerConfig, transfer: TransferConfig, *, client: Any = None) -> None:
        if not peer.endpoint or not peer.bucket:
            raise ValueError(f"peer {peer.name}: an S3 peer needs endpoint and bucket")
        self.name = peer.name
        self.endpoint = peer.endpoint
        self.bucket = peer.bucket
        self.segment_size = transfer.segment_size
        self._secrets = tuple(
            s.get_secret_value() for s in (peer.access_key, peer.secret_key) if s is not None
        )
        self._bucket_seen = False
        self._config = (peer, transfer)
        self._client = client
        self._client_lock = threading.Lock()

    @property
    def client(self) -> Any:
        """The peer's one client, made on first use."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = make_client(*self._config)
        return self._client

    @property
    def location(self) -> str:
        return f"{self.endpoint.rstrip('/')}/{self.bucket}"

    def _do(self, action: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except Exception as exc:
            from chunkvault.backends.s3errors import S3_ERRORS, classify_error

            if isinstance(exc, S3_ERRORS):
                raise classify_error(exc, self.name, action, self._secrets) from exc
            raise

    def _check_bucket(self, action: str) -> None:
        """HEAD answers 404 without a body for a missing key AND a missing bucket."""
        if self._bucket_seen:
            return
        try:
            self._do(action, partial(self.client.head_bucket, Bucket=self.bucket))
        except NotFound:
            raise PermanentError(
                self.name, f"{action}: bucket {self.bucket} does not exist; {INIT_HINT}"
            ) from None
        self._bucket_seen = True

    def create_container(self) -> bool:
        action = f"create bucket {self.bucket}"
        try:
            self._do(action, partial(self.client.head_bucket, Bucket=self.bucket))
            self._bucket_seen = True
            return False
        except NotFound:
            pass
        args: dict[str, Any] = {"Bucket": self.bucket}
        region = self.client.meta.region_name
        if region and region != "us-east-1":  # us-east-1 rejects an explicit constraint
            args["CreateBucketConfiguration"] = {"LocationConstraint": region}

        def create() -> bool:
            from botocore.exceptions import ClientError

            from chunkvault.backends.s3errors import error_code

            try:
                self.client.create_bucket(**args)
            except ClientError as exc:
                if error_code(exc) != "BucketAlreadyOwnedByYou":  # lost a race with ourselves
                    raise
                return False
            return True

        created = self._do(action, create)
        self._bucket_seen = True
        return created

    def put(self, key: str, body: Buffer, metadata: Mapping[str, str] | None = None) -> ObjectInfo:
        validate_key(key)
        meta = validate_metadata(metadata)
        if len(body) <= self.segment_size:
            put = partial(
                self.client.put_object, Bucket=self.bucket, Key=key, Body=_sendable(body),
                Metadata=meta,
            )  # fmt: skip
            etag = _etag(self._do(f"put {key}", put))
        else:
            etag = self._put_multipart(key, body, meta)
        return ObjectInfo(key, len(body), etag, meta)

    def _put_multipart(self, key: str, body: Buffer, meta: dict[str, str]) -> str:
        # Parts go up one after another: a put is one request slot in LimitPeer, so the
        # per-peer cap stays true, and parallelism comes from concurrent chunks instead.
        # Bodies are whole chunks (a few segments at most), so little is lost.
        action = f"put {key}"
        size = self.segment_size
        if -(-len(body) // size) > MAX_PARTS:
            raise PermanentError(self.name, f"{action}: more than {MAX_PARTS} parts")
        start = partial(
            self.client.create_multipart_upload, Bucket=self.bucket, Key=key, Metadata=meta
        )
        upload_id = self._do(action, start)["UploadId"]
        common = {"Bucket": self.bucket, "Key": key, "UploadId": upload_id}
        try:
            parts = []
            for number, offset in enumerate(range(0, len(body), size), start=1):
                upload = partial(
                    self.client.upload_part,
                    PartNumber=number,
                    Body=_sendable(memoryview(body)[offset : offset + size]),
                    **common,
                )
                etag = self._do(f"{action} part {number}", upload)["ETag"]
                parts.append({"PartNumber": number, "ETag": etag})
            complete = partial(
                self.client.complete_multipart_upload, MultipartUpload={"Parts": parts}, **common
            )
            return _etag(self._do(action, complete))
        except BaseException:
            # Parts of an unfinished upload are stored (and billed) until aborted.
            from chunkvault.backends.s3errors import S3_ERRORS

            try:
                self.client.abort_multipart_upload(**common)
            except S3_ERRORS as exc:
                log.warning("peer %s: could not abort upload of %s: %s", self.name, key, exc)
            raise

    def get(self, key: str, max_size: int = DEFAULT_MAX_GET) -> bytes:
        validate_key(key)
        validate_max_size(max_size)
        # Never more than max_size + 1 bytes, whatever the header said (or if absent).
        return self._get(key, max_size, lambda stream: stream.read(max_size + 1), len)

    def get_into(self, key: str, buf: memoryview, max_size: int) -> int:
        validate_key(key)
        view = validate_buffer(buf, max_size)[:max_size]
        return self._get(key, max_size, partial(_read_into, view), int)

    def get_range_into(self, key: str, buf: memoryview, offset: int, length: int) -> None:
        validate_key(key)
        view = validate_range(buf, offset, length)
        # At most length + 1 bytes are read, as get_into with max_size = length, once the
        # reply says it is exactly the range asked.
        self._get(key, length, partial(_read_into, view), int, first=offset)

    def _get(
        self,
        key: str,
        max_size: int,
        read: Callable[[Any], T],
        size: Callable[[T], int],
        *,
        first: int | None = None,
    ) -> T:
        """GET ``key``; ``read(stream)`` reads at most ``max_size + 1`` bytes of the body,
        ``size`` says how many it read. Checks both against ``max_size`` and the declared
        Content-Length. With ``first``, GET bytes ``[first, first + max_size)`` only and
        require a 206 for exactly that range."""
        action = f"get {key}"
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if first is not None:
            action = f"get {key} bytes {first}-{first + max_size - 1}"
            args["Range"] = f"bytes={first}-{first + max_size - 1}"
        response = self._do(action, partial(self.client.get_object, **args))
        stream = response["Body"]
        try:
            if first is not None:
                self._check_range(action, response, first, max_size)
            declared = response.get("ContentLength")
            if declared is not None and declared > max_size:
                raise MalformedReply(
                    self.name, f"{action}: {declared} bytes, more than the {max_size} expected"
                )
            body = self._do(action, partial(read, stream))
            got = size(body)
            if got > max_size:
                raise MalformedReply(
                    self.name, f"{action}: body longer than the {max_size} bytes expected"
                )
            if declared is not None and got != declared:
                raise TransientError(self.name, f"{action}: got {got} of {declared} bytes")
            return body
        finally:
            # Closes the connection without reading the rest of an oversized body.
            stream.close()

    def _check_range(self, action: str, response: Any, first: int, length: int) -> None:
        """A ranged GET's answer must be a 206 holding exactly ``length`` bytes from
        ``first``: a 200 is the whole object (Range ignored), and a server clamps a range
        past the end to what it has (the copy is shorter than ours, or not ours)."""
        last = first + length - 1
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status != 206:
            raise MalformedReply(self.name, f"{action}: HTTP {status} to a ranged GET, not 206")
        told = response.get("ContentRange")
        match = _CONTENT_RANGE.fullmatch(told) if isinstance(told, str) else None
        total = int(match[3]) if match is not None and match[3] != "*" else None
        if total is not None and total <= last:
            raise MalformedReply(
                self.name, f"{action}: object of {total} bytes ends before the range"
            )
        if match is None or (int(match[1]), int(match[2])) != (first, last):
            raise MalformedReply(
                self.name, f"{action}: Content-Range {told!r}, not bytes {first}-{last}"
            )
        declared = response.get("ContentLength")
        if declared != length:
            raise MalformedReply(
                self.name, f"{action}: Content-Length {declared} for a range of {length} bytes"
            )

    def stat(self, key: str) -> ObjectInfo:
        validate_key(key)
        action = f"stat {key}"
        try:
            head = self._do(action, partial(self.client.head_object, Bucket=self.bucket, Key=key))
        except NotFound:
            self._check_bucket(action)
            raise
        return ObjectInfo(
            key=key,
            size=checked_size(self.name, action, head.get("ContentLength")),
            etag=_etag(head),
            metadata=dict(head.get("Metadata", {})),
            modified=head["LastModified"].timestamp() if "LastModified" in head else None,
        )

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        validate_prefix(prefix)
        return checked_listing(self.name, prefix, self._pages(prefix), self.max_listing)

    def _pages(self, prefix: str) -> Iterator[ObjectInfo]:
        action = f"list {prefix!r}"
        args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        empty = 0
        while True:
            page = self._do(action, partial(self.client.list_objects_v2, **args))
            contents = page.get("Contents") or ()
            for obj in contents:
                yield self._listed(action, obj)
            if not page.get("IsTruncated"):
                return
            empty = 0 if contents else empty + 1
            if empty > self.max_empty_pages:
                raise MalformedReply(
                    self.name, f"{action}: {empty} empty pages in a row; the listing never ends"
                )
            token = page.get("NextContinuationToken")
            if not isinstance(token, str) or not token or token == args.get("ContinuationToken"):
                raise MalformedReply(
                    self.name, f"{action}: truncated page without a new continuation token"
                )
            args["ContinuationToken"] = token

    def _listed(self, action: str, obj: Any) -> ObjectInfo:
        try:
            modified = obj.get("LastModified")
            return ObjectInfo(
                key=obj["Key"],
                size=obj["Size"],  # checked_listing checks it
                etag=_etag(obj),
                modified=modified.timestamp() if modified is not None else None,
            )
        except (KeyError, TypeError, AttributeError, ValueError, OverflowError) as exc:
            raise MalformedReply(self.name, f"{action}: malformed entry: {exc!r}") from None

    def delete(self, key: str) -> None:
        validate_key(key)
        delete = partial(self.client.delete_object, Bucket=self.bucket, Key=key)
        with contextlib.suppress(NotFound):  # S3 says 204 for a missing key; clones may 404
            self._do(f"delete {key}", delete)

    def replace_metadata(self, key: str, metadata: Mapping[str, str]) -> ObjectInfo:
        # Server-side copy onto itself: the body is not re-sent. CopyObject handles objects
        # up to 5 GiB; chunks and manifests are far smaller. The ETag of a multipart object
        # becomes a single-part one.
        validate_key(key)
        meta = validate_metadata(metadata)
        copy = partial(
            self.client.copy_object,
            Bucket=self.bucket,
            Key=key,
            CopySource={"Bucket": self.bucket, "Key": key},
            MetadataDirective="REPLACE",
            Metadata=meta,
        )
        self._do(f"replace metadata of {key}", copy)
        return self.stat(key)

    def prepare(self) -> None:
        # The first client costs ~0.35 s of CPU (importing boto3, parsing the S3 model).
        _ = self.client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def _read_into(view: memoryview, stream: Any) -> int:
    """Read the body into ``view`` and return its length, having read at most
    ``len(view) + 1`` bytes: one more than fits tells a longer body, and it never lands in
    ``view``."""
    size, done = len(view), 0
    while done < size:
        piece = stream.read(min(READ_PIECE, size - done))
        if not piece:
            return done
        view[done : done + len(piece)] = piece
        done += len(piece)
    return done + len(stream.read(1))


class BufferBody:
    """A read-only file over a buffer, for botocore, which takes bytes, bytearray or a
    file as a body, but no memoryview: the push pipeline sends views of reused buffers
    (chunkvault/buffers.py), and copying each into bytes would cost a fresh chunk-sized
    buffer per put. http.client sends it block by block (no copy of the whole); seek and
    tell let botocore size it and rewind it."""

    def __init__(self, view: memoryview) -> None:
        self._view = view.cast("B") if view.format != "B" else view
        self._pos = 0

    def __len__(self) -> int:
        return len(self._view)

    def read(self, size: int = -1) -> memoryview:
        end = len(self._view)
        if size is not None and size >= 0:
            end = min(self._pos + size, end)
        piece = self._view[self._pos : end]
        self._pos = end
        return piece

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: len(self._view)}[whence]
        self._pos = max(0, min(base + offset, len(self._view)))
        return self._pos

    def tell(self) -> int:
        return self._pos


# Below this a view is copied into bytes instead: cheap at that size (malloc's arenas, no
# fresh pages), and botocore sends any file-like body with `Expect: 100-continue`, a round
# trip per put that pays off only for big bodies (an error comes before the body is sent).
COPY_BELOW = 1024 * 1024


def _sendable(body: Buffer) -> bytes | bytearray | BufferBody:
    if not isinstance(body, memoryview):
        return body
    return bytes(body) if len(body) < COPY_BELOW else BufferBody(body)

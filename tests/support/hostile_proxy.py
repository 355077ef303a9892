"""A hostile S3 peer for tests: a reverse proxy on 127.0.0.1 in front of a real moto_server.

By default every request is forwarded unchanged (moto does not check SigV4 signatures, so
the Host header is kept as the client sent it and nothing needs re-signing). Tamper rules
turn it into a peer that lies::

    proxy = hostile_proxy_factory(moto.endpoint)          # the fixture in tests/conftest.py
    proxy.add(huge_body(r"/chunks/", 1536 * MiB))          # 1.5 GiB bodies, made lazily
    proxy.add(endless_listing("repeat"))                   # IsTruncated forever
    config = write_config(..., [proxy.endpoint, ...])      # clients talk to the proxy

A rule is any callable ``rule(request, forward) -> Reply | None``: it answers the request
itself (calling ``forward()`` first if it wants the real answer to start from), or returns
None to pass it on to the next rule and finally upstream. Rules run in the order added.
The helpers below cover bodies (:func:`replace_body`, :func:`huge_body`), answers to ranged
GETs (:func:`tamper_range`) and listings (:func:`rewrite_listing`, :func:`inject_keys`,
:func:`hide_keys`, :func:`endless_listing`).

Requests are path-style (``/<bucket>/<key>``), as chunkvault sends them. Large bodies are
generated block by block while they are sent, so a test that serves gigabytes uses no
memory; a client that hangs up ends the stream. :meth:`HostileProxy.stop` closes every
open connection, so no thread outlives the test.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import re
import socket
import threading
import time
import urllib.parse
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal, Protocol

HOST = "127.0.0.1"
S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"
BLOCK = 64 * 1024
# Not forwarded either way: they describe one hop, not the message.
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
     "upgrade", "content-length"}
)  # fmt: skip

ET.register_namespace("", S3_NS)


@dataclass(frozen=True)
class Request:
    """One request as the client sent it (path-style S3)."""

    method: str
    target: str  # path and query, as sent
    headers: Message
    body: bytes

    @property
    def path(self) -> str:
        return urllib.parse.unquote(urllib.parse.urlsplit(self.target).path)

    @property
    def query(self) -> dict[str, str]:
        return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.target).query, True))

    @property
    def bucket(self) -> str:
        return self.path.lstrip("/").partition("/")[0]

    @property
    def key(self) -> str:
        """The object key ("" for bucket-level requests such as listings)."""
        return self.path.lstrip("/").partition("/")[2]

    @property
    def is_listing(self) -> bool:
        return self.method == "GET" and not self.key and self.query.get("list-type") == "2"

    @property
    def byte_range(self) -> tuple[int, int] | None:
        """(first, last) of a ``Range: bytes=first-last`` header, else None."""
        match = re.fullmatch(r"bytes=(\d+)-(\d+)", self.headers.get("Range", "").strip())
        return (int(match[1]), int(match[2])) if match else None

    def without_header(self, name: str) -> Request:
        """The same request without header ``name``."""
        headers = Message()
        for key, value in self.headers.items():
            if key.lower() != name.lower():
                headers[key] = value
        return Request(self.method, self.target, headers, self.body)

    def with_query(self, **changes: str | None) -> Request:
        """The same request with query parameters set (or removed, for None)."""
        parts = urllib.parse.urlsplit(self.target)
        query = {k: v for k, v in self.query.items() if k not in changes}
        query.update({k: v for k, v in changes.items() if v is not None})
        target = parts._replace(query=urllib.parse.urlencode(query)).geturl()
        return Request(self.method, target, self.headers, self.body)


@dataclass
class Reply:
    """An answer to send back. ``body`` is bytes or an iterable of blocks (streamed).

    ``content_length`` defaults to the length of a bytes body; give it to stream an
    iterable with a Content-Length header, or to lie. ``chunked=True`` sends the body with
    chunked transfer encoding and no Content-Length at all.
    """

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | Iterable[bytes] = b""
    content_length: int | None = None
    chunked: bool = False

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def without(self, *names: str) -> list[tuple[str, str]]:
        drop = {n.lower() for n in names}
        return [(k, v) for k, v in self.headers if k.lower() not in drop]


class Forward(Protocol):
    """Send a request upstream unchanged and return the real answer: the request being
    handled, or another one (e.g. :meth:`Request.with_query` of it)."""

    def __call__(self, request: Request | None = None) -> Reply: ...


Rule = Callable[[Request, Forward], Reply | None]


class HostileProxy:
    """A reverse proxy for one upstream S3 endpoint. Use :meth:`start` and :meth:`stop`."""

    def __init__(self, upstream: str) -> None:
        parts = urllib.parse.urlsplit(upstream)
        if parts.scheme != "http" or parts.hostname not in (HOST, "localhost"):
            raise ValueError(f"upstream must be http://127.0.0.1:PORT, got {upstream!r}")
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port or 80
        self.rules: list[Rule] = []
        #: (method, target, rule name or "forward") of every request, in order
        self.log: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._connections: set[socket.socket] = set()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> HostileProxy:
        self._server = ThreadingHTTPServer((HOST, 0), _handler_class(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="hostile-proxy", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, end every stream, close every client connection, join threads."""
        self._stopped.set()
        if self._server is not None:
            self._server.shutdown()  # no new connections
        with self._lock:
            connections = list(self._connections)
        for conn in connections:  # wakes handlers blocked reading the next keep-alive request
            with contextlib.suppress(OSError):  # already gone
                conn.shutdown(socket.SHUT_RDWR)
        if self._server is not None:
            self._server.server_close()  # joins the handler threads
        if self._thread is not None:
            self._thread.join(timeout=10)

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the proxy first"
        return int(self._server.server_address[1])

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    # -- rules -------------------------------------------------------------------------------

    def add(self, rule: Rule) -> HostileProxy:
        with self._lock:
            self.rules.append(rule)
        return self

    def clear(self) -> None:
        """Back to forwarding everything unchanged."""
        with self._lock:
            self.rules.clear()

    def hits(self, rule_name: str) -> int:
        """How many requests the rule called ``rule_name`` answered."""
        with self._lock:
            return sum(1 for *_, name in self.log if name == rule_name)

    # -- the work, called by the handler -----------------------------------------------------

    def _forward(self, request: Request) -> Reply:
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=60)
        try:
            conn.putrequest(
                request.method, request.target, skip_host=True, skip_accept_encoding=True
            )
            for name, value in request.headers.items():
                if name.lower() not in _HOP_BY_HOP:
                    conn.putheader(name, value)
            conn.putheader("Content-Length", str(len(request.body)))
            conn.endheaders(request.body)
            response = conn.getresponse()
            body = response.read()  # S3 answers through here are small or test-sized
            headers = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP]
            # A HEAD's Content-Length is the object's size, not the (empty) body's.
            declared = response.getheader("Content-Length")
            length = int(declared) if request.method == "HEAD" and declared else None
            return Reply(response.status, headers, body, content_length=length)
        finally:
            conn.close()

    def _answer(self, request: Request) -> Reply:
        with self._lock:
            rules = list(self.rules)

        def forward(other: Request | None = None) -> Reply:
            return self._forward(other or request)

        for rule in rules:
            reply = rule(request, forward)
            if reply is not None:
                self._record(request, getattr(rule, "name", type(rule).__name__))
                return reply
        self._record(request, "forward")
        return self._forward(request)

    def _record(self, request: Request, name: str) -> None:
        with self._lock:
            self.log.append((request.method, request.target, name))

    def _track(self, conn: socket.socket, alive: bool) -> None:
        with self._lock:
            (self._connections.add if alive else self._connections.discard)(conn)


def _handler_class(proxy: HostileProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as boto3's connection pool expects

        def setup(self) -> None:
            super().setup()
            # Headers and body go out in separate writes: without this, Nagle's algorithm
            # and the client's delayed ACK add ~40 ms to every answer.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            proxy._track(self.connection, True)

        def finish(self) -> None:
            proxy._track(self.connection, False)
            with contextlib.suppress(OSError):  # the client hung up
                super().finish()

        def handle_one_request(self) -> None:
            try:
                super().handle_one_request()
            except (ConnectionError, TimeoutError):
                self.close_connection = True  # the client hung up mid-answer: expected

        def log_message(self, format: str, *args: object) -> None:
            pass  # proxy.log records requests; stderr stays for the test's own output

        def _serve(self) -> None:
            request = Request(self.command, self.path, self.headers, self._read_body())
            reply = proxy._answer(request)
            self.send_response(reply.status)
            for name, value in reply.headers:
                if name.lower() not in _HOP_BY_HOP:
                    self.send_header(name, value)
            no_body = self.command == "HEAD" or reply.status in (204, 304)
            length: int | None = None
            if reply.chunked and not no_body:
                self.send_header("Transfer-Encoding", "chunked")
            else:
                length = reply.content_length
                if length is None:
                    length = len(reply.body) if isinstance(reply.body, bytes) else 0
                self.send_header("Content-Length", str(length))
            self.end_headers()
            if no_body:
                return
            sent = self._send_body(reply)
            if not reply.chunked and sent != length:
                self.close_connection = True  # a lying length leaves the stream unusable

        def _send_body(self, reply: Reply) -> int:
            blocks = [reply.body] if isinstance(reply.body, bytes) else reply.body
            sent = 0
            for block in blocks:
                if proxy.stopped:
                    self.close_connection = True
                    break
                if reply.chunked:
                    self.wfile.write(f"{len(block):x}\r\n".encode() + block + b"\r\n")
                else:
                    self.wfile.write(block)
                sent += len(block)
            if reply.chunked and not proxy.stopped:
                self.wfile.write(b"0\r\n\r\n")
            return sent

        def _read_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                data = bytearray()
                while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                    data += self.rfile.read(size)
                    self.rfile.readline()
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return bytes(data)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _serve

    return Handler


# -- rules ------------------------------------------------------------------------------------


def named(name: str, rule: Rule) -> Rule:
    """Give a rule the name :meth:`HostileProxy.hits` counts it by."""
    rule.name = name  # type: ignore[attr-defined]
    return rule


def delay(seconds: float) -> Rule:
    """Every request waits ``seconds`` before the next rule (or upstream) answers it: a
    slow peer, so a reader that prefers the quickest peer prefers the others."""

    def rule(request: Request, forward: Forward) -> Reply | None:
        time.sleep(seconds)
        return None

    return rule


def lazy_bytes(size: int, fill: bytes = b"\xa5") -> Iterator[bytes]:
    """``size`` bytes, one block at a time (nothing is held in memory)."""
    block = fill * (BLOCK // len(fill))
    left = size
    while left > 0:
        yield block[: min(left, len(block))]
        left -= len(block)


def replace_body(
    key_pattern: str,
    body: bytes | Callable[[], Iterable[bytes]],
    *,
    size: int | None = None,
    content_length: int | None = None,
    chunked: bool = False,
    even_if_missing: bool = True,
    name: str = "replace_body",
) -> Rule:
    """Answer GETs of keys matching ``key_pattern`` (``re.search``) with another body.

    The real answer's headers (ETag, user metadata, Last-Modified) are kept. ``body`` is
    bytes, or a function returning fresh blocks for each request (then give ``size``).
    ``content_length`` overrides the Content-Length header (to lie); ``chunked`` sends
    none. With ``even_if_missing`` the peer claims keys it does not have, too.
    """
    pattern = re.compile(key_pattern)

    def rule(request: Request, forward: Forward) -> Reply | None:
        if request.method != "GET" or not request.key or not pattern.search(request.key):
            return None
        real = forward()
        if real.status != 200 and not even_if_missing:
            return real
        headers = real.without("Content-Length", "Content-MD5") if real.status == 200 else []
        if isinstance(body, bytes):
            blocks: bytes | Iterable[bytes] = body
            length = len(body)
        else:
            if size is None:
                raise ValueError("a streamed body needs its size")
            blocks, length = body(), size
        return Reply(
            200,
            headers,
            blocks,
            content_length=length if content_length is None else content_length,
            chunked=chunked,
        )

    return named(name, rule)


def huge_body(
    key_pattern: str,
    size: int,
    *,
    content_length: int | None = None,
    chunked: bool = False,
    name: str = "huge_body",
) -> Rule:
    """GETs of matching keys get ``size`` bytes, generated while they are sent."""
    return replace_body(
        key_pattern,
        lambda: lazy_bytes(size),
        size=size,
        content_length=content_length,
        chunked=chunked,
        name=name,
    )


def tamper_range(
    key_pattern: str,
    *,
    status: int | None = None,
    extra: int = 0,
    content_length: int | None = None,
    chunked: bool = False,
    content_range: Callable[[int, int, int], str | None] | None = None,
    whole: bool = False,
    name: str = "tamper_range",
) -> Rule:
    """Answer ranged GETs (``Range: bytes=first-last``) of matching keys wrongly.

    The real answer is fetched first (a 206 from moto), then: ``whole`` asks upstream
    without the Range header instead (a server that ignores Range: 200 and the whole
    object); ``extra`` > 0 appends that many bytes (0xee, made while sent), < 0 cuts that
    many from the end; ``content_length`` lies about the length (default: honest);
    ``chunked`` sends none; ``content_range(first, last, total)`` gives the Content-Range
    header (None: no header); ``status`` replaces the status. Other requests pass on.
    """
    pattern = re.compile(key_pattern)

    def rule(request: Request, forward: Forward) -> Reply | None:
        asked = request.byte_range
        if request.method != "GET" or asked is None or not pattern.search(request.key):
            return None
        real = forward(request.without_header("Range") if whole else request)
        if real.status not in (200, 206):
            return real
        assert isinstance(real.body, bytes)
        headers = real.without("Content-Length", "Content-Range")
        told = real.header("Content-Range")
        total = int(told.rpartition("/")[2]) if told else len(real.body)
        header = told
        if content_range is not None:
            header = content_range(*asked, total)
        if header is not None:
            headers.append(("Content-Range", header))
        body = real.body[: len(real.body) + extra] if extra < 0 else real.body
        size = len(body) + max(extra, 0)
        blocks = itertools.chain([body], lazy_bytes(extra, b"\xee")) if extra > 0 else body
        return Reply(
            real.status if status is None else status,
            headers,
            blocks,
            content_length=size if content_length is None else content_length,
            chunked=chunked,
        )

    return named(name, rule)


def _tag(name: str) -> str:
    return f"{{{S3_NS}}}{name}"


def listing_page(
    contents: Sequence[tuple[str, int]], *, prefix: str, truncated: bool, token: str | None
) -> bytes:
    """A ListObjectsV2 answer holding ``contents`` (key, size)."""
    root = ET.Element(_tag("ListBucketResult"))
    ET.SubElement(root, _tag("Name")).text = "bucket"
    ET.SubElement(root, _tag("Prefix")).text = prefix
    ET.SubElement(root, _tag("KeyCount")).text = str(len(contents))
    ET.SubElement(root, _tag("MaxKeys")).text = "1000"
    ET.SubElement(root, _tag("IsTruncated")).text = "true" if truncated else "false"
    if token:
        ET.SubElement(root, _tag("NextContinuationToken")).text = token
    for key, size in contents:
        _add_contents(root, key, size)
    return ET.tostring(root, xml_declaration=True, encoding="utf-8")


def _add_contents(root: ET.Element, key: str, size: int) -> None:
    item = ET.SubElement(root, _tag("Contents"))
    ET.SubElement(item, _tag("Key")).text = key
    ET.SubElement(item, _tag("LastModified")).text = "2024-01-01T00:00:00.000Z"
    ET.SubElement(item, _tag("ETag")).text = '"00000000000000000000000000000000"'
    ET.SubElement(item, _tag("Size")).text = str(size)
    ET.SubElement(item, _tag("StorageClass")).text = "STANDARD"


def _xml_reply(real: Reply, body: bytes) -> Reply:
    return Reply(real.status, real.without("Content-Length"), body)


def rewrite_listing(
    edit: Callable[[Request, ET.Element], None], *, name: str = "rewrite_listing"
) -> Rule:
    """Let ``edit`` change the real ListObjectsV2 answer (an ElementTree root) in place."""

    def rule(request: Request, forward: Forward) -> Reply | None:
        if not request.is_listing:
            return None
        real = forward()
        if real.status != 200:
            return real
        assert isinstance(real.body, bytes)
        root = ET.fromstring(real.body)
        edit(request, root)
        return _xml_reply(real, ET.tostring(root, xml_declaration=True, encoding="utf-8"))

    return named(name, rule)


def inject_keys(keys: Sequence[str], *, size: int = 1000, name: str = "inject_keys") -> Rule:
    """Listings also show ``keys`` (those under the requested prefix), in key order, as a
    real server would list objects with these names."""

    def edit(request: Request, root: ET.Element) -> None:
        prefix = request.query.get("prefix", "")
        for key in keys:
            if key.startswith(prefix):
                _add_contents(root, key, size)
        _sort_contents(root)

    return rewrite_listing(edit, name=name)


def hide_keys(key_pattern: str, *, name: str = "hide_keys") -> Rule:
    """Listings leave out keys matching ``key_pattern`` and GETs/HEADs of them say 404:
    a peer that drops (or withholds) objects."""
    pattern = re.compile(key_pattern)

    def edit(request: Request, root: ET.Element) -> None:
        for item in root.findall(_tag("Contents")):
            if pattern.search(item.findtext(_tag("Key"), "")):
                root.remove(item)

    listing = rewrite_listing(edit, name=name)

    def rule(request: Request, forward: Forward) -> Reply | None:
        if request.key and request.method in ("GET", "HEAD") and pattern.search(request.key):
            return Reply(404, [("Content-Type", "application/xml")], _no_such_key(request.key))
        return listing(request, forward)

    return named(name, rule)


def _no_such_key(key: str) -> bytes:
    root = ET.Element("Error")
    ET.SubElement(root, "Code").text = "NoSuchKey"
    ET.SubElement(root, "Message").text = "The specified key does not exist."
    ET.SubElement(root, "Key").text = key
    return ET.tostring(root, xml_declaration=True, encoding="utf-8")


def _sort_contents(root: ET.Element) -> None:
    items = root.findall(_tag("Contents"))
    for item in items:
        root.remove(item)
    for item in sorted(items, key=lambda i: i.findtext(_tag("Key"), "")):
        root.append(item)
    count = root.find(_tag("KeyCount"))
    if count is not None:
        count.text = str(len(items))


def endless_listing(
    mode: Literal["repeat", "fresh", "empty"] = "repeat",
    *,
    page_size: int = 1000,
    name: str = "endless_listing",
) -> Rule:
    """Every ListObjectsV2 answer says IsTruncated=true with a new continuation token:

    - ``repeat``: the real first page, again and again;
    - ``fresh``: ``page_size`` new keys under the prefix each time, always increasing
      (a listing that never ends but never repeats either);
    - ``empty``: no keys at all.
    """
    counter = itertools.count()
    lock = threading.Lock()

    def rule(request: Request, forward: Forward) -> Reply | None:
        if not request.is_listing:
            return None
        prefix = request.query.get("prefix", "")
        token = uuid.uuid4().hex
        if mode == "repeat":
            real = forward_first_page(request, forward)
            if real.status != 200:
                return real
            assert isinstance(real.body, bytes)
            root = ET.fromstring(real.body)
            for tag in ("IsTruncated", "NextContinuationToken", "ContinuationToken"):
                for old in root.findall(_tag(tag)):
                    root.remove(old)
            ET.SubElement(root, _tag("IsTruncated")).text = "true"
            ET.SubElement(root, _tag("NextContinuationToken")).text = token
            return _xml_reply(real, ET.tostring(root, xml_declaration=True, encoding="utf-8"))
        contents: list[tuple[str, int]] = []
        if mode == "fresh":
            with lock:
                start = next(counter) * page_size
            contents = [(f"{prefix}{n:016d}", 100) for n in range(start, start + page_size)]
        body = listing_page(contents, prefix=prefix, truncated=True, token=token)
        return Reply(200, [("Content-Type", "application/xml")], body)

    def forward_first_page(request: Request, forward: Forward) -> Reply:
        # Our tokens mean nothing to the real server: ask it for the first page again.
        return forward(request.with_query(**{"continuation-token": None}))

    return named(name, rule)

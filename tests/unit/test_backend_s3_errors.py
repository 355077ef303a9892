"""S3 error classification and client settings, without a server.

moto accepts any credentials, so auth failures are tested here on constructed errors.
"""

from __future__ import annotations

import socket

import pytest
import urllib3.exceptions
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    ReadTimeoutError,
    ResponseStreamingError,
    SSLError,
)
from botocore.parsers import ResponseParserError
from pydantic import SecretStr

from chunkvault.backends import (
    MalformedReply,
    NotFound,
    PeerDown,
    PermanentError,
    S3Peer,
    TransientError,
)
from chunkvault.backends.s3errors import classify_error
from chunkvault.config import PeerConfig, TransferConfig

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
ACCESS = "AKIAIOSFODNN7EXAMPLE"


def client_error(code: str, status: int, message: str = "msg") -> ClientError:
    response = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "GetObject")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("NoSuchKey", 404, NotFound),
        ("404", 404, NotFound),
        ("NotFound", 404, NotFound),
        ("NoSuchBucket", 404, PermanentError),
        ("AccessDenied", 403, PermanentError),
        ("InvalidAccessKeyId", 403, PermanentError),
        ("SignatureDoesNotMatch", 403, PermanentError),
        ("InvalidArgument", 400, PermanentError),
        ("EntityTooSmall", 400, PermanentError),
        ("PermanentRedirect", 301, PermanentError),
        ("InternalError", 500, TransientError),
        ("", 502, TransientError),
        ("ServiceUnavailable", 503, TransientError),
        ("SlowDown", 503, TransientError),
        ("RequestTimeout", 400, TransientError),
        ("Throttling", 400, TransientError),
        ("TooManyRequests", 429, TransientError),
        ("XMinioServerNotInitialized", 503, TransientError),
        # Only a ranged GET (get_range_into) asks for a range: past the end of our object.
        ("InvalidRange", 416, MalformedReply),
        ("416", 416, MalformedReply),
    ],
)
def test_client_errors(code: str, status: int, expected: type) -> None:
    err = classify_error(client_error(code, status), "a", "get k")
    assert type(err) is expected
    assert err.peer == "a" and err.message.startswith("get k: ")


def test_hints() -> None:
    assert "peers init" in classify_error(client_error("NoSuchBucket", 404), "a", "put k").message
    auth = classify_error(client_error("InvalidAccessKeyId", 403), "a", "put k").message
    assert "access_key" in auth


@pytest.mark.parametrize(
    "exc",
    [
        EndpointConnectionError(endpoint_url="http://127.0.0.1:9"),
        ConnectTimeoutError(endpoint_url="http://127.0.0.1:9"),
        ReadTimeoutError(endpoint_url="http://127.0.0.1:9"),
        ConnectionClosedError(endpoint_url="http://127.0.0.1:9"),
        ResponseStreamingError(error="connection reset"),
        SSLError(endpoint_url="https://x", error="EOF occurred in violation of protocol"),
        urllib3.exceptions.ProtocolError("Connection aborted."),
        urllib3.exceptions.ReadTimeoutError(None, "/", "read timed out"),  # type: ignore[arg-type]
        ConnectionResetError(104, "Connection reset by peer"),
    ],
)
def test_network_errors_are_transient(exc: BaseException) -> None:
    err = classify_error(exc, "a", "get k")
    assert type(err) is TransientError and not isinstance(err, PeerDown)


@pytest.mark.parametrize(
    "exc",
    [
        NoCredentialsError(),
        ParamValidationError(report="Invalid bucket name"),
        SSLError(endpoint_url="https://x", error="[SSL: CERTIFICATE_VERIFY_FAILED] failed"),
    ],
)
def test_config_errors_are_permanent(exc: BaseException) -> None:
    assert type(classify_error(exc, "a", "get k")) is PermanentError


@pytest.mark.parametrize(
    "exc",
    [
        ResponseParserError("Unable to parse response (no element found)"),
        ValueError("invalid literal for int() with base 10: 'abc'"),
        ValueError('Invalid timestamp "yesterday"'),
        KeyError("Key"),
        TypeError("'NoneType' object is not subscriptable"),
    ],
)
def test_unparseable_replies_are_malformed(exc: BaseException) -> None:
    err = classify_error(exc, "a", "list 'v/'")
    assert type(err) is MalformedReply and "unparseable reply" in err.message


def test_secrets_are_masked() -> None:
    echoed = client_error("SignatureDoesNotMatch", 403, f"key {ACCESS} secret {SECRET}")
    err = classify_error(echoed, "a", "get k", secrets=[ACCESS, SECRET])
    assert ACCESS not in str(err) and SECRET not in str(err) and "***" in str(err)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def s3_peer(**transfer: object) -> S3Peer:
    config = PeerConfig(
        name="a",
        endpoint=f"http://127.0.0.1:{_closed_port()}",
        bucket="vault",
        region="eu-west-1",
        access_key=SecretStr(ACCESS),
        secret_key=SecretStr(SECRET),
    )
    return S3Peer(config, TransferConfig(**transfer))  # type: ignore[arg-type]


def test_client_settings() -> None:
    peer = s3_peer(timeout_seconds=3, concurrency=4, peer_concurrency=12)
    config = peer.client.meta.config
    assert config.retries == {"total_max_attempts": 1, "mode": "standard"}
    assert (config.connect_timeout, config.read_timeout) == (3, 3)
    assert config.s3 == {"addressing_style": "path", "payload_signing_enabled": False}
    assert config.signature_version == "s3v4"
    assert config.request_checksum_calculation == "when_required"
    assert config.response_checksum_validation == "when_required"
    assert config.max_pool_connections >= 12
    assert peer.client.meta.region_name == "eu-west-1"
    creds = peer.client._request_signer._credentials
    assert (creds.access_key, creds.secret_key) == (ACCESS, SECRET)


def test_unreachable_peer_error_names_no_secret() -> None:
    peer = s3_peer(timeout_seconds=2)
    with pytest.raises(TransientError) as err:
        peer.get("a/b")
    assert err.value.peer == "a"
    assert SECRET not in str(err.value) and ACCESS not in str(err.value)
    assert ACCESS not in peer.location and SECRET not in peer.location

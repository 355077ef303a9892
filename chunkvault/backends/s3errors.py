"""How an S3 peer's failures are classified: every exception boto3, botocore or urllib3
can raise becomes NotFound, PermanentError, MalformedReply or TransientError here, and no
message carries a credential.

Apart from :mod:`chunkvault.backends.s3` so that opening a vault imports botocore only
when a peer is first used (``ls`` and a no-change ``push`` never do).
"""

from __future__ import annotations

from collections.abc import Iterable

import urllib3.exceptions
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
    SSLError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from botocore.parsers import ResponseParserError

from chunkvault.backends.base import (
    MalformedReply,
    NotFound,
    PeerError,
    PermanentError,
    TransientError,
)

INIT_HINT = "run `chunkvault peers init`"
_NOT_FOUND = frozenset({"NoSuchKey", "NotFound", "404"})
_AUTH = frozenset(
    {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
     "InvalidToken", "AllAccessDisabled", "InvalidSecurity"}
)  # fmt: skip
_TRANSIENT_CODES = frozenset(
    {"SlowDown", "RequestTimeout", "Throttling", "ThrottlingException", "RequestThrottled",
     "ThrottledException", "RequestLimitExceeded", "TooManyRequestsException",
     "BandwidthLimitExceeded", "InternalError", "ServiceUnavailable", "OperationAborted",
     # The upload vanished under us (aborted by a lifecycle rule): a fresh put can work.
     "NoSuchUpload"}
)  # fmt: skip
# Dead peer: EndpointConnectionError and ConnectTimeoutError (ConnectionError); hung peer:
# ReadTimeoutError; ConnectionClosedError and ResponseStreamingError (a body cut short) are
# HTTPClientErrors; raw urllib3 and socket errors can escape while a body streams.
_TRANSIENT_NETWORK = (
    BotoConnectionError,
    HTTPClientError,
    IncompleteReadError,
    urllib3.exceptions.HTTPError,
    OSError,
)
# botocore parses replies with int() and dateutil and post-processes them in handlers that
# index fields: a crafted reply raises ValueError, KeyError or TypeError (ResponseParserError
# for XML it cannot read) out of the API call. Inside a call they can only be about the reply.
_UNPARSEABLE = (ResponseParserError, ValueError, LookupError, TypeError)
#: What a boto3 call can raise that is about the peer rather than a bug of ours.
S3_ERRORS = (ClientError, BotoCoreError, urllib3.exceptions.HTTPError, OSError, *_UNPARSEABLE)


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def classify_error(
    exc: BaseException, peer: str, action: str, secrets: Iterable[str] = ()
) -> PeerError:
    """Map a boto3/botocore/urllib3 exception to NotFound, PermanentError (MalformedReply
    among them) or TransientError.

    ``action`` says what was attempted ("get <key>"). ``secrets`` are masked from the
    message (a server could echo anything back).
    """
    cls: type[PeerError] = PermanentError
    if isinstance(exc, ClientError):
        code = error_code(exc)
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        text = str(exc.response.get("Error", {}).get("Message", "")).strip()
        detail = (f"{code} (HTTP {status})" if code else f"HTTP {status}") + (
            f": {text}" if text else ""
        )
        if code in _NOT_FOUND:
            cls = NotFound
        elif code == "NoSuchBucket":
            detail += f"; {INIT_HINT}"
        elif code in _AUTH:
            detail += "; check the peer's access_key/secret_key and the bucket policy"
        elif code == "RequestTimeTooSkewed":
            detail += "; check this machine's clock"
        elif code == "InvalidRange" or status == 416:
            # Only a ranged GET asks for a range, and we ask for bytes we wrote: an object
            # that ends before them is a truncated copy, or not ours.
            cls = MalformedReply
            detail += "; the object ends before the range"
        elif code in _TRANSIENT_CODES or status >= 500 or status in (408, 429):
            cls = TransientError
    elif isinstance(exc, NoCredentialsError | PartialCredentialsError):
        detail = f"{exc}; set access_key/secret_key for the peer or AWS_* in the environment"
    elif isinstance(exc, SSLError) and "CERTIFICATE_VERIFY_FAILED" in str(exc):
        detail = f"{exc}; install the CA certificate or set verify_tls: false"
    elif isinstance(exc, _TRANSIENT_NETWORK):
        cls, detail = TransientError, f"{type(exc).__name__}: {exc}"
    elif isinstance(exc, _UNPARSEABLE):
        cls, detail = MalformedReply, f"unparseable reply: {type(exc).__name__}: {exc}"
    else:  # ParamValidationError and other botocore errors are bugs or config errors
        detail = f"{type(exc).__name__}: {exc}"
    message = f"{action}: {detail}"
    for secret in secrets:
        if secret:
            message = message.replace(secret, "***")
    return cls(peer, message)

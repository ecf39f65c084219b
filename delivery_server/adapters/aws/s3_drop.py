"""The ``s3`` channel's sender: one recipient's drop as ``PutObject`` calls (DESIGN §12).

Each file of a ``drops.DropForm`` is put at ``<prefix><key>/<file name>`` in the job's
bucket with server-side encryption (``DELIVERY_DROP_S3_SSE``: ``AES256``, SSE-S3, or
``aws:kms`` with ``DELIVERY_DROP_S3_KMS_KEY_ID``, else the bucket's AWS-managed key) and a
``Content-MD5``, so S3 refuses bytes damaged on the way instead of storing them.

A drop is idempotent: putting the same bytes under the same key again leaves the bucket as
it was. So where the SES sender must call an unanswered send ``unknown``, this one calls a
timed-out or cut-off put retryable: the retry writes the same object again, harmlessly.
The provider id is ``s3-<digest of the drop's names and bytes>``.

How S3 failures map onto the error tree (``errors``):

================================================================  =======================
S3 error code / failure                                           raised
================================================================  =======================
``NoSuchBucket``, ``AccessDenied``, ``AllAccessDisabled``,        ``PermanentError``
``InvalidBucketName``, ``KeyTooLongError``, ``EntityTooLarge``,
``InvalidArgument``, ``InvalidRequest``, ``InvalidDigest``, the
KMS key missing, disabled or refused (``KMS.*``), any other 4xx
``SlowDown``, ``Throttling``, ``RequestLimitExceeded``,           ``ThrottledError``
``KMS.ThrottlingException``, HTTP 429, HTTP 503 ``SlowDown``
``InvalidAccessKeyId``, ``SignatureDoesNotMatch``, missing        ``AccountPausedError``
credentials (every put would fail alike: the s3 channel pauses)
HTTP 5xx, ``InternalError``, ``ServiceUnavailable``,              ``RetryableError``
``RequestTimeout``, ``BadDigest`` (damaged on the way),
``OperationAborted``, ``ExpiredToken`` (credentials refresh)
read timeout, connection reset or closed after the request        ``RetryableError``
was written, an unreadable answer: the put may have happened,     (not ``unknown``:
and doing it again is harmless                                    idempotent)
connection refused, DNS failure, connect timeout, TLS             ``ProviderUnreachable``
handshake failure (nothing left; the s3 channel's gate pauses)
================================================================  =======================

Messages carry the S3 error code, never S3's message text nor the key (a key can hold a
customer's name).
"""

from __future__ import annotations

import asyncio
import hashlib
from base64 import b64encode
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Literal

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from delivery_server.adapters.aws.ses import surely_not_sent
from delivery_server.adapters.aws.session import fixed_user_agent
from delivery_server.drop_targets import S3Target
from delivery_server.drops import DropFile, DropForm
from delivery_server.errors import (
    AccountPausedError,
    DeliveryError,
    PermanentError,
    ProviderUnreachableError,
    RetryableError,
    ThrottledError,
)

if TYPE_CHECKING:
    from types_aiobotocore_s3.client import S3Client

ServerSideEncryption = Literal["AES256", "aws:kms"]

_THROTTLED_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests"}
)
_PAUSED_CODES = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "InvalidSecurity"}
)
_RETRYABLE_CODES = frozenset(
    {
        "InternalError",
        "ServiceUnavailable",
        "RequestTimeout",
        "BadDigest",
        "OperationAborted",
        "ExpiredToken",
        "TokenRefreshRequired",
    }
)
# What a PutObject call can raise that ``translate_s3_put_error`` maps.
_PUT_ERRORS = (ClientError, BotoCoreError, aiohttp.ClientError, OSError, TimeoutError)


def _translate_client_error(exc: ClientError) -> DeliveryError:
    code = exc.response.get("Error", {}).get("Code", "") or "unknown"
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    what = f"S3 {code} (HTTP {status})"
    if code in _THROTTLED_CODES or code == "KMS.ThrottlingException" or status == 429:
        return ThrottledError(what)
    if code in _PAUSED_CODES:
        return AccountPausedError(f"{what}: the credentials are refused")
    if code in _RETRYABLE_CODES or status >= 500:
        return RetryableError(what)
    return PermanentError(f"{what}: put refused")


def translate_s3_put_error(exc: Exception) -> DeliveryError:
    """Map an exception from ``PutObject`` onto the error tree (see the module table)."""
    if isinstance(exc, ClientError):
        return _translate_client_error(exc)
    name = type(exc).__name__
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return AccountPausedError(f"S3 credentials unavailable ({name})")
    if isinstance(exc, ConnectTimeoutError | aiohttp.ConnectionTimeoutError):
        return ProviderUnreachableError(f"S3 connect timeout ({name})")
    if isinstance(exc, EndpointConnectionError) and surely_not_sent(exc):
        return ProviderUnreachableError(f"S3 connection failed ({name})")
    if isinstance(exc, BotoConnectionError) and not isinstance(exc, EndpointConnectionError):
        return ProviderUnreachableError(f"S3 connection failed ({name})")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return ProviderUnreachableError(f"S3 connection failed ({name})")
    # Everything after the request left (read timeouts, resets, unreadable answers):
    # the object may be there, and putting the same bytes again is harmless.
    return RetryableError(f"S3 put failed ({name}); the same bytes are put again")


class S3DropSender:
    """``channels.ChannelSender`` of the ``s3`` channel (see ``open_s3_drop_sender``)."""

    def __init__(
        self,
        client: S3Client,
        *,
        sse: ServerSideEncryption,
        kms_key_id: str | None = None,
        put_deadline: float = 60.0,
    ) -> None:
        self._client = client
        self._sse: ServerSideEncryption = sse
        self._kms_key_id = kms_key_id
        self._put_deadline = put_deadline

    async def send(self, outgoing: DropForm[S3Target]) -> str:
        """Put every file of the drop; return ``s3-<digest>``."""
        for file in outgoing.files:
            await self._put(outgoing.target, file)
        return f"s3-{outgoing.digest()}"

    async def _put(self, target: S3Target, file: DropFile) -> None:
        digest = hashlib.md5(file.data, usedforsecurity=False).digest()
        request: dict[str, Any] = {
            "Bucket": target.bucket,
            "Key": target.object_key(file.name),
            "Body": file.data,
            "ContentType": file.content_type,
            "ContentMD5": b64encode(digest).decode(),
            "ServerSideEncryption": self._sse,
        }
        if self._sse == "aws:kms" and self._kms_key_id:
            request["SSEKMSKeyId"] = self._kms_key_id
        try:
            # The client's read timeout does not cover the wait for "100 Continue" (a
            # PutObject sends "Expect: 100-continue"): bound the whole put ourselves.
            async with asyncio.timeout(self._put_deadline):
                await self._client.put_object(**request)
        except _PUT_ERRORS as exc:
            raise translate_s3_put_error(exc) from None

    async def max_send_rate(self) -> float | None:
        """S3 has no account-wide put rate to ask for (it answers ``SlowDown``)."""
        return None


@asynccontextmanager
async def open_s3_drop_sender(
    *,
    sse: ServerSideEncryption = "AES256",
    kms_key_id: str | None = None,
    endpoint_url: str | None = None,
    region_name: str | None = None,
    max_connections: int = 20,
    timeout: float = 30.0,  # per request (connect, then read); a whole put gets twice that
) -> AsyncIterator[S3DropSender]:
    """Open the S3 client of the drop channel (credentials and region from the AWS
    settings)."""
    session = get_session()
    config = AioConfig(
        # One attempt per call, like every sender: retries are the core's decision, per
        # email, with its backoff and its attempt count (a put is safe to repeat, but an
        # SDK retry loop would hide SlowDown from the channel's gate).
        retries={"total_max_attempts": 1, "mode": "standard"},
        max_pool_connections=max_connections,
        connect_timeout=timeout,
        read_timeout=timeout,
        user_agent=fixed_user_agent(session),
    )
    async with session.create_client(
        "s3", endpoint_url=endpoint_url, region_name=region_name, config=config
    ) as client:
        yield S3DropSender(client, sse=sse, kms_key_id=kms_key_id, put_deadline=2 * timeout)

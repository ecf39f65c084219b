"""The ``s3://bucket/key`` attachment loader: allowed buckets only.

Error translation (S3 → the error tree): a missing key or bucket and a refused access are
``PermanentError`` (resending cannot help); 5xx, 429, ``SlowDown`` and connection failures
are ``RetryableError``. Messages never quote the key (it can hold a customer's name).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from delivery_server.adapters.attachments import MAX_ATTACHMENT_BYTES
from delivery_server.errors import PermanentError, RetryableError
from delivery_server.models import Attachment, AttachmentRef

if TYPE_CHECKING:
    from types_aiobotocore_s3.client import S3Client

_S3_MISSING = frozenset({"NoSuchKey", "NoSuchBucket", "404", "NotFound"})
_S3_REFUSED = frozenset({"AccessDenied", "403", "AllAccessDisabled", "InvalidObjectState"})


class S3AttachmentLoader:
    """Loads ``s3://bucket/key`` attachments from the allowed buckets only."""

    def __init__(
        self, client: S3Client, buckets: frozenset[str], *, max_bytes: int = MAX_ATTACHMENT_BYTES
    ) -> None:
        self._client = client
        self._buckets = buckets
        self._max_bytes = max_bytes

    async def load(self, ref: AttachmentRef) -> Attachment:
        """Download the object; missing or refused is a PermanentError, outages retry."""
        bucket, key = ref.s3_location()
        if bucket not in self._buckets:
            raise PermanentError("s3 attachment bucket is not allowed")
        try:
            response = await self._client.get_object(Bucket=bucket, Key=key)
            async with response["Body"] as stream:
                if response.get("ContentLength", 0) > self._max_bytes:
                    raise PermanentError(f"s3 attachment too large (limit {self._max_bytes} bytes)")
                data = await stream.read()
        except ClientError as exc:
            raise _translate_s3_error(exc) from None
        except (BotoCoreError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise RetryableError(f"s3 attachment download failed ({type(exc).__name__})") from None
        return Attachment(filename=ref.filename, content_type=ref.content_type, data=data)


def _translate_s3_error(exc: ClientError) -> PermanentError | RetryableError:
    code = exc.response.get("Error", {}).get("Code", "") or "unknown"
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    if code in _S3_MISSING:
        return PermanentError(f"s3 attachment not found ({code})")
    if code in _S3_REFUSED:
        return PermanentError(f"s3 attachment access refused ({code})")
    if status >= 500 or status == 429 or code in ("SlowDown", "RequestTimeout"):
        return RetryableError(f"s3 attachment download failed ({code})")
    return PermanentError(f"s3 attachment refused ({code}, HTTP {status})")


@asynccontextmanager
async def open_s3_loader(
    buckets: frozenset[str],
    *,
    endpoint_url: str | None = None,
    max_connections: int = 20,
    region_name: str | None = None,
    max_bytes: int = MAX_ATTACHMENT_BYTES,
) -> AsyncIterator[S3AttachmentLoader]:
    """Open an S3 client for attachments (credentials and region from the AWS settings)."""
    # Reads are idempotent, so unlike sends they may use the SDK's own retries.
    config = AioConfig(
        retries={"max_attempts": 3, "mode": "standard"}, max_pool_connections=max_connections
    )
    session = get_session()
    async with session.create_client(
        "s3", endpoint_url=endpoint_url, region_name=region_name, config=config
    ) as client:
        yield S3AttachmentLoader(client, buckets, max_bytes=max_bytes)

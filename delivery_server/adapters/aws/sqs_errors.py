"""How SQS and transport errors become ``errors`` classes, after the adapter's own retries
(``sqs.SqsQueue``: botocore's standard mode on the client, the same on the direct path).

=====================================================  ===================================
SQS / transport error                                  becomes
=====================================================  ===================================
ClientError, throttling code (``Throttling``,          ``ThrottledError``
``ThrottlingException``, ``RequestThrottled``,
``OverLimit`` = too many in-flight messages,
``KmsThrottled``, ...)
ClientError with HTTP status >= 500, or a transient    ``RetryableError``
code (``InternalError``, ``ServiceUnavailable``,
``RequestTimeout``, ``KmsUnavailable``, ...)
EndpointConnectionError, ConnectTimeoutError,          ``RetryableError``
ReadTimeoutError and other connection errors,
aiohttp ``ClientError``, ``TimeoutError``
NoCredentialsError, NoRegionError,                     ``PermanentError``
ParamValidationError (configuration or a bug)
any other ClientError: ``AccessDenied``,               ``PermanentError``
``AWS.SimpleQueueService.NonExistentQueue`` /
``QueueDoesNotExist``, ``InvalidClientTokenId``,
``InvalidParameterValue``, ...
=====================================================  ===================================
"""

from __future__ import annotations

import aiohttp
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    PartialCredentialsError,
)
from botocore.parsers import ResponseParserError

from delivery_server.errors import DeliveryError, PermanentError, RetryableError, ThrottledError

SQS_PREFIX = "AWS.SimpleQueueService."
_THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "SlowDown",
        "OverLimit",  # too many in-flight messages: receive less, later
        "KmsThrottled",
        "KMS.ThrottlingException",
    }
)
_TRANSIENT_CODES = frozenset(
    {
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "RequestTimeout",
        "RequestTimeoutException",
        "KmsUnavailable",
        "KMS.KMSInternalException",
    }
)
# Configuration errors and bugs, not bad luck: repeating the call cannot help.
_USAGE_ERRORS = (NoCredentialsError, PartialCredentialsError, NoRegionError, ParamValidationError)
# What a call can raise that we translate; anything else is a bug and propagates as is.
CALL_ERRORS = (ClientError, BotoCoreError, ResponseParserError, aiohttp.ClientError, TimeoutError)


def error_code(exc: ClientError) -> str:
    """The error code of a ClientError without SQS's legacy ``AWS.SimpleQueueService.``."""
    return str(exc.response.get("Error", {}).get("Code", "")).removeprefix(SQS_PREFIX)


def translate_sqs_error(exc: BaseException, action: str) -> DeliveryError:
    """Map an SQS or transport error to the error tree (table in the module docstring)."""
    if isinstance(exc, ClientError):
        code = error_code(exc)
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        message = f"SQS {action} failed: {code or 'no code'} (HTTP {status})"
        if code in _THROTTLING_CODES:
            return ThrottledError(message)
        if status >= 500 or code in _TRANSIENT_CODES:
            return RetryableError(message)
        return PermanentError(message)
    if isinstance(exc, _USAGE_ERRORS):
        return PermanentError(f"SQS {action} cannot be called: {exc}")
    return RetryableError(f"SQS {action} failed: {type(exc).__name__}: {exc}")


def worth_repeating(exc: BaseException, action: str) -> bool:
    return isinstance(translate_sqs_error(exc, action), ThrottledError | RetryableError)

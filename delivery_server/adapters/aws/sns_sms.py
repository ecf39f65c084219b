"""The SMS sender: SNS ``Publish`` to a phone number, exactly one attempt per call.

(Not to be confused with ``sns.py``, which checks the signatures of SNS's HTTPS posts.)

Every SMS goes as ``Transactional`` (SNS routes it for reliability over price) with the
sender id ``DELIVERY_SMS_SENDER_ID`` where one is set (countries that do not support
sender ids ignore it).

**Opt-outs.** SNS keeps its own list of numbers that replied STOP, and ``Publish`` to one
of them still answers with a message id: SNS drops the SMS later, quietly. So each number
is asked about first (``CheckIfPhoneNumberIsOptedOut``, one call per SMS; nothing is sent
by it, so any failure of the check is safe to retry). An opted-out number raises
``RecipientOptedOutError``: the email becomes ``suppressed`` and the number goes on our
suppression list, which the claim reads, so it is never asked about again. Reading the
whole list instead (``ListPhoneNumbersOptedOut``, 100 numbers a page at 10 calls a second)
costs a large account more than asking for the numbers it sends to, and is stale by the
time it is read.

How SNS and transport failures map onto the error tree (``errors``):

================================================================  =========================
SNS error code / failure                                          raised
================================================================  =========================
the number is on SNS's opt-out list (the check says so; an        ``RecipientOptedOutError``
``OptedOut`` error)                                               (email ``suppressed``)
``InvalidParameter``, ``ParameterValueInvalid``,                  ``PermanentError``
``ValidationException``, ``NotFound``, any other 4xx
``Throttled``, ``Throttling*``, ``KMSThrottling``, HTTP 429       ``ThrottledError``
the monthly SMS spend limit reached ("spend" / "no quota" in      ``AccountPausedError``
the message), ``AuthorizationError``, ``AccessDenied``, bad or
missing credentials, ``KMS*`` key errors, ``InvalidSecurity``
(every SMS would fail the same way: pause, do not burn attempts)
HTTP 5xx, ``InternalError``, ``ServiceUnavailable``               ``RetryableError``
connection refused, DNS failure, connect timeout, TLS             ``ProviderUnreachable``
handshake failure (the request surely never left)
``Publish``: read timeout, connection reset or closed after the   ``UncertainSendError``
request was written, an answer that cannot be read or has no      (email ``unknown``)
message id: SNS may have taken the SMS
the opt-out check: the same failures after the request left       ``RetryableError``
(nothing is sent by a check)
================================================================  =========================

Error messages carry the SNS error code, never SNS's own message text: that text can
quote the phone number.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError
from botocore.parsers import ResponseParserError

from delivery_server.adapters.aws.ses import translate_ses_error
from delivery_server.adapters.aws.session import fixed_user_agent
from delivery_server.errors import (
    AccountPausedError,
    DeliveryError,
    PermanentError,
    RecipientOptedOutError,
    RetryableError,
    ThrottledError,
    UncertainSendError,
)
from delivery_server.sms import OutgoingSms

if TYPE_CHECKING:
    from types_aiobotocore_sns.client import SNSClient
    from types_aiobotocore_sns.type_defs import MessageAttributeValueTypeDef

SMS_TYPE = "Transactional"

_THROTTLED_CODES = frozenset(
    {
        "Throttled",
        "ThrottledException",
        "Throttling",
        "ThrottlingException",
        "TooManyRequestsException",
        "RequestThrottled",
        "KMSThrottling",
        "KMSThrottlingException",
    }
)
_PAUSED_CODES = frozenset(
    {
        "AuthorizationError",
        "AuthorizationErrorException",
        "AccessDenied",
        "AccessDeniedException",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "SignatureDoesNotMatch",
        "MissingAuthenticationToken",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidSecurity",
        "KMSDisabled",
        "KMSInvalidState",
        "KMSNotFound",
        "KMSOptInRequired",
        "KMSAccessDenied",
    }
)
_OPTED_OUT_CODES = frozenset({"OptedOut", "OptedOutException"})
_RETRYABLE_CODES = frozenset(
    {
        "InternalError",
        "InternalErrorException",
        "InternalFailure",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
# The spend limit (AWS.SNS.SMS.MonthlySpendLimit) names itself only in the message.
_SPEND_LIMIT_WORDS = ("spend", "no quota")

# What an SNS call can raise that the translations map; anything else is a bug.
_CALL_ERRORS = (ClientError, BotoCoreError, ResponseParserError, aiohttp.ClientError, OSError)


def _translate_client_error(exc: ClientError) -> DeliveryError:
    error = exc.response.get("Error", {})
    code = error.get("Code", "") or "unknown"
    message = (error.get("Message") or "").lower()
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    what = f"SNS {code} (HTTP {status})"
    if code in _OPTED_OUT_CODES or "opted out" in message:
        return RecipientOptedOutError(f"{what}: the number opted out of SMS")
    if any(words in message for words in _SPEND_LIMIT_WORDS):
        return AccountPausedError(f"{what}: the account's SMS spend limit is reached")
    if code in _THROTTLED_CODES or status == 429:
        return ThrottledError(what)
    if code in _PAUSED_CODES:
        return AccountPausedError(what)
    if code in _RETRYABLE_CODES or status >= 500:
        return RetryableError(what)
    return PermanentError(f"{what}: SMS refused")


def translate_sns_error(exc: Exception) -> DeliveryError:
    """Map an exception from ``Publish`` onto the error tree (see the module table).

    The transport rows are SES's (the same client, the same transport): only the
    service's name in the message differs."""
    if isinstance(exc, ClientError):
        return _translate_client_error(exc)
    translated = translate_ses_error(exc)
    return type(translated)(str(translated).replace("SES", "SNS", 1))


def translate_check_error(exc: Exception) -> DeliveryError:
    """Map an exception from ``CheckIfPhoneNumberIsOptedOut``: as ``Publish``'s, except
    that a lost answer is only retryable (a check sends nothing)."""
    translated = translate_sns_error(exc)
    if isinstance(translated, UncertainSendError):
        return RetryableError(f"{translated} (opt-out check)")
    return translated


class SnsSmsSender:
    """``ChannelSender[OutgoingSms]`` over SNS (see ``open_sns_sms_sender``)."""

    def __init__(self, client: SNSClient, *, sender_id: str | None = None) -> None:
        self._client = client
        self._attributes: dict[str, MessageAttributeValueTypeDef] = {
            "AWS.SNS.SMS.SMSType": {"DataType": "String", "StringValue": SMS_TYPE}
        }
        if sender_id:
            self._attributes["AWS.SNS.SMS.SenderID"] = {
                "DataType": "String",
                "StringValue": sender_id,
            }

    async def send(self, outgoing: OutgoingSms) -> str:
        """Check the number against SNS's opt-out list, then ``Publish`` the SMS once;
        return SNS's message id."""
        await self._check_opted_in(outgoing.phone)
        try:
            response = await self._client.publish(
                PhoneNumber=outgoing.phone,
                Message=outgoing.body,
                MessageAttributes=self._attributes,
            )
        except _CALL_ERRORS as exc:
            # `from None`: SNS's message may quote the number; ours carries the code.
            raise translate_sns_error(exc) from None
        message_id = response.get("MessageId")
        if not isinstance(message_id, str) or not message_id:
            # A success answer without an id (a proxy's page, say): SNS may have taken it.
            raise UncertainSendError("SNS answered without a message id")
        return message_id

    async def _check_opted_in(self, phone: str) -> None:
        try:
            answer: dict[str, Any] = dict(
                await self._client.check_if_phone_number_is_opted_out(phoneNumber=phone)
            )
        except _CALL_ERRORS as exc:
            raise translate_check_error(exc) from None
        opted_out = answer.get("isOptedOut")
        if not isinstance(opted_out, bool):
            raise RetryableError("SNS opt-out check answered without isOptedOut")
        if opted_out:
            raise RecipientOptedOutError("the number is on SNS's SMS opt-out list")

    async def max_send_rate(self) -> float | None:
        """None: SNS has no API saying an account's SMS rate; throttling slows the
        channel's gate down instead."""
        return None


@asynccontextmanager
async def open_sns_sms_sender(
    *,
    endpoint_url: str | None = None,
    sender_id: str | None = None,
    max_connections: int = 20,
    timeout: float = 30.0,  # per SNS request (connect, then read)
    region_name: str | None = None,
) -> AsyncIterator[SnsSmsSender]:
    """Open an SMS sender over SNS (credentials and region from the standard AWS
    settings; ``endpoint_url``: ``DELIVERY_AWS_ENDPOINT_URL``)."""
    session = get_session()
    config = AioConfig(
        # ONE attempt per call: an SDK retry after a read timeout or a dropped connection
        # can deliver the same SMS twice. Retries are the core's decision, per email.
        retries={"total_max_attempts": 1, "mode": "standard"},
        max_pool_connections=max_connections,
        connect_timeout=timeout,
        read_timeout=timeout,
        user_agent=fixed_user_agent(session),
    )
    async with session.create_client(
        "sns", endpoint_url=endpoint_url, region_name=region_name, config=config
    ) as client:
        yield SnsSmsSender(client, sender_id=sender_id)

"""The SES v2 sender: one ``SendEmail`` call per email, exactly one attempt per call.

Emails without attachments go as ``Simple`` content (SES builds the MIME); emails with
attachments go as ``Raw`` content built by ``mime.build_mime``. Either way the headers are
written as the ``mime.CheckedEmail`` holds them: they were checked when it was made.

How SES and transport failures map onto the error tree (``errors``):

================================================================  =======================
SES error code / failure                                          raised
================================================================  =======================
``MessageRejected``, ``MailFromDomainNotVerifiedException``,      ``PermanentError``
``BadRequestException``, ``NotFoundException``, invalid
parameter / validation errors, any other 4xx
``TooManyRequestsException``, ``LimitExceededException``,         ``ThrottledError``
``Throttling*``, "Maximum sending rate exceeded", HTTP 429
``AccountSuspendedException``, ``SendingPausedException``,        ``AccountPausedError``
"Daily message quota exceeded", bad or missing credentials,
access denied (every send would fail the same way: pause,
do not burn the job's attempts)
HTTP 5xx, ``InternalFailure``, ``ServiceUnavailable``             ``RetryableError``
connection refused, DNS failure, connect timeout, TLS             ``ProviderUnreachable``
handshake failure (the request surely never left)
read timeout, connection reset or closed after the request        ``UncertainSendError``
was written (``ReadTimeoutError``, ``ConnectionClosedError``),
a success answer that cannot be read (``ResponseParserError``):
SES may have accepted the email
================================================================  =======================

Error messages carry the SES error code, never SES's own message text: that text can
quote addresses.
"""

from __future__ import annotations

import json
import socket
from base64 import b64encode
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from botocore.parsers import ResponseParserError

from delivery_server.adapters.aws.direct import SignedJsonClient, open_http
from delivery_server.adapters.aws.session import AwsHttp, fixed_user_agent
from delivery_server.errors import (
    AccountPausedError,
    DeliveryError,
    PermanentError,
    ProviderUnreachableError,
    RetryableError,
    ThrottledError,
    UncertainSendError,
)
from delivery_server.mime import CheckedEmail, build_mime, check_message_size

if TYPE_CHECKING:
    from types_aiobotocore_sesv2.client import SESV2Client
    from types_aiobotocore_sesv2.type_defs import EmailContentTypeDef

_PERMANENT_CODES = frozenset(
    {
        "MessageRejected",
        "MailFromDomainNotVerifiedException",
        "MailFromDomainNotVerified",
        "BadRequestException",
        "NotFoundException",
        "InvalidParameterValue",
        "InvalidParameterValueException",
        "ValidationException",
        "ValidationError",
    }
)
_THROTTLED_CODES = frozenset(
    {
        "TooManyRequestsException",
        "LimitExceededException",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
    }
)
_PAUSED_CODES = frozenset(
    {
        "AccountSuspendedException",
        "SendingPausedException",
        "AccessDenied",
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "MissingAuthenticationToken",
        "ExpiredToken",
        "ExpiredTokenException",
    }
)
_RETRYABLE_CODES = frozenset(
    {
        "InternalFailure",
        "InternalServerError",
        "InternalError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)


# What a SendEmail call can raise that ``translate_ses_error`` maps; anything else is a bug.
_SEND_ERRORS = (
    ClientError,
    BotoCoreError,
    ResponseParserError,
    aiohttp.ClientError,
    OSError,
    TimeoutError,
)


def _translate_client_error(exc: ClientError) -> DeliveryError:
    error = exc.response.get("Error", {})
    code = error.get("Code", "") or "unknown"
    message = (error.get("Message") or "").lower()
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    what = f"SES {code} (HTTP {status})"
    if "daily message quota exceeded" in message:
        return AccountPausedError(f"{what}: daily sending quota exceeded")
    if "maximum sending rate exceeded" in message or code in _THROTTLED_CODES or status == 429:
        return ThrottledError(what)
    if code in _PAUSED_CODES:
        return AccountPausedError(what)
    if code in _PERMANENT_CODES:
        return PermanentError(f"{what}: message rejected")
    if code in _RETRYABLE_CODES or status >= 500:
        return RetryableError(what)
    return PermanentError(f"{what}: request refused")


def surely_not_sent(exc: EndpointConnectionError) -> bool:
    """True when the connection itself failed, so no byte of the request left."""
    cause = exc.kwargs.get("error")
    return isinstance(
        cause, aiohttp.ClientConnectorError | socket.gaierror | ConnectionRefusedError
    )


def translate_ses_error(exc: Exception) -> DeliveryError:
    """Map an exception from ``SendEmail`` onto the error tree (see the module table)."""
    if isinstance(exc, ClientError):
        return _translate_client_error(exc)
    name = type(exc).__name__
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return AccountPausedError(f"SES credentials unavailable ({name})")
    if isinstance(exc, ConnectTimeoutError | aiohttp.ConnectionTimeoutError):
        return ProviderUnreachableError(f"SES connect timeout ({name})")
    if isinstance(exc, EndpointConnectionError) and not surely_not_sent(exc):
        return UncertainSendError(f"SES connection lost after the request was sent ({name})")
    if isinstance(exc, BotoConnectionError):  # refused, DNS, TLS handshake, proxy
        return ProviderUnreachableError(f"SES connection failed ({name})")
    if isinstance(exc, ResponseParserError):  # SES answered: it may have taken the email
        return UncertainSendError(f"SES answered but the answer was unreadable ({name})")
    if isinstance(exc, HTTPClientError):  # read timeout, connection closed or reset
        return UncertainSendError(f"SES gave no answer after the request was sent ({name})")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return ProviderUnreachableError(f"SES connection failed ({name})")
    if isinstance(exc, aiohttp.ClientError | OSError | TimeoutError):
        return UncertainSendError(f"SES transport failure ({name})")
    if isinstance(exc, BotoCoreError):
        return RetryableError(f"SES client error ({name})")
    return RetryableError(f"SES send failed ({name})")


class SesSender:
    """``ports.Sender`` over SES v2 (see ``open_ses_sender``)."""

    def __init__(
        self,
        client: SESV2Client,
        *,
        configuration_set: str | None = None,
        direct: SignedJsonClient | None = None,
    ) -> None:
        self._client = client
        self._configuration_set = configuration_set
        # SendEmail without the client's per-call pipeline (``direct``); None: the client.
        self._direct = direct

    async def send(self, email: CheckedEmail) -> str:
        """Send one email with one ``SendEmail`` call; return the SES message id."""
        request: dict[str, Any] = {
            "FromEmailAddress": email.from_header,
            "Destination": {"ToAddresses": [email.to_address]},
        }
        raw = None
        if email.attachments:
            raw = build_mime(email)
            check_message_size(raw)
        elif email.reply_to_address is not None:
            # The bare address: SES documents display names for From only.
            request["ReplyToAddresses"] = [email.reply_to_address]
        tags = _id_tags(email)
        if tags:
            request["EmailTags"] = tags
        if self._configuration_set:
            request["ConfigurationSetName"] = self._configuration_set
        try:
            response = await self._send_email(request, raw, email)
        except _SEND_ERRORS as exc:
            # `from None`: SES's message may quote addresses; ours carries the code.
            raise translate_ses_error(exc) from None
        message_id = response.get("MessageId")
        if not isinstance(message_id, str) or not message_id:
            # A success answer without an id (a proxy's page, say): SES may have taken it.
            raise UncertainSendError("SES answered without a message id")
        return message_id

    async def _send_email(
        self, request: dict[str, Any], raw: bytes | None, email: CheckedEmail
    ) -> Mapping[str, Any]:
        """The call itself: ``raw`` MIME as Raw content, else Simple content."""
        if raw is None:
            request["Content"] = self._simple_content(email)
        elif self._direct is not None:
            return await self._direct.call("SendEmail", raw_content_json(request, raw))
        else:
            request["Content"] = {"Raw": {"Data": raw}}
        if self._direct is not None:
            return await self._direct.call("SendEmail", request)
        return await self._client.send_email(**request)

    @staticmethod
    def _simple_content(email: CheckedEmail) -> EmailContentTypeDef:
        parts = (email.subject, email.text_body, email.html_body or "")
        check_message_size(sum(len(part.encode()) for part in parts))
        body: dict[str, Any] = {"Text": {"Data": email.text_body, "Charset": "UTF-8"}}
        if email.html_body is not None:
            body["Html"] = {"Data": email.html_body, "Charset": "UTF-8"}
        simple: dict[str, Any] = {
            "Subject": {"Data": email.subject, "Charset": "UTF-8"},
            "Body": body,
        }
        headers = [{"Name": name, "Value": value} for name, value in email.extra_headers()]
        if headers:
            simple["Headers"] = headers
        return {"Simple": simple}  # type: ignore[typeddict-item]

    async def max_send_rate(self) -> float | None:
        """The account's ``SendQuota.MaxSendRate`` (emails/s), or None when SES cannot say."""
        try:
            account = await self._client.get_account()
            return float(account["SendQuota"]["MaxSendRate"])
        except (ClientError, BotoCoreError, aiohttp.ClientError, OSError, KeyError, ValueError):
            return None


def raw_content_json(request: Mapping[str, Any], raw: bytes) -> bytes:
    """The SendEmail JSON body of ``request`` with ``Content.Raw.Data`` = base64 of ``raw``.

    The base64 text is spliced in as bytes: it needs no JSON escaping, and passing a PDF's
    worth of it through ``json.dumps`` (as text, then encoded) cost several times as much
    (docs/benchmarks.md has the figures)."""
    head = json.dumps({**request, "Content": {"Raw": {"Data": ""}}}, separators=(",", ":"))
    # "Content" is the last key (``request`` has none), so the JSON ends ``"Data":""}}}``.
    tail = len('"}}}')
    encoded = head.encode()
    return b"".join((encoded[:-tail], b64encode(raw), encoded[-tail:]))


def _id_tags(email: CheckedEmail) -> list[dict[str, str]]:
    # SES message tags reach event destinations (bounces, deliveries): ids only.
    tags = []
    if email.job_id is not None:
        tags.append({"Name": "job_id", "Value": str(email.job_id)})
    if email.email_id is not None:
        tags.append({"Name": "email_id", "Value": str(email.email_id)})
    return tags


@asynccontextmanager
async def open_ses_sender(
    *,
    endpoint_url: str | None = None,
    max_connections: int = 50,
    timeout: float = 30.0,  # per SES request (connect, then read)
    region_name: str | None = None,
    configuration_set: str | None = None,
    http: AwsHttp = "direct",
) -> AsyncIterator[SesSender]:
    """Open an SES v2 sender (credentials and region from the standard AWS settings).

    ``http="direct"`` sends through ``direct`` (the client's endpoint, credentials,
    signer and error parser without its per-call pipeline); ``"sdk"`` through the client."""
    session = get_session()
    user_agent = fixed_user_agent(session)
    config = AioConfig(
        # ONE attempt per call: an SDK retry after a read timeout or a dropped connection
        # can deliver the same email twice. Retries are the core's decision, per email.
        retries={"total_max_attempts": 1, "mode": "standard"},
        max_pool_connections=max_connections,
        connect_timeout=timeout,
        read_timeout=timeout,
        user_agent=user_agent,
    )
    async with session.create_client(
        "sesv2", endpoint_url=endpoint_url, region_name=region_name, config=config
    ) as client:
        if http == "sdk":
            yield SesSender(client, configuration_set=configuration_set)
            return
        credentials = await session.get_credentials()
        async with open_http(
            session,
            max_connections=max_connections,
            timeout=aiohttp.ClientTimeout(sock_connect=timeout, sock_read=timeout),
        ) as http_session:
            direct = SignedJsonClient(client, credentials, http_session, user_agent=user_agent)
            yield SesSender(client, configuration_set=configuration_set, direct=direct)

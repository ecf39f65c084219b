"""The SMS sender on moto's SNS, and on a stub for what moto cannot do (errors, silence).

moto records each SMS it accepts (``sns`` → ``SMS`` in ``/moto-api/data.json``: message
id, number, text) and says every number ending in 99 opted out.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from typing import Any
from urllib.parse import parse_qs

import pytest

from delivery_server.adapters.aws.sns_sms import open_sns_sms_sender
from delivery_server.errors import (
    AccountPausedError,
    PermanentError,
    ProviderUnreachableError,
    RecipientOptedOutError,
    RetryableError,
    ThrottledError,
    UncertainSendError,
)
from delivery_server.sms import OutgoingSms, count_segments
from tests.conftest import free_port
from tests.support.http_stub import HttpStub

pytestmark = pytest.mark.timeout(60)

OPTED_IN = "+14155550100"
OPTED_OUT = "+14155550199"  # moto: every number ending in 99 opted out


def sms(phone: str = OPTED_IN, body: str = "Your statement is ready.") -> OutgoingSms:
    return OutgoingSms(job_id=7, email_id=42, phone=phone, body=body, segments=count_segments(body))


def sent_sms(endpoint: str) -> list[dict[str, Any]]:
    """Every SMS moto's SNS accepted: ``message_id``, ``phone_number``, ``message``."""
    with urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=10) as response:
        data: dict[str, Any] = json.load(response)
    return list(data.get("sns", {}).get("SMS", []))


async def test_an_sms_reaches_sns_with_its_number_and_text(moto: str) -> None:
    body = "Grüße: your statement is ready €"
    async with open_sns_sms_sender(endpoint_url=moto, sender_id="ACME") as sender:
        message_id = await sender.send(sms(body=body))
    assert sent_sms(moto) == [{"message_id": message_id, "phone_number": OPTED_IN, "message": body}]


async def test_an_opted_out_number_is_not_sent(moto: str) -> None:
    async with open_sns_sms_sender(endpoint_url=moto) as sender:
        with pytest.raises(RecipientOptedOutError, match="opt-out list") as caught:
            await sender.send(sms(OPTED_OUT))
    assert sent_sms(moto) == []
    assert OPTED_OUT.lstrip("+") not in str(caught.value)


class ScriptedSns(HttpStub):
    """Answers the opt-out check ("not opted out"), then behaves as told for the rest."""

    CHECK_ANSWER = (
        b"<CheckIfPhoneNumberIsOptedOutResponse><CheckIfPhoneNumberIsOptedOutResult>"
        b"<isOptedOut>false</isOptedOut></CheckIfPhoneNumberIsOptedOutResult>"
        b"<ResponseMetadata><RequestId>r</RequestId></ResponseMetadata>"
        b"</CheckIfPhoneNumberIsOptedOutResponse>"
    )

    async def _one_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        if self.requests:
            return await super()._one_request(reader, writer)
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.partition(b":")[2])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        self.requests.append(head + await reader.readexactly(length))
        answer = self.CHECK_ANSWER
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\n"
            + f"Content-Length: {len(answer)}\r\n\r\n".encode()
            + answer
        )
        await writer.drain()
        return True


def sns_error(code: str, message: str) -> bytes:
    return (
        f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code>"
        f"<Message>{message}</Message></Error><RequestId>r</RequestId></ErrorResponse>"
    ).encode()


def form(request: bytes) -> dict[str, list[str]]:
    return parse_qs(request.partition(b"\r\n\r\n")[2].decode())


async def test_publish_is_transactional_with_the_sender_id(aws_env: None) -> None:
    answer = (
        b"<PublishResponse><PublishResult><MessageId>m-1</MessageId></PublishResult>"
        b"<ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></PublishResponse>"
    )
    async with (
        ScriptedSns(body=answer, headers={"Content-Type": "text/xml"}) as stub,
        open_sns_sms_sender(endpoint_url=stub.endpoint, sender_id="ACME") as sender,
    ):
        assert await sender.send(sms()) == "m-1"
    check, publish = (form(request) for request in stub.requests)
    assert check["Action"] == ["CheckIfPhoneNumberIsOptedOut"]
    assert check["phoneNumber"] == [OPTED_IN]
    attributes = {
        publish[f"MessageAttributes.entry.{n}.Name"][0]: publish[
            f"MessageAttributes.entry.{n}.Value.StringValue"
        ][0]
        for n in (1, 2)
    }
    assert publish["Action"] == ["Publish"]
    assert publish["PhoneNumber"] == [OPTED_IN]
    assert attributes == {"AWS.SNS.SMS.SMSType": "Transactional", "AWS.SNS.SMS.SenderID": "ACME"}


@pytest.mark.parametrize(
    ("status", "code", "message", "expected"),
    [
        (400, "InvalidParameter", "Invalid parameter: PhoneNumber +14155550100", PermanentError),
        (400, "ParameterValueInvalid", "bad value", PermanentError),
        (429, "Throttled", "Rate exceeded", ThrottledError),
        (400, "Throttling", "Rate exceeded", ThrottledError),
        (403, "AuthorizationError", "not authorized", AccountPausedError),
        (400, "InvalidParameter", "Monthly SMS spend limit exceeded", AccountPausedError),
        (400, "OptedOut", "Phone number is opted out", RecipientOptedOutError),
        (500, "InternalError", "internal", RetryableError),
        (503, "ServiceUnavailable", "down", RetryableError),
    ],
)
async def test_publish_errors_map_onto_the_error_tree(
    aws_env: None, status: int, code: str, message: str, expected: type[Exception]
) -> None:
    async with (
        ScriptedSns(
            status=status, body=sns_error(code, message), headers={"Content-Type": "text/xml"}
        ) as stub,
        open_sns_sms_sender(endpoint_url=stub.endpoint) as sender,
    ):
        with pytest.raises(expected, match=code) as caught:
            await sender.send(sms())
    assert len(stub.requests) == 2  # the check, one Publish: never retried by the SDK
    assert "14155550100" not in str(caught.value)  # SNS's text is never passed on


async def test_no_answer_to_publish_is_uncertain(aws_env: None) -> None:
    async with (
        ScriptedSns("hang") as stub,
        open_sns_sms_sender(endpoint_url=stub.endpoint, timeout=0.5) as sender,
    ):
        with pytest.raises(UncertainSendError):
            await sender.send(sms())
    assert len(stub.requests) == 2


async def test_connection_dropped_after_publish_is_uncertain(aws_env: None) -> None:
    async with (
        ScriptedSns("close") as stub,
        open_sns_sms_sender(endpoint_url=stub.endpoint) as sender,
    ):
        with pytest.raises(UncertainSendError):
            await sender.send(sms())
    assert len(stub.requests) == 2


async def test_no_answer_to_the_check_is_only_retryable(aws_env: None) -> None:
    # Nothing is sent by a check: the SMS can be tried again without any doubt.
    async with (
        HttpStub("hang") as stub,
        open_sns_sms_sender(endpoint_url=stub.endpoint, timeout=0.5) as sender,
    ):
        with pytest.raises(RetryableError) as caught:
            await sender.send(sms())
    assert not isinstance(caught.value, UncertainSendError | ProviderUnreachableError)
    assert len(stub.requests) == 1  # no Publish after a failed check


async def test_throttled_check_sends_nothing(aws_env: None) -> None:
    async with (
        HttpStub(status=429, body=sns_error("Throttled", "slow down")) as stub,
        open_sns_sms_sender(endpoint_url=stub.endpoint) as sender,
    ):
        with pytest.raises(ThrottledError):
            await sender.send(sms())
    assert len(stub.requests) == 1


async def test_nothing_listening_is_unreachable(aws_env: None) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    async with open_sns_sms_sender(endpoint_url=endpoint, timeout=2) as sender:
        with pytest.raises(ProviderUnreachableError):
            await sender.send(sms())

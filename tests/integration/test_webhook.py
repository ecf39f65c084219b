"""The webhook channel against a local aiohttp receiver on 127.0.0.1: what is POSTed and
signed, each answer's error class, SSRF refusals, and bad input failing one email."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from delivery_server.adapters.channels.webhook import (
    MAX_BODY_BYTES,
    WebhookRenderer,
    WebhookRequest,
    check_ref,
    check_url,
    job_secret,
    open_webhook_channel,
    refused_address,
    webhook_rules,
)
from delivery_server.channels import Channel
from delivery_server.errors import (
    PermanentError,
    RetryableError,
    TargetRefusedError,
    UncertainSendError,
)
from delivery_server.models import (
    AttachmentRef,
    ClaimedEmail,
    Email,
    EmailStatus,
    Job,
    JobStatus,
    Template,
)
from delivery_server.renderer import Renderer
from tests.contract.channels import WEBHOOK_SECRET, webhook_settings
from tests.support.http_stub import serving

pytestmark = pytest.mark.timeout(30)
TEMPLATE = Template(
    "notice", "en", 3, "Hi {{ name }}", "Balance {{ balance }}", "<b>{{ name }}</b>"
)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@contextlib.asynccontextmanager
async def receiving(handler: Handler) -> AsyncIterator[str]:
    app = web.Application(client_max_size=2 * MAX_BODY_BYTES)
    app.router.add_post("/hook", handler)
    async with serving(app) as port:
        yield f"http://127.0.0.1:{port}/hook"


def claimed(url: str, ref: str = "customer-1", **email: Any) -> ClaimedEmail:
    job = Job(
        7, "n", JobStatus.PROCESSING, "notice", "bank@example.com", channel="webhook", target=url
    )
    values: dict[str, Any] = {
        "variables": {"name": "Ann", "balance": "12.00", "unused": "x"}
    } | email
    return ClaimedEmail(Email(1234, 7, ref, status=EmailStatus.SENDING, **values), job)


@contextlib.asynccontextmanager
async def channel(**overrides: Any) -> AsyncIterator[Channel[WebhookRequest]]:
    async with open_webhook_channel(
        webhook_settings(send_timeout=0.5, **overrides), Renderer()
    ) as opened:
        yield opened


async def post(url: str, **overrides: Any) -> str:
    async with channel(**overrides) as webhook:
        outgoing = await webhook.renderer.render(claimed(url), TEMPLATE)
        return await webhook.sender.send(outgoing)


async def test_the_post_carries_the_rendered_fields_signed_with_the_jobs_secret() -> None:
    seen: list[tuple[dict[str, str], bytes]] = []

    async def hook(request: web.Request) -> web.Response:
        seen.append((dict(request.headers), await request.read()))
        return web.Response(status=200, headers={"X-Request-Id": "abc-1"})

    async with receiving(hook) as url:
        assert await post(url) == "webhook-abc-1"
    (headers, body) = seen[0]
    secret = hmac.new(
        WEBHOOK_SECRET.encode(), b"delivery-webhook-job:7", hashlib.sha256
    ).hexdigest()
    assert secret == job_secret(WEBHOOK_SECRET.encode(), 7)
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Delivery-Signature"] == expected
    assert headers["Idempotency-Key"] == "1234"
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {
        "v": 1,
        "job_id": 7,
        "email_id": 1234,
        "ref": "customer-1",
        "template": {"name": "notice", "locale": "en", "version": 3},
        "subject": "Hi Ann",
        "text": "Balance 12.00",
        "html": "<b>Ann</b>",
        "variables": {"name": "Ann", "balance": "12.00"},  # only what the template names
    }


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (201, None),
        (204, None),
        (429, RetryableError),
        (500, RetryableError),
        (503, RetryableError),
        (400, PermanentError),
        (404, PermanentError),
        (422, PermanentError),
        (302, PermanentError),  # never followed: it could lead off the allowed hosts
    ],
)
async def test_each_answer_maps_onto_the_error_tree(
    status: int, error: type[Exception] | None
) -> None:
    async def hook(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=status, headers={"Location": "http://169.254.169.254/"})

    async with receiving(hook) as url:
        if error is None:
            assert await post(url) == "webhook-1234"
        else:
            with pytest.raises(error) as raised:
                await post(url)
            assert type(raised.value) is error


async def test_no_answer_after_the_request_was_sent_is_uncertain() -> None:
    async def hook(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.Event().wait()
        raise AssertionError

    async with receiving(hook) as url:
        with pytest.raises(UncertainSendError):
            await post(url)


async def test_a_connection_dropped_after_the_request_was_read_is_uncertain() -> None:
    async def hook(request: web.Request) -> web.Response:
        await request.read()
        assert request.transport is not None
        request.transport.close()
        await asyncio.Event().wait()
        raise AssertionError

    async with receiving(hook) as url:
        with pytest.raises(UncertainSendError):
            await post(url)


async def test_a_receiver_that_is_not_listening_costs_an_attempt() -> None:
    async def hook(request: web.Request) -> web.Response:
        raise AssertionError

    async with receiving(hook) as url:
        pass  # closed again: nothing listens on its port now
    with pytest.raises(RetryableError) as raised:
        await post(url)
    assert type(raised.value) is RetryableError


async def test_loopback_and_private_addresses_are_refused_without_the_setting() -> None:
    async def hook(request: web.Request) -> web.Response:
        raise AssertionError("nothing may reach a loopback receiver")

    async with receiving(hook) as url:
        https = url.replace("http://", "https://")
        named = https.replace("127.0.0.1", "localhost")
        async with channel(
            webhook_allow_private=False, webhook_hosts="127.0.0.1,localhost"
        ) as webhook:
            for target in (https, named):
                with pytest.raises(PermanentError, match="non-public address"):
                    await webhook.sender.send(WebhookRequest(target, b"{}", (), 7, 1))


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "192.168.0.1",
        "172.16.5.4",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "::1",
        "fe80::1",
        "fd00:ec2::254",
        "::ffff:127.0.0.1",
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert refused_address(address)


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"])
def test_public_addresses_pass(address: str) -> None:
    assert not refused_address(address)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        (None, "needs its https:// URL"),
        ("https://evil.example/hook", "DELIVERY_WEBHOOK_HOSTS"),
        ("http://hooks.example/hook", "must be an https:// URL"),
        ("http://127.0.0.1:9/hook", "must be an https:// URL"),  # loopback, but not allowed
        ("https://user:pw@hooks.example/hook", "credentials"),
        ("https://hooks.example:99999/hook", "not a valid URL"),
    ],
)
def test_targets_outside_the_settings_are_refused_naming_why(url: str | None, reason: str) -> None:
    with pytest.raises(TargetRefusedError, match=reason):
        check_url(url, frozenset({"hooks.example", "127.0.0.1"}), allow_private=False)


def test_jobs_create_needs_the_signing_key() -> None:
    rules = webhook_rules(webhook_settings(webhook_secret=None))
    with pytest.raises(TargetRefusedError, match="DELIVERY_WEBHOOK_SECRET"):
        rules.check_target("http://127.0.0.1:8/hook")
    assert rules.recipient_field == "ref"


@pytest.mark.parametrize("ref", ["", "   ", "a" * 321, "bell\x07", "line\nbreak"])
def test_bad_refs_are_refused_without_quoting_them(ref: str) -> None:
    with pytest.raises(PermanentError) as raised:
        check_ref(ref)
    assert ref.strip() == "" or ref not in str(raised.value)


async def bad_render(url: str, ref: str = "customer-1", **email: Any) -> None:
    settings = webhook_settings()
    rules = webhook_rules(settings)
    renderer = WebhookRenderer(Renderer(), rules, WEBHOOK_SECRET.encode())
    await renderer.render(claimed(url, ref, **email), TEMPLATE)


async def test_bad_input_fails_one_email_with_a_clear_reason() -> None:
    url = "http://127.0.0.1:8/hook"
    with pytest.raises(PermanentError, match="over the 1000000 limit"):
        await bad_render(url, variables={"name": "Ann", "balance": "9" * 600_000})
    with pytest.raises(PermanentError, match="over the 2000000 limit"):  # a 10 MB value
        await bad_render(url, variables={"name": "Ann", "balance": "9" * 10_000_000})
    with pytest.raises(PermanentError, match="attachments"):
        await bad_render(url, attachments=(AttachmentRef("file:a.pdf", "a.pdf"),))
    with pytest.raises(PermanentError, match="DELIVERY_WEBHOOK_HOSTS"):
        await bad_render("https://elsewhere.example/hook")
    with pytest.raises(PermanentError, match="control characters"):
        await bad_render(url, ref="bad\x00ref")

"""Channels opened when first needed (issue 14): email is open from the start, every other
channel is opened once by the first email of one of its jobs, its failure is that email's
error (``RetryableError`` or ``PermanentError`` by cause) and stops nothing else, and an
email-only server never imports the other channels' adapters.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError, NoRegionError

from delivery_server.app.channels import ChannelContext, open_channels, opening_error
from delivery_server.channels import Channel, ChannelRules, Channels, no_target
from delivery_server.errors import (
    ConfigError,
    PermanentError,
    RetryableError,
    ThrottledError,
)
from delivery_server.models import ClaimedEmail, Template
from delivery_server.renderer import Renderer
from delivery_server.sendgate import SendGate
from delivery_server.settings import Settings, load_settings
from tests.support.imports import loaded, modules_of

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[2]


class _Unused:
    """Renderer and sender of a channel these tests never send through."""

    async def render(self, claimed: ClaimedEmail, template: Template) -> object:
        raise AssertionError("not sent through")

    async def send(self, outgoing: object) -> str:
        raise AssertionError("not sent through")

    async def max_send_rate(self) -> float | None:
        return None


def channel(name: str) -> Channel[Any]:
    rules = ChannelRules(name, "ref", str, no_target("none"))
    return Channel(rules, _Unused(), _Unused(), SendGate())


class Opener:
    """A channel's opener that counts its calls, fails while ``failures`` lasts, and
    holds each opening until ``release`` is set."""

    def __init__(self, name: str, failures: list[Exception] | None = None) -> None:
        self.name = name
        self.failures = failures or []
        self.calls = 0
        self.release = asyncio.Event()
        self.release.set()
        self.started = asyncio.Event()
        # Set as an opening ends: whoever waits on it runs once the opening has finished.
        self.finished = asyncio.Event()

    async def __call__(self) -> Channel[Any]:
        self.calls += 1
        self.started.set()
        await self.release.wait()
        self.finished.set()
        if self.failures:
            raise self.failures.pop(0)
        return channel(self.name)


async def test_concurrent_first_emails_share_one_opening() -> None:
    sms = Opener("sms")
    sms.release.clear()
    channels = Channels([channel("email")], {"sms": sms})
    assert channels.names == ("email", "sms")
    assert channels.get("sms") is None
    waiting = [asyncio.create_task(channels.of_job(n, "sms")) for n in range(1, 6)]
    await sms.started.wait()
    sms.release.set()
    opened = await asyncio.gather(*waiting)
    assert sms.calls == 1
    assert all(c is opened[0] for c in opened)
    assert channels.get("sms") is opened[0]
    # Open now: nothing opens it again.
    assert await channels.of_job(10, "sms") is opened[0]
    assert sms.calls == 1


async def test_a_failed_opening_is_the_error_of_the_emails_waiting_and_the_next_opens_again() -> (
    None
):
    sms = Opener("sms", [RetryableError("channel 'sms' could not be opened: unreachable")])
    sms.release.clear()
    email = channel("email")
    channels = Channels([email], {"sms": sms})
    waiting = [asyncio.create_task(channels.of_job(n, "sms")) for n in (1, 2)]
    await sms.started.wait()
    sms.release.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert [type(r) for r in results] == [RetryableError, RetryableError]
    assert "could not be opened" in str(results[0])
    assert channels.get("sms") is None
    # The other channels are untouched, and the next email opens the channel again.
    assert await channels.of_job(3, "email") is email
    assert (await channels.of_job(4, "sms")).name == "sms"
    assert sms.calls == 2


async def test_an_email_cancelled_while_waiting_leaves_the_opening_to_the_others() -> None:
    sms = Opener("sms")
    sms.release.clear()
    channels = Channels([channel("email")], {"sms": sms})
    first = asyncio.create_task(channels.of_job(1, "sms"))
    second = asyncio.create_task(channels.of_job(2, "sms"))
    await sms.started.wait()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    sms.release.set()
    assert (await second).name == "sms"
    assert sms.calls == 1


async def test_a_channel_not_enabled_fails_its_email_permanently() -> None:
    channels = Channels([channel("email")], {"sms": Opener("sms")})
    with pytest.raises(PermanentError, match=r"'s3' is not enabled .*email, sms"):
        await channels.of_job(1, "s3")


async def test_a_channel_not_open_has_no_pause_of_its_own() -> None:
    email = channel("email")
    channels = Channels([email], {"sms": Opener("sms")})
    # A job not seen yet is taken for an email job; the sms channel is not open: no pause.
    assert channels.paused_for(7) == 0.0
    sms = await channels.of_job(7, "sms")
    sms.gate.pause_account()
    assert channels.paused_for(7) > 0
    assert channels.paused_for(8) == 0.0  # an email job: its channel is not paused
    email.gate.pause_account()
    assert channels.paused_for(8) > 0


async def test_closing_stops_the_openings_under_way_and_opens_nothing_after() -> None:
    sms = Opener("sms")
    sms.release.clear()
    channels = Channels([channel("email")], {"sms": sms, "s3": Opener("s3")})
    waiting = asyncio.create_task(channels.of_job(1, "sms"))
    await sms.started.wait()
    await channels.aclose()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    with pytest.raises(ThrottledError, match="stopping"):
        await channels.of_job(2, "s3")


@pytest.mark.parametrize(
    ("cause", "expected"),
    [
        (
            ConfigError("configuration error: DELIVERY_SFTP_KNOWN_HOSTS: no such file"),
            PermanentError,
        ),
        (NoRegionError(), PermanentError),
        (ValueError("Invalid endpoint: nowhere"), PermanentError),
        (ConnectionRefusedError(111, "refused"), RetryableError),
        (TimeoutError(), RetryableError),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:9"), RetryableError),
        (RetryableError("unreachable"), RetryableError),
    ],
    ids=lambda value: value.__name__ if isinstance(value, type) else type(value).__name__,
)
def test_an_opening_fails_permanently_for_bad_configuration_else_retryably(
    cause: Exception, expected: type[Exception]
) -> None:
    error = opening_error("sftp", cause)
    assert type(error) is expected
    assert str(error).startswith("channel 'sftp' could not be opened: ")


@pytest.fixture
def ses_settings(aws_env: None, tmp_path: Path) -> Settings:
    return load_settings(
        None,
        sender="ses",
        aws_endpoint_url="http://127.0.0.1:9",  # never reached: nothing is sent
        drop_sftp_hosts="files.example.com",
        sftp_password="secret",
        sftp_known_hosts=tmp_path / "missing_known_hosts",
        outbox_dir=tmp_path / "outbox",
    )


@pytest.fixture
async def server_channels(ses_settings: Settings) -> AsyncIterator[Channels]:
    renderer = Renderer(ses_settings.max_rendered_bytes)
    context = ChannelContext(ses_settings, None, renderer, SendGate(), None)
    async with open_channels(context) as channels:
        yield channels


async def test_a_server_opens_email_at_start_and_the_others_when_needed(
    server_channels: Channels,
) -> None:
    assert server_channels.names == ("email", "webhook", "sms", "s3", "sftp")
    assert server_channels.get("email") is not None
    assert [n for n in server_channels.names if server_channels.get(n)] == ["email"]
    webhook = await server_channels.of_job(1, "webhook")
    assert webhook.name == "webhook"
    assert server_channels.get("webhook") is webhook


async def test_a_channel_that_cannot_open_fails_its_emails_and_stops_nothing_else(
    server_channels: Channels,
) -> None:
    with pytest.raises(PermanentError, match=r"'sftp' could not be opened: .*KNOWN_HOSTS"):
        await server_channels.of_job(1, "sftp")
    assert server_channels.get("sftp") is None
    assert (await server_channels.of_job(2, "email")).name == "email"
    assert (await server_channels.of_job(3, "s3")).name == "s3"


# Imported by a server only when a job of its channel is sent; never by email alone.
OTHER_CHANNELS_MODULES = (
    "delivery_server.adapters.channels",
    "delivery_server.adapters.aws.sns_sms",
    "delivery_server.adapters.aws.s3_drop",
    "delivery_server.adapters.sftp_drop",
    "delivery_server.sms",
    "asyncssh",
)  # phonenumbers: imported when a number is checked (test_server_imports)

_START_EMAIL_ONLY = """
import asyncio, json, sys

from delivery_server.app import roles  # what a server imports to start
from delivery_server.app.channels import ChannelContext, open_channels
from delivery_server.renderer import Renderer
from delivery_server.sendgate import SendGate
from delivery_server.settings import load_settings


async def main() -> None:
    settings = load_settings(None)
    context = ChannelContext(settings, None, Renderer(), SendGate(), None)
    async with open_channels(context) as channels:
        at_start = sorted(sys.modules)
        for name in channels.names:
            await channels.of_job(1, name)
        print(json.dumps({"at_start": at_start, "every_channel": sorted(sys.modules)}))


asyncio.run(main())
"""


def test_an_email_only_server_imports_no_other_channel(aws_env: None, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DELIVERY_")}
    env |= {
        "DELIVERY_SENDER": "ses",
        "DELIVERY_AWS_ENDPOINT_URL": "http://127.0.0.1:9",
        "DELIVERY_OUTBOX_DIR": str(tmp_path / "outbox"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
    }
    modules = modules_of(_START_EMAIL_ONLY, cwd=tmp_path, env=env)

    assert loaded(modules["at_start"], OTHER_CHANNELS_MODULES) == set()
    # The check sees them when they are imported: opening every channel imports each.
    assert loaded(modules["every_channel"], OTHER_CHANNELS_MODULES) == set(OTHER_CHANNELS_MODULES)

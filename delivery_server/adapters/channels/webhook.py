"""The webhook channel: a signed HTTPS POST of each rendered email as JSON.

The door to WhatsApp/push providers and in-house systems (DESIGN §12). A job's
``--target`` is the URL (its host listed in ``DELIVERY_WEBHOOK_HOSTS``); each recipient's
``ref`` column (stored in ``to_address``) says whom the receiver should deliver to.

The body (UTF-8 JSON, keys in this order)::

    {"v": 1, "job_id": 7, "email_id": 1234, "ref": "customer-42",
     "template": {"name": "statement", "locale": "en", "version": 3},
     "subject": "...", "text": "...", "html": "..." | null,
     "variables": {...only the variables the template names...}}

Headers: ``Content-Type: application/json``, ``Idempotency-Key: <email id>`` (the same on
every attempt: a receiver that keeps it for a day never delivers twice),
``X-Delivery-Job-Id``, ``X-Delivery-Email-Id`` and ``X-Delivery-Signature:
sha256=<hex>``, the HMAC-SHA256 of the exact body bytes under the job's secret.

The job's secret is never stored: it is HMAC-SHA256(``DELIVERY_WEBHOOK_SECRET``,
``"delivery-webhook-job:<job id>"``) in hex, derived when needed. ``jobs create`` prints
it once for the receiver's operator (like ``tokens create``); nothing logs it, and a
leaked secret of one job forges nothing for another. Rotating ``DELIVERY_WEBHOOK_SECRET``
changes every job's secret.

SSRF: the host must be listed; every address it resolves to (and an IP literal) must be
public — loopback, private, link-local (cloud metadata at 169.254.169.254), shared,
reserved and multicast addresses are refused unless ``DELIVERY_WEBHOOK_ALLOW_PRIVATE``
(tests, laptops) — and the connection goes to exactly the addresses checked (the check is
the connector's resolver), so a DNS answer cannot change between the check and the
connect. Redirects are not followed. Plain ``http://`` only for a loopback host with
``DELIVERY_WEBHOOK_ALLOW_PRIVATE``.

Errors (one attempt per call; no automatic retries)::

    what happened                                               error
    ----------------------------------------------------------  ------------------------
    2xx                                                         sent
    429, 5xx                                                    ``RetryableError``
    any other 4xx; 3xx (redirects are not followed)             ``PermanentError``
    host not listed, address not public, body over 1 MB,
    a ref that is empty/too long/has control characters,
    attachments on the email                                    ``PermanentError``
    DNS failure, connection refused, connect or TLS handshake
    failure or timeout (nothing was sent)                       ``RetryableError``
    read timeout, connection reset or closed after the
    request was written (the receiver may have it)              ``UncertainSendError``

Connect failures cost an attempt rather than pausing the channel: one receiver being down
must not hold back the webhook jobs of every other receiver.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import ipaddress
import json
import socket
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from delivery_server.channels import Channel, ChannelRules
from delivery_server.errors import (
    PermanentError,
    RetryableError,
    TargetRefusedError,
    UncertainSendError,
    UsageError,
)
from delivery_server.models import ClaimedEmail, Template
from delivery_server.renderer import Renderer
from delivery_server.settings import Settings

HOSTS_SETTING = "DELIVERY_WEBHOOK_HOSTS"
KEY_SETTING = "DELIVERY_WEBHOOK_SECRET"
PRIVATE_SETTING = "DELIVERY_WEBHOOK_ALLOW_PRIVATE"
MAX_BODY_BYTES = 1_000_000
MAX_REF_CHARS = 320  # what ``delivery_email.to_address`` holds
_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_PROVIDER_ID_CHARS = 200


def check_ref(value: str) -> str:
    """A recipient's ``ref``: non-empty, at most 320 characters, printable."""
    ref = value.strip()
    if not ref:
        raise PermanentError("missing ref")
    if len(ref) > MAX_REF_CHARS:
        raise PermanentError(f"ref is longer than {MAX_REF_CHARS} characters")
    if not ref.isprintable():
        raise PermanentError("ref contains control characters")
    return ref


def check_url(url: str | None, hosts: frozenset[str], allow_private: bool) -> str:
    """The job's webhook URL, checked against the settings (``TargetRefusedError``)."""
    if not url:
        raise TargetRefusedError(
            f"--target: a webhook job needs its https:// URL ({HOSTS_SETTING})"
        )
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        _ = parts.port  # a bad port raises ValueError
    except ValueError:
        raise TargetRefusedError("--target: not a valid URL") from None
    if parts.username is not None or parts.password is not None:
        raise TargetRefusedError("--target: credentials in the URL are refused (it is stored)")
    loopback = host in _LOOPBACK_NAMES
    if not (parts.scheme == "https" or (parts.scheme == "http" and loopback and allow_private)):
        raise TargetRefusedError(
            f"--target: must be an https:// URL (plain http only for a loopback host with "
            f"{PRIVATE_SETTING})"
        )
    if not host or host not in hosts:
        raise TargetRefusedError(f"--target: host not allowed by {HOSTS_SETTING}")
    if parts.fragment:
        raise TargetRefusedError("--target: a URL fragment is not sent; leave it out")
    return url


def webhook_rules(settings: Settings) -> ChannelRules:
    """What ``jobs create --channel webhook`` checks (the secret must be configured)."""
    hosts, allow_private = settings.webhook_host_set, settings.webhook_allow_private

    def check_target(url: str | None) -> str | None:
        checked = check_url(url, hosts, allow_private)
        if settings.webhook_secret is None:
            raise TargetRefusedError(
                f"--channel webhook: {KEY_SETTING} is not set (each job's signing "
                "secret is derived from it)"
            )
        return checked

    return ChannelRules(
        name="webhook", recipient_field="ref", check_recipient=check_ref, check_target=check_target
    )


def job_secret(key: bytes, job_id: int) -> str:
    """The signing secret of one job, derived from ``DELIVERY_WEBHOOK_SECRET``."""
    return hmac.new(key, f"delivery-webhook-job:{job_id}".encode(), hashlib.sha256).hexdigest()


def signature(secret: str, body: bytes) -> str:
    """The ``X-Delivery-Signature`` value of a body (what a receiver recomputes)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    """One POST, ready to go (and an ``OutboxForm`` for embedded mode)."""

    url: str
    body: bytes
    headers: tuple[tuple[str, str], ...]
    job_id: int
    email_id: int

    @property
    def outbox_stem(self) -> str:
        return f"{self.job_id}-{self.email_id}"

    def outbox_files(self) -> Sequence[tuple[str, bytes]]:
        record = {
            "url": self.url,
            "headers": dict(self.headers),
            "body": json.loads(self.body),
        }
        return [(".webhook.json", json.dumps(record, ensure_ascii=False, indent=2).encode())]


class WebhookRenderer:
    """``ChannelRenderer[WebhookRequest]``: the template's fields as a signed JSON body."""

    def __init__(self, renderer: Renderer, rules: ChannelRules, key: bytes | None) -> None:
        self._renderer = renderer
        self._rules = rules
        self._key = key

    async def render(self, claimed: ClaimedEmail, template: Template) -> WebhookRequest:
        email, job = claimed.email, claimed.job
        ref = self._rules.check_recipient(email.to_address)
        try:
            # Again at the send: the settings may have changed since jobs create.
            url = self._rules.check_target(job.target)
        except UsageError as exc:
            raise PermanentError(str(exc).removeprefix("--target: ")) from None
        assert url is not None  # check_url returns the URL or raises
        if self._key is None:  # check_target refuses without it
            raise PermanentError(f"{KEY_SETTING} is not set")
        if email.attachments:
            raise PermanentError("the webhook channel does not carry attachments")
        content = self._renderer.render(template, email.variables)
        names = self._renderer.variable_names(template)
        payload: dict[str, Any] = {
            "v": 1,
            "job_id": job.id,
            "email_id": email.id,
            "ref": ref,
            "template": {
                "name": template.name,
                "locale": template.locale,
                "version": template.version,
            },
            "subject": content.subject,
            "text": content.text_body,
            "html": content.html_body,
            "variables": {k: v for k, v in email.variables.items() if k in names},
        }
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        if len(body) > MAX_BODY_BYTES:
            raise PermanentError(
                f"webhook body is {len(body)} bytes, over the {MAX_BODY_BYTES} limit"
            )
        headers = (
            ("Content-Type", "application/json"),
            ("Idempotency-Key", str(email.id)),
            ("X-Delivery-Job-Id", str(job.id)),
            ("X-Delivery-Email-Id", str(email.id)),
            ("X-Delivery-Signature", signature(job_secret(self._key, job.id), body)),
        )
        return WebhookRequest(url, body, headers, job.id, email.id)


class AddressRefusedError(OSError):
    """A webhook host resolved to an address that is not public."""


def refused_address(address: str) -> bool:
    """Whether an address is loopback, private, link-local, shared, reserved or multicast."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


class PublicOnlyResolver(AbstractResolver):
    """Resolves as the default resolver does, then refuses non-public answers: the
    connector connects to exactly what this returns, so the check cannot be raced."""

    def __init__(self, allow_private: bool) -> None:
        self._inner = aiohttp.ThreadedResolver()
        self._allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if not self._allow_private and any(refused_address(r["host"]) for r in results):
            raise AddressRefusedError(
                f"webhook host resolves to a non-public address ({PRIVATE_SETTING})"
            )
        return results

    async def close(self) -> None:
        await self._inner.close()


class WebhookSender:
    """``ChannelSender[WebhookRequest]`` over one pooled aiohttp session."""

    def __init__(self, session: aiohttp.ClientSession, allow_private: bool) -> None:
        self._session = session
        self._allow_private = allow_private

    async def max_send_rate(self) -> float | None:
        return None

    async def send(self, outgoing: WebhookRequest) -> str:
        self._check_literal(outgoing.url)
        try:
            async with self._session.post(
                outgoing.url,
                data=outgoing.body,
                headers=dict(outgoing.headers),
                allow_redirects=False,
            ) as response:
                status = response.status
                answered_id = response.headers.get("X-Request-Id")
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, AddressRefusedError):
                raise PermanentError(str(exc.os_error)) from None
            raise RetryableError(f"webhook receiver not reached ({type(exc).__name__})") from None
        except aiohttp.ConnectionTimeoutError:
            raise RetryableError("webhook receiver not reached (connect timeout)") from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            # The request was written (or being written): the receiver may have it.
            raise UncertainSendError(
                f"webhook answer lost after the request was sent ({type(exc).__name__})"
            ) from None
        return _outcome(status, answered_id, outgoing.email_id)

    def _check_literal(self, url: str) -> None:
        """An IP literal never reaches the resolver: check it here."""
        host = urlsplit(url).hostname or ""
        try:
            refused = refused_address(host)
        except ValueError:
            return  # a name: the resolver checks what it resolves to
        if refused and not self._allow_private:
            raise PermanentError(f"webhook host is a non-public address ({PRIVATE_SETTING})")


def _outcome(status: int, answered_id: str | None, email_id: int) -> str:
    if 200 <= status < 300:
        if answered_id and answered_id.isprintable() and answered_id.isascii():
            return f"webhook-{answered_id[:_PROVIDER_ID_CHARS]}"
        return f"webhook-{email_id}"
    if status == 429 or status >= 500:
        raise RetryableError(f"webhook receiver answered {status}")
    if 300 <= status < 400:
        raise PermanentError(f"webhook receiver answered {status} (redirects are not followed)")
    raise PermanentError(f"webhook receiver refused the request ({status})")


@contextlib.asynccontextmanager
async def open_webhook_channel(
    settings: Settings, renderer: Renderer
) -> AsyncIterator[Channel[WebhookRequest]]:
    """The webhook channel: POSTs, or with ``DELIVERY_SENDER=outbox`` ``.webhook.json``
    files in the outbox."""
    rules = webhook_rules(settings)
    secret = settings.webhook_secret
    key = secret.get_secret_value().encode() if secret is not None else None
    webhook_renderer = WebhookRenderer(renderer, rules, key)
    if settings.sender == "outbox":
        from delivery_server.adapters.channel_outbox import ChannelOutbox

        yield Channel(rules, webhook_renderer, ChannelOutbox(settings.outbox_dir))
        return
    allow_private = settings.webhook_allow_private
    connector = aiohttp.TCPConnector(
        resolver=PublicOnlyResolver(allow_private), limit=settings.concurrency
    )
    timeout = aiohttp.ClientTimeout(
        total=None, connect=settings.send_timeout, sock_read=settings.send_timeout
    )
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, headers={"User-Agent": "delivery-server"}
    ) as session:
        yield Channel(rules, webhook_renderer, WebhookSender(session, allow_private))

"""SNS HTTPS deliveries checked before anything is believed (``POST /ses/events``, DESIGN §5).

A message is accepted only when every check below holds, in this order; the first that
fails decides ``SnsMessageRefused.outcome`` (nothing is fetched for a message refused
before the certificate):

* a known ``Type`` with every field it signs, as strings → ``malformed``;
* ``Signature``, ``SignatureVersion`` 1 or 2, ``SigningCertURL`` present → ``forged``;
* ``TopicArn`` in the allowed set (an empty set refuses all) → ``refused_topic``;
* ``Timestamp`` at most ``max_age`` old and ``max_future`` ahead → ``expired``;
* ``SigningCertURL`` https, its host fully matching ``sns.<region>.amazonaws.com``,
  no userinfo, the default port, a path ending ``.pem``, no query → ``refused_cert_url``;
* the certificate fetched (cached by URL, fetched once) → ``unavailable`` on a network
  error, timeout or 5xx, ``forged`` on anything else that is not an RSA certificate
  valid now;
* the signature over AWS's string to sign (SHA1withRSA for v1, SHA256withRSA for v2)
  → ``forged``;
* for a ``SubscriptionConfirmation``: ``SubscribeURL`` under the same host rule, with
  ``Action=ConfirmSubscription`` for the message's topic → ``refused_subscribe_url``;
  the confirming GET answered 200 → ``unavailable``.

The host check is a full match on the parsed host, not a substring: the django-ses CVE
accepted any URL containing ``amazonaws.com``. The certificate's authenticity rests on the
https fetch from that host, as AWS's SDKs do; SNS's certificates chain to a public CA, so
no pinning is attempted. Refusal texts name the field at fault, never its value.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING

import aiohttp
from yarl import URL

from delivery_server.errors import SnsMessageRefused, SnsRefusal

if TYPE_CHECKING:
    # Imported where a signature is checked: cryptography's bindings cost a process that
    # never receives an SNS message (a sender) ~10 MB.
    from cryptography import x509

SNS_HOST = re.compile(r"sns\.[a-z]{2}(?:-[a-z]+)+-[0-9]+\.amazonaws\.com")
"""``sns.<region>.amazonaws.com``: ``sns.us-east-1.amazonaws.com``, ``sns.us-gov-west-1...``."""

# AWS's string to sign: these names, in byte order, each followed by its value; ``Subject``
# only when the message has one.
_SIGNED_FIELDS: dict[str, tuple[str, ...]] = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type",
    ),
    "UnsubscribeConfirmation": (
        "Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type",
    ),
}  # fmt: skip
_OPTIONAL_FIELDS = frozenset({"Subject"})
_DEFAULT_PORTS = {"https": 443, "http": 80}
# SignatureVersion 1 is SHA1withRSA by AWS's definition: we only ever verify with it.
_DIGESTS = {"1": "SHA1", "2": "SHA256"}  # names in cryptography's hashes module


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class SnsMessage:
    """One SNS message as POSTed, its signed fields kept verbatim for the signature."""

    type: str
    message_id: str
    topic_arn: str
    message: str
    timestamp: datetime
    signed_fields: tuple[tuple[str, str], ...]
    signature_version: str
    signature: bytes
    signing_cert_url: str
    subscribe_url: str | None


def _text(document: Mapping[str, object], name: str, outcome: SnsRefusal) -> str:
    value = document.get(name)
    if not isinstance(value, str) or not value:
        raise SnsMessageRefused(outcome, f"SNS message has no {name} string")
    return value


def parse_sns_message(document: Mapping[str, object]) -> SnsMessage:
    """Read an SNS HTTP(S) message body (already JSON-decoded) without trusting it yet."""
    kind = document.get("Type")
    if not isinstance(kind, str) or kind not in _SIGNED_FIELDS:
        raise SnsMessageRefused("malformed", "SNS message Type is not one this endpoint reads")
    signed: list[tuple[str, str]] = []
    for name in _SIGNED_FIELDS[kind]:
        # A null Subject is how some publishers say "none"; AWS's SDKs leave it out too.
        if name in _OPTIONAL_FIELDS and document.get(name) is None:
            continue
        signed.append((name, _text(document, name, "malformed")))
    fields = dict(signed)
    try:
        timestamp = datetime.fromisoformat(fields["Timestamp"])
    except ValueError:
        raise SnsMessageRefused("malformed", "SNS message Timestamp is not ISO 8601") from None
    if timestamp.tzinfo is None:
        raise SnsMessageRefused("malformed", "SNS message Timestamp has no time zone")
    version = _text(document, "SignatureVersion", "forged")
    if version not in _DIGESTS:
        raise SnsMessageRefused("forged", "SNS message SignatureVersion is not 1 or 2")
    try:
        signature = base64.b64decode(_text(document, "Signature", "forged"), validate=True)
    except binascii.Error:
        raise SnsMessageRefused("forged", "SNS message Signature is not base64") from None
    return SnsMessage(
        type=kind,
        message_id=fields["MessageId"],
        topic_arn=fields["TopicArn"],
        message=fields["Message"],
        timestamp=timestamp,
        signed_fields=tuple(signed),
        signature_version=version,
        signature=signature,
        signing_cert_url=_text(document, "SigningCertURL", "forged"),
        subscribe_url=fields.get("SubscribeURL"),
    )


def string_to_sign(message: SnsMessage) -> bytes:
    """The bytes SNS signed: ``name\\nvalue\\n`` for each signed field, in AWS's order."""
    return "".join(f"{name}\n{value}\n" for name, value in message.signed_fields).encode()


def verify_signature(message: SnsMessage, certificate: x509.Certificate) -> None:
    """Raise ``SnsMessageRefused("forged")`` unless ``certificate``'s key signed ``message``."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise SnsMessageRefused("forged", "SNS signing certificate has no RSA key")
    digest: hashes.HashAlgorithm = getattr(hashes, _DIGESTS[message.signature_version])()
    try:
        key.verify(message.signature, string_to_sign(message), padding.PKCS1v15(), digest)
    except InvalidSignature:
        raise SnsMessageRefused("forged", "SNS message Signature does not verify") from None


@dataclass(frozen=True)
class SnsHostPolicy:
    """Where SNS's certificates and confirmation links may live. Only tests change it.

    ``port`` ``None`` means the scheme's default port (443 for https)."""

    scheme: str = "https"
    host: re.Pattern[str] = SNS_HOST
    port: int | None = None

    def signing_cert_url(self, text: str) -> URL:
        """``text`` parsed, or ``refused_cert_url`` naming the rule it breaks."""
        url = self._on_sns_host(text, "SigningCertURL", "refused_cert_url")
        if not url.path.endswith(".pem") or url.query_string:
            raise SnsMessageRefused("refused_cert_url", "SigningCertURL is not a .pem path")
        return url

    def subscribe_url(self, text: str, topic_arn: str) -> URL:
        """``text`` parsed, or ``refused_subscribe_url``: SNS's confirmation link only."""
        url = self._on_sns_host(text, "SubscribeURL", "refused_subscribe_url")
        if url.query.get("Action") != "ConfirmSubscription" or (
            url.query.get("TopicArn") != topic_arn
        ):
            raise SnsMessageRefused(
                "refused_subscribe_url",
                "SubscribeURL does not confirm a subscription to this message's topic",
            )
        return url

    def _on_sns_host(self, text: str, field: str, outcome: SnsRefusal) -> URL:
        # yarl strips surrounding whitespace silently: refuse what SNS would never send.
        if not text.isascii() or not text.isprintable() or " " in text:
            raise SnsMessageRefused(outcome, f"{field} has characters a URL cannot")
        try:
            url = URL(text)
        except ValueError:
            raise SnsMessageRefused(outcome, f"{field} is not a URL") from None
        if url.scheme != self.scheme:
            raise SnsMessageRefused(outcome, f"{field} is not {self.scheme}")
        if url.user is not None or url.password is not None:
            raise SnsMessageRefused(outcome, f"{field} carries userinfo")
        if url.raw_host is None or not self.host.fullmatch(url.raw_host):
            raise SnsMessageRefused(outcome, f"{field} host is not an SNS host")
        if url.port != (self.port or _DEFAULT_PORTS.get(self.scheme)):
            raise SnsMessageRefused(outcome, f"{field} port is not the allowed one")
        if url.fragment:
            raise SnsMessageRefused(outcome, f"{field} has a fragment")
        return url


class SigningCertificates:
    """SNS signing certificates by URL: each fetched once, at most ``capacity`` kept.

    Concurrent messages naming the same new URL share one fetch. Failures are not cached,
    so a certificate host that was briefly down is asked again by the next message."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        timeout: float = 5.0,
        max_bytes: int = 64 * 1024,
        capacity: int = 32,
    ) -> None:
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._max_bytes = max_bytes
        self._capacity = capacity
        self._cache: OrderedDict[str, x509.Certificate] = OrderedDict()
        self._fetching: dict[str, asyncio.Task[x509.Certificate]] = {}

    async def get(self, url: URL) -> x509.Certificate:
        """The certificate at ``url``; ``forged`` if it is not one, ``unavailable`` if
        the host could not be read."""
        key = str(url)
        certificate = self._cache.get(key)
        if certificate is not None:
            self._cache.move_to_end(key)
            return certificate
        task = self._fetching.get(key)
        if task is None:
            task = asyncio.create_task(self._fetch(url))
            self._fetching[key] = task
            task.add_done_callback(partial(self._fetched, key))
        # Shielded: a caller that goes away does not cancel the fetch the others await.
        return await asyncio.shield(task)

    def _fetched(self, key: str, task: asyncio.Task[x509.Certificate]) -> None:
        del self._fetching[key]
        if task.cancelled() or task.exception() is not None:
            return
        self._cache[key] = task.result()
        while len(self._cache) > self._capacity:
            self._cache.popitem(last=False)

    async def _fetch(self, url: URL) -> x509.Certificate:
        try:
            # No redirects: a redirect could lead off the host the URL was checked for.
            async with self._session.get(
                url, timeout=self._timeout, allow_redirects=False
            ) as response:
                if response.status != 200:
                    outcome: SnsRefusal = "unavailable" if response.status >= 500 else "forged"
                    raise SnsMessageRefused(
                        outcome, f"SigningCertURL answered HTTP {response.status}"
                    )
                body = await _read_capped(response.content, self._max_bytes)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SnsMessageRefused(
                "unavailable", f"SigningCertURL could not be read ({type(exc).__name__})"
            ) from None
        if body is None:
            raise SnsMessageRefused("forged", f"SigningCertURL is over {self._max_bytes} bytes")
        from cryptography import x509

        try:
            return x509.load_pem_x509_certificate(body)
        except ValueError:
            raise SnsMessageRefused("forged", "SigningCertURL is not a PEM certificate") from None


async def _read_capped(stream: aiohttp.StreamReader, max_bytes: int) -> bytes | None:
    """All of ``stream``, or ``None`` as soon as it passes ``max_bytes`` (nothing more read)."""
    body = bytearray()
    async for chunk in stream.iter_any():
        body += chunk
        if len(body) > max_bytes:
            return None
    return bytes(body)


class SnsVerifier:
    """Accepts an SNS message only when every check listed in this module's docstring
    passes, and confirms subscriptions to allowed topics."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        topic_arns: Collection[str],
        *,
        hosts: SnsHostPolicy | None = None,
        max_age: timedelta = timedelta(hours=1),
        max_future: timedelta = timedelta(minutes=5),
        clock: Callable[[], datetime] = _utc_now,
        certificates: SigningCertificates | None = None,
        confirm_timeout: float = 5.0,
    ) -> None:
        self._session = session
        self._topic_arns = frozenset(topic_arns)
        self._hosts = hosts or SnsHostPolicy()
        self._max_age = max_age
        self._max_future = max_future
        self._clock = clock
        self._certificates = certificates or SigningCertificates(session)
        self._confirm_timeout = aiohttp.ClientTimeout(total=confirm_timeout)

    async def receive(self, document: Mapping[str, object]) -> SnsMessage:
        """Verify ``document``; confirm it first if it is a ``SubscriptionConfirmation``."""
        message = await self.verify(document)
        if message.type == "SubscriptionConfirmation":
            await self.confirm_subscription(message)
        return message

    async def verify(self, document: Mapping[str, object]) -> SnsMessage:
        """The message, if SNS sent it for an allowed topic recently; else ``SnsMessageRefused``."""
        message = parse_sns_message(document)
        if message.topic_arn not in self._topic_arns:
            raise SnsMessageRefused("refused_topic", "SNS message TopicArn is not allowed")
        now = self._clock()
        if now - message.timestamp > self._max_age:
            raise SnsMessageRefused(
                "expired",
                f"SNS message Timestamp is over {self._max_age.total_seconds():.0f} s old",
            )
        if message.timestamp - now > self._max_future:
            raise SnsMessageRefused("expired", "SNS message Timestamp is in the future")
        url = self._hosts.signing_cert_url(message.signing_cert_url)
        certificate = await self._certificates.get(url)
        if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
            raise SnsMessageRefused("forged", "SNS signing certificate is not valid now")
        verify_signature(message, certificate)
        return message

    async def confirm_subscription(self, message: SnsMessage) -> None:
        """GET the verified message's ``SubscribeURL`` (SNS's own link) and expect 200."""
        url = self._hosts.subscribe_url(message.subscribe_url or "", message.topic_arn)
        try:
            async with self._session.get(
                url, timeout=self._confirm_timeout, allow_redirects=False
            ) as response:
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SnsMessageRefused(
                "unavailable", f"SubscribeURL could not be read ({type(exc).__name__})"
            ) from None
        if status != 200:
            raise SnsMessageRefused("unavailable", f"SubscribeURL answered HTTP {status}")

"""List hygiene (DESIGN §3, issue 10): who must not be mailed again, and the one-click
unsubscribe of RFC 8058. Pure functions, no I/O.

A permanent bounce suppresses the bounced address (``hard_bounce``) and a complaint the
complaining one (``complaint``); a transient or undetermined bounce never does: the
mailbox may be full today and empty tomorrow.

The unsubscribe token is the email id and an HMAC-SHA256 of it, in url-safe base64
without padding: no address travels in the URL, and the address to suppress is read from
the email row when the token comes back.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
from dataclasses import dataclass
from datetime import datetime

from delivery_server.errors import ConfigError, InvalidTokenError
from delivery_server.models import Suppression, SuppressionReason, TrackingEvent
from delivery_server.tracking import is_permanent_bounce

_TOKEN_VERSION = 1
_ID_FORMAT = ">BQ"  # version byte, email id as an unsigned 64-bit integer
_ID_BYTES = struct.calcsize(_ID_FORMAT)
_MAC_BYTES = hashlib.sha256().digest_size
_TOKEN_BYTES = _ID_BYTES + _MAC_BYTES
# base64 of 41 bytes, padding dropped: every valid token has exactly this length.
TOKEN_LENGTH = len(base64.urlsafe_b64encode(bytes(_TOKEN_BYTES)).rstrip(b"="))
# Keeps a token signed here from meaning anything to another use of the same secret.
_PURPOSE = b"delivery-server unsubscribe\x00"


def normalise_address(addr: str) -> str:
    """The form an address is stored and looked up in: stripped and lower-cased as a whole.

    RFC 5321 lets a local part be case-sensitive, but SES's own suppression list is
    case-insensitive (and so is every mailbox provider that matters): ``Jane@`` and
    ``jane@`` are one person, and suppressing one must stop mail to the other. An
    internationalised domain is turned into its ASCII (IDNA) form, as it goes on the wire.
    """
    address = addr.strip().lower()
    local, at, domain = address.rpartition("@")
    if not at or domain.isascii():
        return address
    try:
        ascii_domain = domain.encode("idna").decode("ascii")
    except UnicodeError:  # not a valid IDNA name: keep it as written (lower-cased)
        return address
    return f"{local}@{ascii_domain}"


def suppression_for(event: TrackingEvent) -> list[tuple[str, SuppressionReason]]:
    """The addresses an event puts on the suppression list, normalised, each once."""
    if is_permanent_bounce(event):
        reason = SuppressionReason.HARD_BOUNCE
    elif event.event_type == "Complaint":
        reason = SuppressionReason.COMPLAINT
    else:
        return []
    addresses = dict.fromkeys(normalise_address(r) for r in event.recipients if r.strip())
    return [(address, reason) for address in addresses]


def is_active(entry: Suppression, now: datetime) -> bool:
    """Whether ``entry`` still suppresses at ``now`` (naive UTC): forever, or until it expires."""
    return entry.expires_at is None or entry.expires_at > now


def sign_unsubscribe(email_id: int, secret: bytes) -> str:
    """The token of one email's unsubscribe link (``DELIVERY_UNSUBSCRIBE_SECRET`` signs it)."""
    _check_secret(secret)
    if not 0 < email_id < 2**64:
        raise ValueError("email id out of range for an unsubscribe token")
    payload = struct.pack(_ID_FORMAT, _TOKEN_VERSION, email_id)
    token = payload + _mac(payload, secret)
    return base64.urlsafe_b64encode(token).rstrip(b"=").decode("ascii")


def verify_unsubscribe(token: str, secret: bytes) -> int:
    """The email id inside a token signed with ``secret``; ``InvalidTokenError`` if it is
    malformed or forged (the signature is compared in constant time)."""
    _check_secret(secret)
    if len(token) != TOKEN_LENGTH or not token.isascii():
        raise InvalidTokenError("unsubscribe token has the wrong length")
    try:
        raw = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True)
    except binascii.Error as exc:
        raise InvalidTokenError("unsubscribe token is not url-safe base64") from exc
    if base64.urlsafe_b64encode(raw).rstrip(b"=") != token.encode("ascii"):
        raise InvalidTokenError("unsubscribe token is not in its canonical encoding")
    payload, mac = raw[:_ID_BYTES], raw[_ID_BYTES:]
    if not hmac.compare_digest(mac, _mac(payload, secret)):
        raise InvalidTokenError("unsubscribe token signature does not match")
    version, email_id = struct.unpack(_ID_FORMAT, payload)
    if version != _TOKEN_VERSION or email_id == 0:
        raise InvalidTokenError("unsubscribe token is not a version 1 token")
    return int(email_id)


def unsubscribe_headers(url: str) -> dict[str, str]:
    """The RFC 8058 one-click headers for an email whose unsubscribe link is ``url``."""
    # The URL goes into a header between angle brackets: a break or a ">" would forge one.
    if any(char in "<>" or char.isspace() or not char.isprintable() for char in url):
        raise ValueError("unsubscribe URL must not contain spaces, control characters, < or >")
    if not url.startswith(("https://", "http://")):
        raise ValueError("unsubscribe URL must be an http(s) URL")
    return {
        "List-Unsubscribe": f"<{url}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }


@dataclass(frozen=True)
class UnsubscribeLinks:
    """Where one-click unsubscribe links point (``DELIVERY_PUBLIC_URL``) and the key that
    signs them (``DELIVERY_UNSUBSCRIBE_SECRET``)."""

    base_url: str
    secret: bytes

    def headers(self, email_id: int) -> tuple[tuple[str, str], ...]:
        """The RFC 8058 headers of one email: its own signed link, no address in it."""
        token = sign_unsubscribe(email_id, self.secret)
        url = f"{self.base_url.rstrip('/')}/unsubscribe/{token}"
        return tuple(unsubscribe_headers(url).items())


def _mac(payload: bytes, secret: bytes) -> bytes:
    return hmac.new(secret, _PURPOSE + payload, hashlib.sha256).digest()


def _check_secret(secret: bytes) -> None:
    # An empty key would let anyone mint tokens; settings check its strength.
    if not secret:
        raise ConfigError("DELIVERY_UNSUBSCRIBE_SECRET is empty: unsubscribe links need it")

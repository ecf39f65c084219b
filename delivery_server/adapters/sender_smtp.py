"""The SMTP sender: aiosmtplib over a small pool of reused connections.

``smtp://user:pass@host:port`` upgrades with STARTTLS whenever the server offers it (and
then verifies the certificate unless ``verify_tls=False``); ``smtps://`` uses implicit
TLS. Default ports: 587 (submission) and 465. Credentials only go over an unencrypted
connection when the server offers no STARTTLS: use ``smtps://`` where that matters.

How SMTP failures map onto the error tree (``errors``):

=====================================================  =======================
failure                                                raised
=====================================================  =======================
4xx reply mentioning a rate, "too many", throttling    ``ThrottledError``
other 4xx reply (421, 450, 451, 452, ...)              ``RetryableError``
530/534/535/538, login refused, AUTH/TLS unsupported   ``AccountPausedError``
other 5xx reply to MAIL, RCPT or DATA (550, 552, 554)  ``PermanentError``
connection refused or timed out, bad greeting, TLS     ``ProviderUnreachable``
connection lost before DATA                            ``RetryableError``
connection lost or timed out during DATA               ``UncertainSendError``
=====================================================  =======================

A pooled connection found dead before DATA (the server closed it while idle) is
replaced once within the same call: nothing had been handed to the server yet.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import aiosmtplib

from delivery_server.errors import (
    AccountPausedError,
    ConfigError,
    DeliveryError,
    PermanentError,
    ProviderUnreachableError,
    RetryableError,
    ThrottledError,
    UncertainSendError,
)
from delivery_server.mime import CheckedEmail, build_message

_RATE_WORDS = re.compile(r"\brate\b|\btoo many\b|throttl", re.IGNORECASE)
_ENHANCED_STATUS = re.compile(r"^\s*([245]\.\d{1,3}\.\d{1,3})\b")
_AUTH_CODES = frozenset({530, 534, 535, 538})
_DEFAULT_PORTS = {"smtp": 587, "smtps": 465}


@dataclass(frozen=True, slots=True)
class SmtpTarget:
    """Where and how to connect, parsed from ``smtp[s]://user:pass@host:port``."""

    host: str
    port: int
    implicit_tls: bool
    username: str | None = None
    password: str | None = None


def parse_smtp_url(url: str) -> SmtpTarget:
    """Parse an SMTP URL; a malformed one is a ``ConfigError`` (never echoing the URL)."""
    parts = urlsplit(url)
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ConfigError("configuration error: DELIVERY_SMTP_URL: expected smtp[s]://host:port")
    try:
        port = parts.port or _DEFAULT_PORTS[parts.scheme]
    except ValueError:
        raise ConfigError("configuration error: DELIVERY_SMTP_URL: invalid port") from None
    return SmtpTarget(
        host=parts.hostname,
        port=port,
        implicit_tls=parts.scheme == "smtps",
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def translate_smtp_reply(code: int, message: str) -> DeliveryError:
    """Map an SMTP error reply to MAIL, RCPT or DATA onto the error tree.

    The message names the code and enhanced status only: servers quote addresses.
    """
    match = _ENHANCED_STATUS.match(message)
    what = f"SMTP {code} {match.group(1)}" if match else f"SMTP {code}"
    if 400 <= code < 500:
        if _RATE_WORDS.search(message):
            return ThrottledError(f"{what}: rate limited")
        return RetryableError(f"{what}: temporary failure")
    if code in _AUTH_CODES:
        return AccountPausedError(f"{what}: authentication required or refused")
    if 500 <= code < 600:
        return PermanentError(f"{what}: message refused")
    return RetryableError(f"{what}: unexpected reply")


def _connect_error(exc: Exception) -> DeliveryError:
    name = type(exc).__name__
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError | aiosmtplib.SMTPNotSupported):
        return AccountPausedError(f"SMTP login or TLS refused ({name})")
    if isinstance(exc, aiosmtplib.SMTPResponseException) and exc.code in _AUTH_CODES:
        return AccountPausedError(f"SMTP {exc.code}: authentication required or refused")
    return ProviderUnreachableError(f"SMTP connection failed ({name})")


class _ConnectionLost(Exception):
    """The connection died before DATA: nothing was handed to the server."""


# Everything that means "the connection is gone or stuck", as opposed to a reply.
_TRANSPORT_ERRORS = (
    aiosmtplib.SMTPServerDisconnected,
    aiosmtplib.SMTPTimeoutError,
    OSError,
    TimeoutError,
)


class SmtpSender:
    """``ports.Sender`` over SMTP, with at most ``pool_size`` connections (and sends)."""

    def __init__(
        self,
        url: str,
        *,
        verify_tls: bool = True,
        timeout: float = 30.0,
        pool_size: int = 4,
        local_hostname: str | None = None,
    ) -> None:
        if pool_size < 1:
            raise ConfigError("configuration error: SMTP pool size must be at least 1")
        self._target = parse_smtp_url(url)
        self._verify_tls = verify_tls
        self._timeout = timeout
        self._local_hostname = local_hostname
        # One slot per allowed connection; None is a slot whose connection is not open yet.
        # LIFO: the most recently used (warm) connection goes out first, so the pool only
        # opens more connections when sends really overlap.
        self._slots: asyncio.LifoQueue[aiosmtplib.SMTP | None] = asyncio.LifoQueue()
        for _ in range(pool_size):
            self._slots.put_nowait(None)
        self._closed = False

    async def max_send_rate(self) -> float | None:
        """No account-wide rate here (set DELIVERY_MAX_SEND_RATE to limit)."""
        return None

    async def send(self, email: CheckedEmail) -> str:
        """Send one email over a pooled connection; return its ``Message-ID`` header."""
        message = build_message(email)
        raw = message.as_bytes()
        conn = await self._slots.get()
        try:
            if self._closed:
                raise RetryableError("SMTP sender is closed")
            # At most twice: a second pass only follows a reused connection found dead.
            for _ in range(2):
                reused = conn is not None and conn.is_connected
                if conn is None or not reused:
                    conn = await self._connect()
                try:
                    await _transaction(conn, email.from_address, email.to_address, raw)
                    break
                except _ConnectionLost:
                    if not reused:
                        raise RetryableError("SMTP connection lost before DATA") from None
        except DeliveryError:
            raise  # translated: the connection was reset or closed on the way
        except BaseException:
            if conn is not None:
                conn.close()  # cancelled mid-transaction: its state is unknown
            raise
        finally:
            self._slots.put_nowait(self._keep_or_drop(conn))
        return str(message["Message-ID"])

    async def _connect(self) -> aiosmtplib.SMTP:
        target = self._target
        conn = aiosmtplib.SMTP(
            hostname=target.host,
            port=target.port,
            username=target.username,
            password=target.password,
            use_tls=target.implicit_tls,
            # None: STARTTLS exactly when the server offers it (never with implicit TLS).
            start_tls=False if target.implicit_tls else None,
            validate_certs=self._verify_tls,
            timeout=self._timeout,
            local_hostname=self._local_hostname,
        )
        try:
            await conn.connect()
        except (aiosmtplib.SMTPException, OSError, ssl.SSLError, TimeoutError) as exc:
            conn.close()
            raise _connect_error(exc) from None
        return conn

    def _keep_or_drop(self, conn: aiosmtplib.SMTP | None) -> aiosmtplib.SMTP | None:
        if conn is None or not conn.is_connected:
            return None
        if self._closed:
            conn.close()  # no QUIT here: this runs in `finally`, maybe while cancelled
            return None
        return conn

    async def close(self) -> None:
        """Close the idle connections; connections in use close when their send ends."""
        self._closed = True
        idle = []
        while not self._slots.empty():
            idle.append(self._slots.get_nowait())
        for conn in idle:
            if conn is not None:
                await _quit(conn)
            self._slots.put_nowait(None)  # a send waiting for a slot sees _closed and stops


async def _transaction(conn: aiosmtplib.SMTP, sender: str, recipient: str, raw: bytes) -> None:
    """MAIL, RCPT, DATA on an open connection, failures translated."""
    try:
        await conn.mail(sender)
        await conn.rcpt(recipient)
    except aiosmtplib.SMTPResponseException as exc:
        await _reset(conn)
        raise translate_smtp_reply(exc.code, exc.message) from None
    except _TRANSPORT_ERRORS:
        conn.close()
        raise _ConnectionLost from None
    try:
        await conn.data(raw)
    except aiosmtplib.SMTPResponseException as exc:
        await _reset(conn)
        raise translate_smtp_reply(exc.code, exc.message) from None
    except _TRANSPORT_ERRORS as exc:
        # Part or all of the message reached the server, which may have queued it.
        conn.close()
        raise UncertainSendError(
            f"SMTP connection lost during DATA ({type(exc).__name__})"
        ) from None


async def _reset(conn: aiosmtplib.SMTP) -> None:
    """Clear a refused transaction so the connection can be reused; close it if that fails."""
    try:
        await conn.rset()
    except (aiosmtplib.SMTPException, OSError, TimeoutError):
        conn.close()


async def _quit(conn: aiosmtplib.SMTP) -> None:
    try:
        await conn.quit()
    except (aiosmtplib.SMTPException, OSError, TimeoutError):
        conn.close()

"""A real SMTP server (aiosmtpd, in its own thread) on 127.0.0.1 that records envelopes.

Scripted faults: a chosen reply to RCPT for chosen recipients, the connection dropped
at MAIL (a pooled connection the server closed while idle), or dropped once the whole
message was received (the send may have happened).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller


@dataclass(frozen=True)
class Envelope:
    """One message the sink accepted."""

    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    peer: tuple[str, int]
    tls: bool  # STARTTLS or implicit TLS protected this message


@dataclass
class SinkHandler:
    """aiosmtpd handler: records accepted envelopes and plays the scripted faults."""

    envelopes: list[Envelope] = field(default_factory=list)
    # recipient address -> reply line to RCPT, e.g. "550 5.1.1 no such user"
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    drop_at_mail: int = 0  # how many MAIL commands to answer by closing the connection
    drop_after_data: set[str] = field(default_factory=set)  # recipients
    peers: list[tuple[str, int]] = field(default_factory=list)  # one per MAIL command
    # When set, RCPT signals `rcpt_reached` and waits for `release_rcpt` (a stuck server).
    hold_rcpt: bool = False
    rcpt_reached: threading.Event = field(default_factory=threading.Event)
    release_rcpt: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, mail_options: list[str]
    ) -> str:
        with self._lock:
            self.peers.append(session.peer)
            drop = self.drop_at_mail > 0
            if drop:
                self.drop_at_mail -= 1
        if drop:
            server.transport.close()
            return "421 4.4.2 closing"  # never reaches the client: the socket is closed
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if self.hold_rcpt:
            self.rcpt_reached.set()
            await asyncio.to_thread(self.release_rcpt.wait, 30)
        reply = self.rcpt_replies.get(address)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.drop_after_data.intersection(envelope.rcpt_tos):
            server.transport.close()
            return "250 OK"  # never reaches the client
        content = envelope.original_content or envelope.content
        tls = session.ssl is not None or server.transport.get_extra_info("sslcontext") is not None
        with self._lock:
            self.envelopes.append(
                Envelope(
                    envelope.mail_from, list(envelope.rcpt_tos), bytes(content), session.peer, tls
                )
            )
        return "250 2.0.0 OK queued"


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def smtp_sink(
    handler: SinkHandler | None = None,
    port: int | None = None,
    *,
    starttls: ssl.SSLContext | None = None,
    implicit_tls: ssl.SSLContext | None = None,
) -> Iterator[Controller]:
    """Run an SMTP sink; yields the aiosmtpd ``Controller`` (``.port``, ``.handler``).

    ``starttls`` offers STARTTLS with that server context; ``implicit_tls`` makes the
    whole connection TLS (``smtps://``).
    """
    tls_kwargs: dict[str, Any] = {}
    if starttls is not None:
        tls_kwargs.update(tls_context=starttls, require_starttls=False)
    controller = Controller(
        handler or SinkHandler(),
        hostname="127.0.0.1",
        port=port or free_port(),
        server_hostname="sink.localhost",  # no getfqdn() lookup
        ssl_context=implicit_tls,
        **tls_kwargs,
    )
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()

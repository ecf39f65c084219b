"""The outbox sender: one standard ``.eml`` file per email, for laptops and demos.

Files are named ``<job_id>-<email_id>.eml`` (a uuid when the ids are unknown). A second
send of the same email gets ``<job_id>-<email_id>.2.eml`` and so on: a duplicate must
stay visible, never overwrite the first copy.

Each file is written under a hidden temporary name, flushed to disk, then linked into
place in one step, so a reader (or a crash) never sees half a message.

With an events sink (the embedded events queue), the outbox plays SES's part after the
send too: for each file it writes it publishes the SES events SES would (``Send``, then
``Delivery``, or what the SES mailbox simulator's addresses ask for: ``bounce@``,
``complaint@``, ``suppressionlist@simulator.amazonses.com``), as SNS raw message delivery
puts them on SQS, so the tracker closes the loop on a laptop as it does on AWS.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from delivery_server.adapters.ses_event_payloads import (
    AcceptedMail,
    outcome_events,
    raw_event_bodies,
)
from delivery_server.errors import RetryableError
from delivery_server.mime import CheckedEmail, build_mime


class EventSink(Protocol):
    """Where the outbox's SES events go: an in-process queue (``LocalQueue``)."""

    async def publish_bodies(self, bodies: Sequence[str]) -> None:
        """Enqueue message bodies; must not fail (the email is already in the outbox)."""


class OutboxSender:
    """``ports.Sender`` writing ``.eml`` files into ``directory`` (created when missing);
    with ``events``, publishing the SES events of each file it writes there."""

    def __init__(self, directory: Path, events: EventSink | None = None) -> None:
        self.directory = directory
        self.events = events

    async def max_send_rate(self) -> float | None:
        """No account-wide rate here (set DELIVERY_MAX_SEND_RATE to limit)."""
        return None

    async def send(self, email: CheckedEmail) -> str:
        """Write the email as a ``.eml`` file; return ``outbox-<file name>``."""
        raw = build_mime(email)
        if email.job_id is not None and email.email_id is not None:
            stem = f"{email.job_id}-{email.email_id}"
        else:
            stem = uuid.uuid4().hex
        try:
            name = await asyncio.to_thread(write_new_file, self.directory, stem, raw)
        except OSError as exc:
            # Nothing is visible under a final name when the write fails: safe to retry.
            raise RetryableError(f"outbox write failed ({type(exc).__name__})") from None
        message_id = f"outbox-{name}"
        if self.events is not None:
            bodies = _events_of(
                message_id, email.from_address, email.to_address, email.job_id, email.email_id
            )
            await self.events.publish_bodies(bodies)
        return message_id


def _events_of(
    message_id: str, source: str, to_address: str, job_id: int | None, email_id: int | None
) -> list[str]:
    """The SES events of one email written to the outbox, as raw-delivery bodies; tagged
    with the ids as the SES sender tags its sends."""
    tags = {}
    if job_id is not None:
        tags["job_id"] = str(job_id)
    if email_id is not None:
        tags["email_id"] = str(email_id)
    now = datetime.now(UTC)
    mail = AcceptedMail(
        message_id=message_id, source=source, destination=(to_address,), sent_at=now, tags=tags
    )
    return raw_event_bodies(outcome_events(mail, now))


def write_new_file(directory: Path, stem: str, data: bytes, suffix: str = ".eml") -> str:
    """Write ``data`` to a new ``<stem>[.n]<suffix>`` file atomically; return its name."""
    directory.mkdir(parents=True, exist_ok=True)
    temp = directory / f".{stem}.{uuid.uuid4().hex}.tmp"
    try:
        with temp.open("xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        for copy in range(1, 10_000):
            name = f"{stem}{suffix}" if copy == 1 else f"{stem}.{copy}{suffix}"
            if _place(temp, directory / name):
                return name
        raise FileExistsError("too many copies of one email in the outbox")
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()


def _place(temp: Path, final: Path) -> bool:
    """Give ``temp`` the name ``final`` unless that name is taken; False when it is."""
    try:
        # link() fails when the name exists, where rename() would overwrite it.
        os.link(temp, final)
    except FileExistsError:
        return False
    except OSError:
        # No hard links on this file system (some container mounts): check, then
        # rename. Only two writers of the very same email could race here.
        if final.exists():
            return False
        os.replace(temp, final)
    return True

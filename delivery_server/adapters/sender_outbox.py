"""The outbox sender: one standard ``.eml`` file per email, for laptops and demos.

Files are named ``<job_id>-<email_id>.eml`` (a uuid when the ids are unknown). A second
send of the same email gets ``<job_id>-<email_id>.2.eml`` and so on: a duplicate must
stay visible, never overwrite the first copy.

Each file is written under a hidden temporary name, flushed to disk, then linked into
place in one step, so a reader (or a crash) never sees half a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from pathlib import Path

from delivery_server.errors import RetryableError
from delivery_server.mime import build_mime
from delivery_server.models import OutgoingEmail


class OutboxSender:
    """``ports.Sender`` writing ``.eml`` files into ``directory`` (created when missing)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def max_send_rate(self) -> float | None:
        """No account-wide rate here (set DELIVERY_MAX_SEND_RATE to limit)."""
        return None

    async def send(self, email: OutgoingEmail) -> str:
        """Write the email as a ``.eml`` file; return ``outbox-<file name>``."""
        raw = build_mime(email)
        if email.job_id is not None and email.email_id is not None:
            stem = f"{email.job_id}-{email.email_id}"
        else:
            stem = uuid.uuid4().hex
        try:
            name = await asyncio.to_thread(_write_new_file, self.directory, stem, raw)
        except OSError as exc:
            # Nothing is visible under a final name when the write fails: safe to retry.
            raise RetryableError(f"outbox write failed ({type(exc).__name__})") from None
        return f"outbox-{name}"


def _write_new_file(directory: Path, stem: str, data: bytes) -> str:
    """Write ``data`` to a new ``<stem>[.n].eml`` file atomically; return its name."""
    directory.mkdir(parents=True, exist_ok=True)
    temp = directory / f".{stem}.{uuid.uuid4().hex}.tmp"
    try:
        with temp.open("xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        for copy in range(1, 10_000):
            name = f"{stem}.eml" if copy == 1 else f"{stem}.{copy}.eml"
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

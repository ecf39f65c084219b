"""The outbox of every channel but email: what would have been sent, as files.

Embedded mode (``DELIVERY_SENDER=outbox``) sends nothing anywhere: each channel's outgoing
form (an ``channels.OutboxForm``) is written into the outbox directory as
``<job_id>-<email_id><suffix>`` per file it holds (``.sms.json``, ``.webhook.json``, a
drop's files), beside the email channel's ``.eml`` files and with the same rules: written
under a temporary name and linked into place, a second send of the same email gets
``.2`` before its suffix, so a duplicate stays visible.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from delivery_server.adapters.sender_outbox import write_new_file
from delivery_server.channels import OutboxForm
from delivery_server.errors import PermanentError, RetryableError


class ChannelOutbox:
    """``ChannelSender[OutboxForm]`` writing files into ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def max_send_rate(self) -> float | None:
        return None

    async def send(self, outgoing: OutboxForm) -> str:
        """Write every file of the outgoing form; return ``outbox-<first file's name>``."""
        names: list[str] = []
        for suffix, data in outgoing.outbox_files():
            if "/" in suffix or "\\" in suffix or ".." in suffix:
                raise PermanentError("outbox file suffix must be a plain name part")
            try:
                names.append(
                    await asyncio.to_thread(
                        write_new_file, self.directory, outgoing.outbox_stem, data, suffix
                    )
                )
            except OSError as exc:
                # A file of a partly written set is harmless: a retry writes a .2 set.
                raise RetryableError(f"outbox write failed ({type(exc).__name__})") from None
        if not names:
            raise PermanentError("nothing to write to the outbox")
        return f"outbox-{names[0]}"

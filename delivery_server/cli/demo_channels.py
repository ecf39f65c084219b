"""``demo --channel``: the demo's job on another channel, still fully embedded.

Every channel writes to the outbox in embedded mode (``.sms.json``, ``.webhook.json``, a
drop's files), so the demo needs no provider: only made-up recipients in the channel's own
column, a target its settings allow, and those settings.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from delivery_server.channels import DEFAULT_CHANNEL

# North American numbers reserved for fiction (555-0100 to 555-0199, in ten area codes:
# a thousand distinct): valid for the numbering plan the import checks, and nobody's. The
# UK's drama range (+44 7700 900xxx) is not: libphonenumber refuses it.
_FICTION_AREAS = (202, 212, 312, 415, 617, 713, 305, 206, 404, 503)
_RECIPIENT: dict[str, Callable[[int], str]] = {
    "sms": lambda number: f"+1{_FICTION_AREAS[number // 100 % 10]}55501{number % 100:02d}",
    "s3": lambda number: f"customer-{number:06d}",
    "sftp": lambda number: f"customer-{number:06d}",
    "webhook": lambda number: f"customer-{number:06d}",
}
_TARGET = {
    "s3": "s3://demo-drops/statements/",
    "sftp": "sftp://demo@sftp.example.invalid/drops",
    "webhook": "https://hooks.example.invalid/delivery",
}
# SMS and webhooks carry text, not files: the statements' PDFs are dropped only.
_CARRIES_ATTACHMENTS = frozenset({"email", "s3", "sftp"})


def demo_target(channel: str) -> str | None:
    return _TARGET.get(channel)


def channel_settings(channel: str) -> dict[str, Any]:
    """The settings that allow the demo's target (nothing is sent: the outbox is used)."""
    if channel == DEFAULT_CHANNEL:
        return {}
    return {
        "drop_s3_buckets": "demo-drops",
        "drop_sftp_hosts": "sftp.example.invalid",
        "webhook_hosts": "hooks.example.invalid",
        "webhook_secret": secrets.token_hex(32),
    }


def rewrite_recipients(path: Path, channel: str) -> None:
    """Put each customer's recipient in the channel's column instead of ``email``."""
    if channel == DEFAULT_CHANNEL:
        return
    recipient, field = _RECIPIENT[channel], _FIELD[channel]
    rewritten = path.with_suffix(".tmp")
    with path.open(encoding="utf-8") as source, rewritten.open("w", encoding="utf-8") as out:
        for number, line in enumerate(source, start=1):
            record = json.loads(line)
            del record["email"]
            record[field] = recipient(number)
            if channel not in _CARRIES_ATTACHMENTS:
                record.pop("attachments", None)
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    rewritten.replace(path)


_FIELD = {"sms": "phone", "s3": "key", "sftp": "path", "webhook": "ref"}

"""What a moto server "sent" through SES, read from its ``/moto-api/data.json``.

moto (5.2) keeps SES v1 and v2 sends in the same ``ses`` backend. ``data.json`` lists every
tracked model instance of every service, with all JSON-serializable attributes, for all
accounts and regions together (no region field; a reset empties it):

    {"ses": {
        "Message": [            # SendEmail with Simple content (v2) / SendEmail (v1)
            {"id": "...", "source": "from@x", "subject": "...",
             "body": "<html body if any, else the text body>",
             "destinations": {"ToAddresses": [...], "CcAddresses": [...], ...}}],
        "RawMessage": [         # SendEmail with Raw content (v2) / SendRawEmail (v1)
            {"id": "...", "source": "from@x",
             "destinations": [...],   # Destination addresses, then every To/Cc/Bcc header
                                      # address again: duplicates are normal
             "raw_data": "<the MIME message, decoded as UTF-8>"}],
        "TemplateMessage": [...], "BulkTemplateMessage": [...],
        "EmailIdentity": [{"email_identity": "from@x", ...}], ...},
     "sqs": {...}, "s3": {...}, ...}

Simple sends lose the text body when there is an HTML body, and lose Reply-To and
headers; Raw sends keep the whole message. Order is kept within each list, not across.
"""

from __future__ import annotations

import email
import email.policy
import json
import urllib.request
from typing import Any

import boto3  # type: ignore[import-untyped]

AWS_REGION = "us-east-1"


def moto_data(endpoint: str) -> dict[str, Any]:
    """The whole ``data.json`` document of a moto server."""
    with urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=10) as response:
        data: dict[str, Any] = json.load(response)
    return data


def sent_emails(endpoint: str) -> list[dict[str, Any]]:
    """Every email moto accepted through SES, normalized.

    Each item: ``message_id``, ``kind`` ("simple" or "raw"), ``source``, ``to`` (list of
    addresses, duplicates removed), ``subject``, ``body`` (simple only, else None) and
    ``raw`` (the MIME bytes for raw sends, else None). Simple sends come first.
    """
    ses = moto_data(endpoint).get("ses", {})
    emails: list[dict[str, Any]] = []
    for item in ses.get("Message", []):
        emails.append(
            {
                "message_id": item["id"],
                "kind": "simple",
                "source": item["source"],
                "to": list(dict.fromkeys(item["destinations"].get("ToAddresses", []))),
                "subject": item["subject"],
                "body": item["body"],
                "raw": None,
            }
        )
    for item in ses.get("RawMessage", []):
        raw = item["raw_data"].encode("utf-8")
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        emails.append(
            {
                "message_id": item["id"],
                "kind": "raw",
                "source": item["source"],
                "to": list(dict.fromkeys(item["destinations"])),
                "subject": str(parsed["Subject"]),
                "body": None,
                "raw": raw,
            }
        )
    return emails


def verify_identity(endpoint: str, identity: str) -> None:
    """Verify an email address or domain in moto (SES refuses unverified senders)."""
    client = boto3.client("sesv2", endpoint_url=endpoint, region_name=AWS_REGION)
    client.create_email_identity(EmailIdentity=identity)

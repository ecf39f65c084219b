"""SNS HTTP(S) messages shaped like AWS's documented examples, signed as SNS signs them.

The string to sign is written out here again from AWS's page ("Verifying the signatures of
Amazon SNS messages"), not taken from the product, so a test cannot agree with a mistake.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

TOPIC_ARN = "arn:aws:sns:us-west-2:123456789012:MyTopic"
CERT_URL = (
    "https://sns.us-west-2.amazonaws.com/"
    "SimpleNotificationService-f3ecfb7224c7233fe7bb5f59f96de52f.pem"
)
# SNS's confirmation token from AWS's example (shortened).
SUBSCRIPTION_TOKEN = "2336412f37fb687f5d51e6e241d09c805a5a57b30d712f794cc5f6a988666d92768dd60a"
# The SES event a notification carries; the address is what logs must never show.
SES_EVENT = json.dumps(
    {
        "eventType": "Delivery",
        "mail": {
            "timestamp": "2016-10-19T23:20:52.240Z",
            "source": "sender@example.com",
            "messageId": "EXAMPLE7c191be45-e9aedb9a-02f9-4d12-a87d-dd0099a07f8a-000000",
            "destination": ["recipient@example.com"],
            "tags": {"email_id": ["42"], "job_id": ["7"]},
        },
        "delivery": {
            "timestamp": "2016-10-19T23:21:04.133Z",
            "recipients": ["recipient@example.com"],
            "smtpResponse": "250 2.6.0 Message received",
        },
    }
)

# SignatureVersion 1 is SHA1withRSA by AWS's definition.
_DIGESTS: dict[str, type[hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}
_NOTIFICATION_KEYS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
_CONFIRMATION_KEYS = (
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
)


def timestamp(at: dt.datetime) -> str:
    """SNS's form: ``2012-05-02T00:54:06.655Z``."""
    return at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def notification(
    *,
    at: dt.datetime,
    message: str = SES_EVENT,
    topic_arn: str = TOPIC_ARN,
    cert_url: str = CERT_URL,
    subject: str | None = None,
) -> dict[str, str]:
    """An unsigned ``Notification``; ``sign`` adds the signature."""
    document = {
        "Type": "Notification",
        "MessageId": str(uuid.uuid4()),
        "TopicArn": topic_arn,
        "Message": message,
        "Timestamp": timestamp(at),
        "SigningCertURL": cert_url,
        "UnsubscribeURL": "https://sns.us-west-2.amazonaws.com/?Action=Unsubscribe"
        f"&SubscriptionArn={topic_arn}:c9135db0-26c4-47ec-8998-413945fb5a96",
    }
    if subject is not None:
        document["Subject"] = subject
    return document


def confirmation(
    *,
    at: dt.datetime,
    kind: str = "SubscriptionConfirmation",
    topic_arn: str = TOPIC_ARN,
    cert_url: str = CERT_URL,
    subscribe_base: str = "https://sns.us-west-2.amazonaws.com/",
    token: str = SUBSCRIPTION_TOKEN,
) -> dict[str, str]:
    """An unsigned ``SubscriptionConfirmation`` (or ``UnsubscribeConfirmation``)."""
    return {
        "Type": kind,
        "MessageId": str(uuid.uuid4()),
        "Token": token,
        "TopicArn": topic_arn,
        "Message": f"You have chosen to subscribe to the topic {topic_arn}.\n"
        "To confirm the subscription, visit the SubscribeURL included in this message.",
        "SubscribeURL": f"{subscribe_base}?Action=ConfirmSubscription&TopicArn={topic_arn}"
        f"&Token={token}",
        "Timestamp": timestamp(at),
        "SigningCertURL": cert_url,
    }


def string_to_sign(document: dict[str, str]) -> bytes:
    """AWS's string to sign for ``document``, written out from AWS's page."""
    keys = _NOTIFICATION_KEYS if document["Type"] == "Notification" else _CONFIRMATION_KEYS
    return "".join(f"{key}\n{document[key]}\n" for key in keys if key in document).encode()


def sign(document: dict[str, str], key: rsa.RSAPrivateKey, version: str = "1") -> dict[str, str]:
    """``document`` with ``SignatureVersion`` and ``Signature``, as SNS signs it."""
    signature = key.sign(string_to_sign(document), padding.PKCS1v15(), _DIGESTS[version]())
    return {
        **document,
        "SignatureVersion": version,
        "Signature": base64.b64encode(signature).decode(),
    }

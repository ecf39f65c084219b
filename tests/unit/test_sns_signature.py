"""SNS message signatures (v1 SHA1withRSA, v2 SHA256withRSA) and the strict SNS host rule."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from delivery_server.adapters.aws.sns import (
    SnsHostPolicy,
    parse_sns_message,
    string_to_sign,
    verify_signature,
)
from delivery_server.errors import SnsMessageRefused
from tests.support import sns_messages
from tests.support.tls import SigningIdentity, local_tls, rsa_signing_identity

NOW = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)
# A placeholder signature: string_to_sign does not look at it.
UNCHECKED = {"SignatureVersion": "1", "Signature": "AAAA", "SigningCertURL": "x"}


@pytest.fixture(scope="module")
def identity() -> SigningIdentity:
    return rsa_signing_identity()


@pytest.fixture(scope="module")
def certificate(identity: SigningIdentity) -> x509.Certificate:
    return x509.load_pem_x509_certificate(identity.certificate_pem)


@contextmanager
def refusal(outcome: str) -> Iterator[pytest.ExceptionInfo[SnsMessageRefused]]:
    with pytest.raises(SnsMessageRefused) as caught:
        yield caught
    assert caught.value.outcome == outcome, str(caught.value)


class TestStringToSign:
    def test_a_notification_signs_awss_six_fields_in_byte_order(self) -> None:
        # AWS's own example string to sign for a Notification.
        document = {
            "Type": "Notification",
            "MessageId": "4d4dc071-ddbf-465d-bba8-08f81c89da64",
            "TopicArn": "arn:aws:sns:us-east-2:123456789012:s4-MySNSTopic-1G1WEFCOXTC0P",
            "Subject": "My subject",
            "Message": "My Test Message",
            "Timestamp": "2019-01-31T04:37:04.321Z",
            "UnsubscribeURL": "https://sns.us-east-2.amazonaws.com/?Action=Unsubscribe",
            **UNCHECKED,
        }
        assert string_to_sign(parse_sns_message(document)) == (
            b"Message\nMy Test Message\n"
            b"MessageId\n4d4dc071-ddbf-465d-bba8-08f81c89da64\n"
            b"Subject\nMy subject\n"
            b"Timestamp\n2019-01-31T04:37:04.321Z\n"
            b"TopicArn\narn:aws:sns:us-east-2:123456789012:s4-MySNSTopic-1G1WEFCOXTC0P\n"
            b"Type\nNotification\n"
        )

    @pytest.mark.parametrize("subject", ["absent", None])
    def test_a_notification_without_subject_leaves_it_out(self, subject: str | None) -> None:
        document: dict[str, object] = {
            **sns_messages.notification(at=NOW, message="line one\nline two"),
            **UNCHECKED,
        }
        if subject is None:
            document["Subject"] = None
        signed = string_to_sign(parse_sns_message(document)).decode()
        assert "Subject" not in signed
        assert signed.startswith("Message\nline one\nline two\nMessageId\n")
        assert "UnsubscribeURL" not in signed
        assert "SigningCertURL" not in signed

    @pytest.mark.parametrize("kind", ["SubscriptionConfirmation", "UnsubscribeConfirmation"])
    def test_a_confirmation_signs_the_url_and_token_too(self, kind: str) -> None:
        # AWS's example string to sign for a SubscriptionConfirmation (the token shortened).
        document = {
            "Type": kind,
            "MessageId": "3d891288-136d-417f-bc05-901c108273ee",
            "Token": "233",
            "TopicArn": "arn:aws:sns:us-east-2:123456789012:s4-MySNSTopic-1G1WEFCOXTC0P",
            "Message": "My Test Message",
            "SubscribeURL": "https://sns.us-east-2.amazonaws.com/?Action=ConfirmSubscription"
            "&TopicArn=arn:aws:sns:us-east-2:123456789012:s4-MySNSTopic-1G1WEFCOXTC0P&Token=233",
            "Timestamp": "2019-01-31T19:25:13.719Z",
            **UNCHECKED,
        }
        assert string_to_sign(parse_sns_message(document)) == (
            b"Message\nMy Test Message\n"
            b"MessageId\n3d891288-136d-417f-bc05-901c108273ee\n"
            b"SubscribeURL\nhttps://sns.us-east-2.amazonaws.com/?Action=ConfirmSubscription"
            b"&TopicArn=arn:aws:sns:us-east-2:123456789012:s4-MySNSTopic-1G1WEFCOXTC0P"
            b"&Token=233\n"
            b"Timestamp\n2019-01-31T19:25:13.719Z\n"
            b"Token\n233\n"
            b"TopicArn\narn:aws:sns:us-east-2:123456789012:s4-MySNSTopic-1G1WEFCOXTC0P\n"
            b"Type\n" + kind.encode() + b"\n"
        )


class TestSignature:
    @pytest.mark.parametrize("version", ["1", "2"])
    @pytest.mark.parametrize("subject", [None, "Amazon SES Email Event Notification"])
    def test_snss_signature_verifies(
        self,
        identity: SigningIdentity,
        certificate: x509.Certificate,
        version: str,
        subject: str | None,
    ) -> None:
        document = sns_messages.notification(at=NOW, subject=subject)
        signed = sns_messages.sign(document, identity.key, version)
        verify_signature(parse_sns_message(signed), certificate)

    @pytest.mark.parametrize("version", ["1", "2"])
    def test_a_signed_confirmation_verifies(
        self, identity: SigningIdentity, certificate: x509.Certificate, version: str
    ) -> None:
        signed = sns_messages.sign(sns_messages.confirmation(at=NOW), identity.key, version)
        verify_signature(parse_sns_message(signed), certificate)

    @pytest.mark.parametrize(
        "tamper",
        [
            {"Message": '{"eventType": "Bounce"}'},
            {"Subject": "added after signing"},
            {"Timestamp": "2026-12-01T09:00:01.000Z"},
            {"TopicArn": "arn:aws:sns:us-west-2:123456789012:Other"},
            {"SignatureVersion": "2"},  # a v1 signature claimed as v2
        ],
    )
    def test_a_changed_message_is_forged(
        self, identity: SigningIdentity, certificate: x509.Certificate, tamper: dict[str, str]
    ) -> None:
        signed = sns_messages.sign(sns_messages.notification(at=NOW), identity.key, "1")
        with refusal("forged"):
            verify_signature(parse_sns_message({**signed, **tamper}), certificate)

    def test_another_keys_signature_is_forged(self, certificate: x509.Certificate) -> None:
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        signed = sns_messages.sign(sns_messages.notification(at=NOW), other, "2")
        with refusal("forged"):
            verify_signature(parse_sns_message(signed), certificate)

    def test_a_certificate_without_an_rsa_key_is_refused(
        self, identity: SigningIdentity, tmp_path: Path
    ) -> None:
        local_tls(tmp_path)  # its server certificate has an EC key
        ec_certificate = x509.load_pem_x509_certificate((tmp_path / "server.pem").read_bytes())
        signed = sns_messages.sign(sns_messages.notification(at=NOW), identity.key, "2")
        with refusal("forged"):
            verify_signature(parse_sns_message(signed), ec_certificate)


class TestParse:
    @pytest.mark.parametrize(
        ("change", "outcome"),
        [
            ({"Type": "Unknown"}, "malformed"),
            ({"Type": None}, "malformed"),
            ({"MessageId": None}, "malformed"),
            ({"Message": 7}, "malformed"),
            ({"TopicArn": ""}, "malformed"),
            ({"Subject": ["not", "text"]}, "malformed"),
            ({"Timestamp": "yesterday"}, "malformed"),
            ({"Timestamp": "2026-12-01T09:00:00"}, "malformed"),  # no time zone
            ({"Signature": None}, "forged"),
            ({"SignatureVersion": None}, "forged"),
            ({"SigningCertURL": None}, "forged"),
            ({"SignatureVersion": "3"}, "forged"),
            ({"SignatureVersion": 1}, "forged"),
            ({"Signature": "not base64!"}, "forged"),
        ],
    )
    def test_what_is_wrong_is_named_without_its_value(
        self, identity: SigningIdentity, change: dict[str, object], outcome: str
    ) -> None:
        signed = sns_messages.sign(sns_messages.notification(at=NOW), identity.key, "2")
        document = {k: v for k, v in {**signed, **change}.items() if v is not None}
        with refusal(outcome) as caught:
            parse_sns_message(document)
        for value in change.values():
            if isinstance(value, str) and value:
                assert value not in str(caught.value)

    def test_a_confirmation_without_its_token_is_malformed(self, identity: SigningIdentity) -> None:
        signed = sns_messages.sign(sns_messages.confirmation(at=NOW), identity.key, "2")
        del signed["Token"]
        with refusal("malformed"):
            parse_sns_message(signed)


AWS = SnsHostPolicy()
TOPIC = sns_messages.TOPIC_ARN
CONFIRM = f"?Action=ConfirmSubscription&TopicArn={TOPIC}&Token=233"


class TestHostPolicy:
    @pytest.mark.parametrize(
        "url",
        [
            sns_messages.CERT_URL,
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
            "https://sns.us-gov-west-1.amazonaws.com/SimpleNotificationService-abc.pem",
            "https://sns.eu-central-2.amazonaws.com:443/SimpleNotificationService-abc.pem",
            "https://SNS.AP-SOUTHEAST-2.AMAZONAWS.COM/SimpleNotificationService-abc.pem",
        ],
    )
    def test_snss_certificate_urls_pass(self, url: str) -> None:
        assert AWS.signing_cert_url(url).path.endswith(".pem")

    @pytest.mark.parametrize(
        "url",
        [
            "https://sns.us-east-1.amazonaws.com.evil.example/x.pem",
            "https://evil.example/sns.us-east-1.amazonaws.com/x.pem",
            "http://sns.us-east-1.amazonaws.com/x.pem",
            "https://sns.us-east-1.amazonaws.com@evil.example/x.pem",
            "https://sns.us-east-1.amazonaws.com@evil.example/",
            "https://user:pw@sns.us-east-1.amazonaws.com/x.pem",
            "https://sns.us-east-1.amazonaws.com:8443/x.pem",
            "https://sns.us-east-1.amazonaws.com./x.pem",
            "https://sns.amazonaws.com/x.pem",
            "https://s3.us-east-1.amazonaws.com/x.pem",
            "https://evilsns.us-east-1.amazonaws.com/x.pem",
            "https://sns.us-east-1.amazonaws.com.cn/x.pem",
            "https://sns.us-east-1.amazonaws.com/x.pem.txt",
            "https://sns.us-east-1.amazonaws.com/x.pem?redirect=evil.example",
            "https://sns.us-east-1.amazonaws.com/x.pem#frag",
            "https://sns.us-east-1.amazonaws.com\\@evil.example/x.pem",
            "https://sns.us-east-1.amazonaws.com/x.pem\n",
            " https://sns.us-east-1.amazonaws.com/x.pem",
            "//sns.us-east-1.amazonaws.com/x.pem",
            "sns.us-east-1.amazonaws.com/x.pem",
            "file:///etc/sns.us-east-1.amazonaws.com.pem",
            "https://sns.us-east-1.amazonaws.com/é.pem",
        ],
    )
    def test_anything_else_is_refused_before_a_fetch(self, url: str) -> None:
        with refusal("refused_cert_url") as caught:
            AWS.signing_cert_url(url)
        assert "SigningCertURL" in str(caught.value)
        assert "evil" not in str(caught.value)

    def test_tests_may_allow_a_loopback_host_and_port(self) -> None:
        local = SnsHostPolicy(host=re.compile(r"127\.0\.0\.1"), port=8443)
        assert local.signing_cert_url("https://127.0.0.1:8443/c.pem").port == 8443
        with refusal("refused_cert_url"):
            local.signing_cert_url("https://127.0.0.1/c.pem")
        with refusal("refused_cert_url"):
            local.signing_cert_url("https://sns.us-east-1.amazonaws.com/c.pem")

    def test_the_subscribe_url_is_snss_confirmation_for_this_topic(self) -> None:
        url = f"https://sns.us-west-2.amazonaws.com/{CONFIRM}"
        assert AWS.subscribe_url(url, TOPIC).query["Token"] == "233"

    @pytest.mark.parametrize(
        "url",
        [
            f"https://sns.us-west-2.amazonaws.com.evil.example/{CONFIRM}",
            f"http://sns.us-west-2.amazonaws.com/{CONFIRM}",
            f"https://sns.us-west-2.amazonaws.com@evil.example/{CONFIRM}",
            f"https://sns.us-west-2.amazonaws.com:8443/{CONFIRM}",
            f"https://sns.us-west-2.amazonaws.com/?Action=Unsubscribe&TopicArn={TOPIC}",
            "https://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription"
            "&TopicArn=arn:aws:sns:us-west-2:123456789012:Other",
            "https://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription",
            "",
        ],
    )
    def test_any_other_subscribe_url_is_refused(self, url: str) -> None:
        with refusal("refused_subscribe_url"):
            AWS.subscribe_url(url, TOPIC)

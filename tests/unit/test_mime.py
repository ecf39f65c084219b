"""MIME building and the header/address checks: hostile inputs first."""

from __future__ import annotations

import dataclasses
import email
import email.policy
from email.message import EmailMessage

import pytest

from delivery_server.errors import PermanentError
from delivery_server.mime import (
    EMAIL_ID_HEADER,
    JOB_ID_HEADER,
    MAX_SES_MESSAGE_BYTES,
    CheckedEmail,
    build_message,
    build_mime,
    check_header,
    check_message_size,
    validate_address,
)
from delivery_server.models import Attachment, OutgoingEmail


def outgoing(**changes: object) -> OutgoingEmail:
    fields: dict[str, object] = {
        "from_address": "statements@bank.example.com",
        "to_address": "ann@example.org",
        "subject": "Your statement",
        "text_body": "Dear Ann,\n",
    }
    fields.update(changes)
    return OutgoingEmail(**fields)  # type: ignore[arg-type]


def checked(**changes: object) -> CheckedEmail:
    return CheckedEmail(outgoing(**changes))


def reparse(raw: bytes) -> EmailMessage:
    """Parse like a receiving MTA would, insisting on one To, one Subject and no Bcc."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    assert len(msg.get_all("To", [])) == 1
    assert len(msg.get_all("Subject", [])) == 1
    assert len(msg.get_all("From", [])) == 1
    assert msg.get_all("Bcc") is None
    assert msg.get_all("Cc") is None
    return msg


# --- addresses ------------------------------------------------------------------------


def test_valid_address_is_normalized() -> None:
    assert validate_address("Ann.Smith@Example.ORG") == "Ann.Smith@example.org"


def test_internationalized_domain_becomes_idna() -> None:
    assert validate_address("ann@bücher.example") == "ann@xn--bcher-kva.example"


@pytest.mark.parametrize(
    "address",
    [
        "",
        "ann",
        "ann@",
        "@example.org",
        "ann@example",
        "ann smith@example.org",
        "ann@@example.org",
        "ann@example.org\r\nBcc: x@evil.example.com",
        "ann@example.org\n",
        "ännå@example.org",  # needs SMTPUTF8, which neither SES nor our SMTP client speak
        "Ann <ann@example.org>",
        "ann@example.org, eve@evil.example.com",
    ],
)
def test_invalid_address_is_permanent_and_not_quoted(address: str) -> None:
    with pytest.raises(PermanentError, match=r"^invalid recipient address: ") as caught:
        validate_address(address)
    message = str(caught.value)
    assert "ann" not in message.lower()
    assert "evil" not in message
    assert "ä" not in message
    assert not message.endswith((",", ":"))
    assert "\n" not in message


def test_validate_does_not_chain_the_validator_message() -> None:
    with pytest.raises(PermanentError) as caught:
        validate_address("ännå@example.org")
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


# --- header checks --------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "Hi\r\nBcc: x@evil.example.com",
        "Hi\nBcc: x@evil.example.com",
        "Hi\rBcc: x@evil.example.com",
        "Hi\x00there",
        "Hi\tthere",  # a control character like the others (RFC 5322 folding is ours)
        "Hi\x1b[31m",
        "Hi\x7f",
        "Hi\x85Bcc: x@evil.example.com",  # NEL: a line break to str.splitlines()
        "Hi\u2028Bcc: x@evil.example.com",
        "invoice\u202efdp.exe",  # displays as "invoiceexe.pdf"
        "=?utf-8?q?Hi=0D=0ABcc:_x@evil.example.com?=",
        "=?UTF-8?B?SGkNCkJjYzogeEBldmlsLmV4YW1wbGUuY29t?=",
        "Hello =?iso-8859-1?q?world?= there",
        "broken =? utf-8 ? q ? x ?=",
    ],
)
def test_header_injection_is_refused(value: str) -> None:
    with pytest.raises(PermanentError, match=r"^header injection attempt in Subject$"):
        check_header("Subject", value)


@pytest.mark.parametrize(
    "value",
    ["Your statement", "Relevé annuel — 2024 ✓", "50% off? =) yes", "", "Ünïcödé 日本語"],
)
def test_ordinary_headers_pass_unchanged(value: str) -> None:
    assert check_header("Subject", value) == value


def test_the_unsafe_character_class_is_every_control_separator_and_bidi_control() -> None:
    """The one-regex check refuses exactly the characters of Unicode categories Cc, Zl and
    Zp and the bidirectional controls, nothing more: every code point, checked."""
    import sys
    import unicodedata

    from delivery_server.mime import _UNSAFE_HEADER_CHAR

    bidi = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
    for code in range(sys.maxunicode + 1):
        char = chr(code)
        unsafe = unicodedata.category(char) in ("Cc", "Zl", "Zp") or char in bidi
        assert (_UNSAFE_HEADER_CHAR.search(f"a{char}b") is not None) is unsafe, hex(code)


def test_checked_email_names_the_header() -> None:
    for field, name in [("from_address", "From"), ("reply_to", "Reply-To"), ("subject", "Subject")]:
        with pytest.raises(PermanentError, match=f"header injection attempt in {name}"):
            CheckedEmail(outgoing(**{field: "x\r\nBcc: eve@evil.example.com"}))


def test_attachment_filename_is_checked() -> None:
    attachment = Attachment("a\r\nContent-Type: text/html.pdf", "application/pdf", b"x")
    with pytest.raises(PermanentError, match="header injection attempt in attachment filename"):
        CheckedEmail(outgoing(attachments=(attachment,)))


@pytest.mark.parametrize("content_type", ["application/pdf\r\nX: y", "pdf", "text/html; x=y"])
def test_attachment_content_type_must_be_a_plain_type(content_type: str) -> None:
    with pytest.raises(PermanentError, match="content_type"):
        CheckedEmail(outgoing(attachments=(Attachment("a.pdf", content_type, b"x"),)))


def test_display_names_with_specials_stay_one_mailbox() -> None:
    raw = build_mime(
        checked(
            from_address='"Doe, John <ceo@bank.example.com>" <statements@bank.example.com>',
            reply_to="Help Desk <help@bank.example.com>",
        )
    )
    msg = reparse(raw)
    [sender] = msg["From"].addresses
    assert sender.addr_spec == "statements@bank.example.com"
    assert sender.display_name == "Doe, John <ceo@bank.example.com>"
    [reply] = msg["Reply-To"].addresses
    assert reply.addr_spec == "help@bank.example.com"


def test_invalid_from_address_is_permanent() -> None:
    with pytest.raises(PermanentError, match="invalid recipient address"):
        CheckedEmail(outgoing(from_address="Bank <not-an-address>"))


def test_checked_email_holds_the_values_to_write() -> None:
    email = checked(
        from_address="Bank <statements@Bank.Example.COM>",
        to_address="Ann.Smith@Example.ORG",
        reply_to="help@bank.example.com",
    )
    assert email.from_address == "statements@bank.example.com"
    assert email.from_header == "Bank <statements@bank.example.com>"
    assert email.to_address == "Ann.Smith@example.org"
    assert (email.reply_to_address, email.reply_to_header) == ("help@bank.example.com",) * 2


def test_a_checked_email_cannot_be_made_or_changed_without_the_checks() -> None:
    email = checked()
    hostile = "Hi\r\nBcc: x@evil.example.com"
    with pytest.raises(TypeError):
        dataclasses.replace(email, subject=hostile)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        CheckedEmail(subject=hostile)  # type: ignore[call-arg]
    with pytest.raises(dataclasses.FrozenInstanceError):
        email.subject = hostile  # type: ignore[misc]


def test_id_headers_are_written_from_one_place() -> None:
    email = checked(email_id=42, job_id=7)
    assert email.id_headers() == [(JOB_ID_HEADER, "7"), (EMAIL_ID_HEADER, "42")]
    assert checked(email_id=42).id_headers() == [(EMAIL_ID_HEADER, "42")]
    for msg in (reparse(build_mime(email)), build_message(email)):
        assert (msg[JOB_ID_HEADER], msg[EMAIL_ID_HEADER]) == ("7", "42")


# --- building -------------------------------------------------------------------------


def test_plain_message_has_every_standard_header() -> None:
    raw = build_mime(checked(email_id=42, job_id=7))

    assert b"\r\n" in raw
    assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF only, as SMTP wants
    msg = reparse(raw)
    assert msg["To"] == "ann@example.org"
    assert msg["From"] == "statements@bank.example.com"
    assert msg["Subject"] == "Your statement"
    assert msg["MIME-Version"] == "1.0"
    assert msg["Date"] is not None
    assert str(msg["Message-ID"]).endswith("@bank.example.com>")
    assert msg["X-Delivery-Email-Id"] == "42"
    assert msg["X-Delivery-Job-Id"] == "7"
    assert msg.get_content_type() == "text/plain"
    assert msg.get_content().replace("\r\n", "\n") == "Dear Ann,\n"


def test_ids_header_is_absent_without_ids() -> None:
    msg = reparse(build_mime(checked()))
    assert msg["X-Delivery-Email-Id"] is None


def test_message_ids_are_unique() -> None:
    ids = {reparse(build_mime(checked()))["Message-ID"] for _ in range(50)}
    assert len(ids) == 50


def test_every_line_is_seven_bit_and_short() -> None:
    raw = build_mime(
        checked(
            subject="Relevé " * 40,
            text_body="é" * 3000 + "\n",
            html_body="<p>" + "ü" * 3000 + "</p>",
            attachments=(Attachment("é.pdf", "application/pdf", bytes(range(256)) * 50),),
        )
    )
    raw.decode("ascii")  # raises if any byte is 8-bit
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998


def test_non_ascii_subject_and_names_round_trip() -> None:
    raw = build_mime(
        checked(
            from_address="Banque Éloïse <statements@bank.example.com>",
            subject="Votre relevé annuel — 2024 ✓",
            text_body="Chère Zoë,\nvoici votre relevé.\n",
            attachments=(Attachment("relevé été 2024.pdf", "application/pdf", b"%PDF-1.4"),),
        )
    )
    msg = reparse(raw)
    assert msg["Subject"] == "Votre relevé annuel — 2024 ✓"
    assert msg["From"].addresses[0].display_name == "Banque Éloïse"
    text = msg.get_body(("plain",))
    assert text is not None
    assert text.get_content().replace("\r\n", "\n") == "Chère Zoë,\nvoici votre relevé.\n"
    [part] = list(msg.iter_attachments())
    assert part.get_filename() == "relevé été 2024.pdf"
    assert b"filename*=utf-8''relev%C3%A9%20%C3%A9t%C3%A9%202024.pdf" in raw  # RFC 2231


def test_html_alternative_and_attachments_structure() -> None:
    pdf = b"%PDF-1.4\n" + bytes(range(256))
    raw = build_mime(
        checked(
            html_body="<p>Dear Ann,</p>",
            attachments=(
                Attachment("statement.pdf", "application/pdf", pdf),
                Attachment("notes.txt", "text/plain", b"plain notes\n"),
            ),
        )
    )
    msg = reparse(raw)
    assert msg.get_content_type() == "multipart/mixed"
    html = msg.get_body(("html",))
    assert html is not None
    assert html.get_content().strip() == "<p>Dear Ann,</p>"
    parts = [
        (p.get_filename(), p.get_content_type(), p.get_payload(decode=True))
        for p in msg.iter_attachments()
    ]
    assert parts == [
        ("statement.pdf", "application/pdf", pdf),
        ("notes.txt", "text/plain", b"plain notes\n"),
    ]
    assert raw.count(b"MIME-Version") == 1


def test_hostile_variables_never_add_recipients() -> None:
    hostile = "Hi\r\nBcc: x@evil.example.com"
    for changes in (
        {"subject": hostile},
        {"from_address": f"{hostile} <statements@bank.example.com>"},
        {"reply_to": hostile},
        {"to_address": "ann@example.org\r\nBcc: x@evil.example.com"},
        {"subject": "=?utf-8?q?x=0D=0ABcc:_x@evil.example.com?="},
    ):
        with pytest.raises(PermanentError):
            CheckedEmail(outgoing(**changes))


@pytest.mark.parametrize(
    "subject",
    [
        "Re: =? question",
        "To: eve@evil.example.com",
        "Bcc: eve@evil.example.com",
        "a" * 2000,
        "\u00e9" * 500 + " Bcc: eve@evil.example.com",
        "  spaces   everywhere  ",
    ],
)
def test_allowed_but_odd_subjects_stay_one_subject(subject: str) -> None:
    msg = reparse(build_mime(checked(subject=subject)))
    assert " ".join(str(msg["Subject"]).split()) == " ".join(subject.split())
    assert msg["To"] == "ann@example.org"


def test_bodies_may_contain_anything_without_touching_headers() -> None:
    body = "Line\r\nBcc: x@evil.example.com\r\n\r\n.\r\nSubject: again\n"
    msg = reparse(build_mime(checked(text_body=body)))
    assert msg["Subject"] == "Your statement"


# --- size -----------------------------------------------------------------------------


def test_size_limit_is_forty_megabytes() -> None:
    assert MAX_SES_MESSAGE_BYTES == 40 * 1024 * 1024
    check_message_size(MAX_SES_MESSAGE_BYTES)
    check_message_size(b"x" * 1000, limit=1000)
    with pytest.raises(PermanentError, match="message too large"):
        check_message_size(MAX_SES_MESSAGE_BYTES + 1)
    with pytest.raises(PermanentError, match="message too large"):
        check_message_size(b"x" * 1001, limit=1000)


def test_a_built_message_over_the_limit_is_refused() -> None:
    big = Attachment("big.pdf", "application/pdf", b"\0" * (31 * 1024 * 1024))
    raw = build_mime(checked(attachments=(big,)))  # base64 makes 31 MB about 42 MB
    with pytest.raises(PermanentError, match="message too large"):
        check_message_size(raw)


def _shape(msg: EmailMessage) -> list[tuple[object, ...]]:
    """Every part's headers (but the per-message ones) and decoded content, in order."""
    varying = {"date", "message-id", "content-type"}  # content-type: its boundary varies
    shape: list[tuple[object, ...]] = []
    for part in msg.walk():
        # In any order: the stdlib's own order depends on how the parts were added.
        headers = sorted((k, str(v)) for k, v in part.items() if k.lower() not in varying)
        content = None if part.is_multipart() else part.get_content()
        shape.append((part.get_content_type(), part.get_params(), headers, content))
    return [(t, [p for p in params or [] if p[0] != "boundary"], h, c) for t, params, h, c in shape]


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"html_body": "<p>Dear Ann,</p>"},
        {"attachments": (Attachment("statement.pdf", "application/pdf", bytes(range(256)) * 9),)},
        {
            "from_address": '"Bank, Inc." <statements@bank.example.com>',
            "reply_to": "Help Desk <help@bank.example.com>",
            "subject": "Relevé " * 30,
            "text_body": "Chère Zoë,\r\nline =3D x\t \nFrom here\n.\n" + "é" * 200 + "\rend",
            "html_body": "<p>" + "ü" * 300 + " = </p>\n\n",
            "attachments": (
                Attachment('a "quoted";name.pdf', "application/pdf", b"%PDF"),
                Attachment("relevé été 2024 " * 6 + ".pdf", "application/pdf", b""),
                Attachment("notes.txt", "text/plain", b"plain notes\n"),
            ),
            "email_id": 5,
            "job_id": 6,
        },
        {"text_body": "", "subject": "x" * 200},
    ],
)
def test_build_mime_writes_the_message_build_message_describes(changes: dict[str, object]) -> None:
    """``build_mime`` writes the bytes itself (fast); the stdlib's ``build_message`` is the
    reference: same headers, same structure, same decoded content."""
    email = checked(**changes)
    fast, reference = build_mime(email), build_message(email).as_bytes()

    assert _shape(reparse(fast)) == _shape(reparse(reference))
    fast.decode("ascii")
    assert max(len(line) for line in fast.split(b"\r\n")) <= 78
    assert b"\n" not in fast.replace(b"\r\n", b"")


ONE_CLICK = (
    ("List-Unsubscribe", "<https://mail.bank.example/unsubscribe/t0ken>"),
    ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
)


def test_one_click_headers_are_written_by_every_builder() -> None:
    email = checked(email_id=42, job_id=7, headers=ONE_CLICK)
    assert email.extra_headers()[2:] == list(ONE_CLICK)
    for msg in (reparse(build_mime(email)), build_message(email)):
        assert msg["List-Unsubscribe"] == ONE_CLICK[0][1]
        assert msg["List-Unsubscribe-Post"] == ONE_CLICK[1][1]
        assert msg[JOB_ID_HEADER] == "7"


def test_a_job_may_add_no_other_header() -> None:
    with pytest.raises(PermanentError, match="header Bcc may not be added"):
        checked(headers=(("Bcc", "someone@example.com"),))


def test_an_added_header_cannot_smuggle_another() -> None:
    hostile = (("List-Unsubscribe", "<https://x.example/u>\r\nBcc: a@example.com"),)
    with pytest.raises(PermanentError, match="List-Unsubscribe"):
        checked(headers=hostile)

"""MIME building and the address/header safety checks every sender relies on.

Variables come from upstream systems and end up in headers (subject, display names,
attachment filenames), so every header value is checked before it is written: no line
breaks or other control characters (header injection: ``Subject: Hi\\r\\nBcc: ...``), and
no raw RFC 2047 encoded words (``=?utf-8?q?...?=``), which a mail reader would decode
into whatever an attacker put there. The stdlib encodes non-ASCII text itself.

The checks run once per email, in ``CheckedEmail(email)``: the pipeline makes one, and
senders (``ports.Sender``) and the builders here take only that type, so they write its
values as they are instead of checking them again.

Error messages never contain the offending value: they end up in logs and in
``last_error``, and the value is personal data.
"""

from __future__ import annotations

import binascii
import functools
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage, MIMEPart
from email.policy import SMTP
from email.utils import format_datetime, formataddr

from email_validator import EmailNotValidError, validate_email

from delivery_server.errors import PermanentError
from delivery_server.models import Attachment, OutgoingEmail

# SES v2 accepts messages up to 40 MB, attachments (base64-encoded) included.
MAX_SES_MESSAGE_BYTES = 40 * 1024 * 1024

# Any "=?" ... "?=" pair: broader than the RFC 2047 grammar on purpose, because lenient
# mail readers decode malformed encoded words too.
_ENCODED_WORD = re.compile(r"=\?.*\?=", re.DOTALL)
# What no header value may hold: control characters (Unicode category Cc, which Unicode's
# stability policy fixes for good), the line and paragraph separators (Zl, Zp: one each)
# and the bidirectional controls (U+202A-U+202E, U+2066-U+2069: they make
# "invoice\u202efdp.exe" display as "invoiceexe.pdf"), as one character class: one search
# in C instead of a category look-up per character. tests/unit/test_mime.py checks it
# against ``unicodedata`` for every code point.
_UNSAFE_HEADER_CHAR = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_MIME_NAME_CHARS = r"[A-Za-z0-9!#$&^_.+-]+"
_CONTENT_TYPE = re.compile(rf"{_MIME_NAME_CHARS}/{_MIME_NAME_CHARS}")
# "Name: value" fits in RFC 5322's recommended 78 characters.
_SHORT_HEADER = 76
# Parts of validator messages that may quote the address: '...', "...", (...).
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"|\([^)]*\)")
# The ids of the job and the email, on every message (never personal data): they tie
# bounces and replies back to the email.
JOB_ID_HEADER = "X-Delivery-Job-Id"
EMAIL_ID_HEADER = "X-Delivery-Email-Id"
# The only headers a job may add (``OutgoingEmail.headers``): RFC 8058's one-click pair.
LIST_HEADERS = frozenset({"List-Unsubscribe", "List-Unsubscribe-Post"})


# The validator is the dearest check and the same addresses come back (a job's sender for
# each of its emails, an email retried). Only valid addresses are kept (a PermanentError
# is not cached); small, so that importing a million recipients does not fill memory with
# addresses that are never checked again.
@functools.lru_cache(maxsize=512)
def validate_address(address: str) -> str:
    """Check an address's syntax (no DNS lookup) and return its normalized ASCII form.

    Internationalized local parts are refused: neither SES nor our SMTP client speaks
    SMTPUTF8. Internationalized domains come back in their IDNA (``xn--``) form.
    """
    if "\r" in address or "\n" in address:
        raise PermanentError("invalid recipient address: contains a line break")
    try:
        valid = validate_email(address, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        # `from None`: the validator's own message may quote parts of the address.
        raise PermanentError(f"invalid recipient address: {_without_quotes(str(exc))}") from None
    return valid.ascii_email or valid.normalized


def _without_quotes(reason: str) -> str:
    cleaned = re.sub(r"[\s,]*,[\s,]*", ", ", _QUOTED.sub("", reason))
    cleaned = re.sub(r":\s*(,\s*)+", ": ", cleaned)  # a list whose items were all quoted
    return " ".join(cleaned.split()).strip(" :.,") or "bad syntax"


def check_header(name: str, value: str) -> str:
    """Return ``value`` unchanged if it is safe in header ``name``; else PermanentError."""
    if _UNSAFE_HEADER_CHAR.search(value) or _ENCODED_WORD.search(value):
        raise PermanentError(f"header injection attempt in {name}")
    return value


@functools.lru_cache(maxsize=256)  # a job's From and Reply-To, for each of its emails
def _mailbox(name: str, value: str) -> tuple[str, str]:
    """Split ``Display Name <addr>`` or a bare address into a checked (name, address)."""
    check_header(name, value)
    text = value.strip()
    display = ""
    if text.endswith(">") and "<" in text:
        cut = text.rindex("<")
        display, text = text[:cut].strip(), text[cut + 1 : -1]
        if len(display) >= 2 and display[0] == display[-1] == '"':
            display = display[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return display, validate_address(text)


@dataclass(frozen=True, slots=True, init=False)
class CheckedEmail:
    """An outgoing email after every header check: what senders take and trust.

    ``CheckedEmail(email)`` is the only way to make one and it runs the checks (addresses,
    subject, attachment names and types), raising ``PermanentError`` that names the
    header, never its value. Header values are ready to write; bodies may hold anything
    (they never touch a header).
    """

    from_address: str  # bare, normalized: the envelope sender
    from_header: str  # with display name, RFC 2047-encoded when not ASCII
    to_address: str
    subject: str
    reply_to_address: str | None
    reply_to_header: str | None
    text_body: str
    html_body: str | None
    attachments: tuple[Attachment, ...]
    # Ids for providers that can tag messages (never personal data).
    email_id: int | None
    job_id: int | None
    list_headers: tuple[tuple[str, str], ...]

    def __init__(self, email: OutgoingEmail) -> None:
        from_name, from_address = _mailbox("From", email.from_address)
        to_address = validate_address(check_header("To", email.to_address))
        reply_address = reply_header = None
        if email.reply_to:
            reply_name, reply_address = _mailbox("Reply-To", email.reply_to)
            reply_header = formataddr((reply_name, reply_address))
        for attachment in email.attachments:
            check_header("attachment filename", attachment.filename)
            if not _CONTENT_TYPE.fullmatch(attachment.content_type):
                raise PermanentError("attachment content_type must look like type/subtype")
        fields = {
            "from_address": from_address,
            "from_header": formataddr((from_name, from_address)),
            "to_address": to_address,
            "subject": check_header("Subject", email.subject),
            "reply_to_address": reply_address,
            "reply_to_header": reply_header,
            "text_body": email.text_body,
            "html_body": email.html_body,
            "attachments": email.attachments,
            "email_id": email.email_id,
            "job_id": email.job_id,
            "list_headers": tuple(_list_header(n, v) for n, v in email.headers),
        }
        # Frozen: set the way the dataclass's own __init__ would; nothing changes them later.
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    def id_headers(self) -> list[tuple[str, str]]:
        """The ``X-Delivery-*`` headers every sender writes: the job's and the email's id."""
        headers = []
        if self.job_id is not None:
            headers.append((JOB_ID_HEADER, str(self.job_id)))
        if self.email_id is not None:
            headers.append((EMAIL_ID_HEADER, str(self.email_id)))
        return headers

    def extra_headers(self) -> list[tuple[str, str]]:
        """Every header beyond the standard ones, as each sender writes them: the ids, then
        the one-click unsubscribe pair of a job that opted in."""
        return [*self.id_headers(), *self.list_headers]


def _list_header(name: str, value: str) -> tuple[str, str]:
    if name not in LIST_HEADERS:
        raise PermanentError(f"header {name} may not be added to an email")
    return name, check_header(name, value)


def build_message(email: CheckedEmail) -> EmailMessage:
    """Build the MIME message (CRLF line endings once serialized).

    ``text/plain``, with a ``text/html`` alternative when there is one, and the
    attachments after it. ``Message-ID`` is fresh on every call.
    """
    msg = EmailMessage(policy=SMTP)
    msg["From"] = email.from_header
    msg["To"] = Address(addr_spec=email.to_address)
    if email.reply_to_header is not None:
        msg["Reply-To"] = email.reply_to_header
    msg["Subject"] = email.subject
    msg["Date"] = format_datetime(datetime.now(UTC))
    domain = email.from_address.rpartition("@")[2]
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@{domain}>"
    for name, value in email.extra_headers():
        msg[name] = value
    # Quoted-printable keeps every line 7-bit and short, whatever the relay supports.
    msg.set_content(email.text_body, cte="quoted-printable")
    if email.html_body is not None:
        msg.add_alternative(email.html_body, subtype="html", cte="quoted-printable")
    for attachment in email.attachments:
        maintype, _, subtype = attachment.content_type.partition("/")
        msg.add_attachment(
            attachment.data, maintype=maintype, subtype=subtype, filename=attachment.filename
        )
    for part in msg.walk():
        if part is not msg:  # the stdlib repeats MIME-Version in every part it adds
            del part["MIME-Version"]
    return msg


def build_mime(email: CheckedEmail) -> bytes:
    """The email as standard RFC 5322 bytes (what SES Raw and ``.eml`` files take): the
    message ``build_message`` describes, written directly.

    The stdlib's generator is slow for a statement with a PDF (it walks the base64 text
    line by line and parses every header it writes; docs/benchmarks.md has the figures);
    this writer encodes bodies in C (``binascii``), writes short ASCII headers as they
    are and leaves every other header to the stdlib's own folding, so the result is the
    same message for a fraction of the CPU. Boundaries start with ``=_``, which neither
    quoted-printable nor base64 text can contain, so no body needs scanning for them."""
    domain = email.from_address.rpartition("@")[2]
    out = [
        _header("From", email.from_header),
        _header("To", email.to_address),
    ]
    if email.reply_to_header is not None:
        out.append(_header("Reply-To", email.reply_to_header))
    out += [
        _header("Subject", email.subject),
        _header("Date", format_datetime(datetime.now(UTC))),
        _header("Message-ID", f"<{uuid.uuid4().hex}@{domain}>"),
    ]
    out += [_header(name, value) for name, value in email.extra_headers()]
    out.append(b"MIME-Version: 1.0\r\n")
    # Every piece goes into ``out`` and is copied once, by the join at the end: a statement
    # with a PDF is mostly base64 text, and adding bytes together copies all of it again
    # at each step.
    if not email.attachments:
        _write_text_parts(out, email)
        return b"".join(out)
    boundary = _boundary()
    out.append(_multipart_head("mixed", boundary))
    delimiter = b"--" + boundary + b"\r\n"
    out.append(delimiter)
    _write_text_parts(out, email)
    for attachment in email.attachments:
        # The CRLF before a delimiter belongs to the delimiter, not to the part (RFC 2046).
        out += (b"\r\n", delimiter)
        out += (_attachment_headers(attachment.filename, attachment.content_type), b"\r\n")
        _write_base64_lines(out, attachment.data)
    out += (b"\r\n--", boundary, b"--\r\n")
    return b"".join(out)


_TEXT_HEADERS = (
    b'Content-Type: text/%s; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n'
)


def _write_text_parts(out: list[bytes], email: CheckedEmail) -> None:
    """The body without attachments: text/plain, or multipart/alternative with html."""
    text = _TEXT_HEADERS % b"plain" + _quoted_printable(email.text_body)
    if email.html_body is None:
        out.append(text)
        return
    html = _TEXT_HEADERS % b"html" + _quoted_printable(email.html_body)
    boundary = _boundary()
    out.append(_multipart_head("alternative", boundary))
    # The CRLF before a delimiter belongs to the delimiter, not to the part (RFC 2046).
    out += (b"--", boundary, b"\r\n", text, b"\r\n--", boundary, b"\r\n", html)
    out += (b"\r\n--", boundary, b"--\r\n")


def _boundary() -> bytes:
    return f"=_{uuid.uuid4().hex[:24]}".encode()


def _multipart_head(subtype: str, boundary: bytes) -> bytes:
    """A multipart entity's own Content-Type header and the blank line after it."""
    return b'Content-Type: multipart/%s; boundary="%s"\r\n\r\n' % (subtype.encode(), boundary)


def _write_base64_lines(out: list[bytes], data: bytes) -> None:
    """Base64 in lines of 76 characters, CRLF after each (``base64.encodebytes`` with
    CRLF, but encoded in one C call instead of one per line)."""
    text = binascii.b2a_base64(data, newline=False)
    for i in range(0, len(text), 76):
        out += (text[i : i + 76], b"\r\n")


def _quoted_printable(text: str) -> bytes:
    """UTF-8, CRLF line ends, always ending in one (as the stdlib writes text parts)."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n")
    if not lines.endswith("\n"):
        lines += "\n"
    return binascii.b2a_qp(lines.replace("\n", "\r\n").encode(), istext=True)


def _header(name: str, value: str) -> bytes:
    """``Name: value`` with CRLF: as it is when short, printable ASCII; else folded and
    RFC 2047-encoded by the stdlib, exactly as ``build_message`` would write it."""
    if (
        len(name) + len(value) <= _SHORT_HEADER
        and value.isascii()
        and value.isprintable()
        and value == value.strip()
    ):
        return f"{name}: {value}\r\n".encode()
    return SMTP.fold_binary(name, SMTP.header_factory(name, value))


@functools.lru_cache(maxsize=256)
def _attachment_headers(filename: str, content_type: str) -> bytes:
    """An attachment part's headers, written by the stdlib (RFC 2231 file names) and
    kept: a bulk job attaches the same few file names again and again."""
    maintype, _, subtype = content_type.partition("/")
    part = MIMEPart(policy=SMTP)
    part.set_content(b"", maintype, subtype, disposition="attachment", filename=filename)
    return part.as_bytes().partition(b"\r\n\r\n")[0] + b"\r\n"


def check_message_size(raw: bytes | int, limit: int = MAX_SES_MESSAGE_BYTES) -> None:
    """Refuse a message (bytes, or its size) larger than ``limit``: it can never be sent."""
    size = raw if isinstance(raw, int) else len(raw)
    if size > limit:
        raise PermanentError(f"message too large: {size} bytes, the limit is {limit}")

"""S3 and SFTP drops (DESIGN §12): the rules of a recipient's key and what a drop writes.

A drop job's recipient value (the ``key`` column for ``s3``, ``path`` for ``sftp``, stored
in ``to_address``) names a folder under the job's ``--target``. Into it go the email's
attachments under their own file names and, when the template renders a non-blank body,
that body::

    <target>/<key>/<attachment filename>     one per attachment, bytes as loaded
    <target>/<key>/body.txt                  the rendered text body (UTF-8)
    <target>/<key>/body.html                 the rendered HTML body, when the template has one

The key and the file names come from upstream data, so they are hostile until these rules
pass, at the import and again at the claim (rows may be inserted by other systems): a key
is relative (no leading ``/``), made of non-empty segments that are neither ``.`` nor
``..``, with no backslash (a Windows server reads it as a separator), no control, format
(bidi overrides: ``invoice<U+202E>fdp.exe``) or line-separator characters, at most
``MAX_KEY_BYTES`` bytes of UTF-8 and ``MAX_SEGMENT_BYTES`` per segment (a file name on
most file systems). An attachment's file name is one such segment. Two files of one drop
may not share a name (ignoring case: some partners' file systems do), since one would
overwrite the other. Errors never quote the key or a file name: they can hold names.

A drop is idempotent: the same email writes the same names with the same bytes, so a
retried upload (after a timeout, a lost connection, a crash) is harmless, and the drop's
provider id is a digest of what it wrote.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from delivery_server.errors import PermanentError
from delivery_server.models import Attachment, ClaimedEmail, Template
from delivery_server.ports import AttachmentLoader
from delivery_server.renderer import Renderer

__all__ = [
    "BODY_HTML_NAME",
    "BODY_TEXT_NAME",
    "MAX_KEY_BYTES",
    "MAX_SEGMENT_BYTES",
    "DropFile",
    "DropForm",
    "DropRenderer",
    "DropTarget",
    "check_drop_key",
    "check_file_name",
    "drop_files",
]

# S3 allows 1024 bytes of key, prefix and file name included; half of it for the key
# leaves room for both.
MAX_KEY_BYTES = 512
MAX_SEGMENT_BYTES = 255
BODY_TEXT_NAME = "body.txt"
BODY_HTML_NAME = "body.html"
_TEXT_TYPE = "text/plain; charset=utf-8"
_HTML_TYPE = "text/html; charset=utf-8"
# Control, format (bidi overrides, zero-width), surrogate, line and paragraph separators.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
# The extension an outbox file keeps (so a viewer opens it): short, letters and digits.
_EXTENSION = re.compile(r"\.[A-Za-z0-9]{1,8}\Z")


def check_drop_key(value: str, field: str = "key") -> str:
    """The recipient's drop key, checked; ``PermanentError`` naming ``field`` (the CSV
    column, ``key`` or ``path``) and the rule, never the value."""
    if not value:
        raise PermanentError(f"drop {field} is empty")
    if len(value.encode()) > MAX_KEY_BYTES:
        raise PermanentError(f"drop {field} is longer than {MAX_KEY_BYTES} bytes")
    if value.startswith("/"):
        raise PermanentError(f"drop {field} must be relative (no leading '/')")
    for segment in value.split("/"):
        _check_segment(segment, f"drop {field}")
    return value


def check_file_name(name: str) -> str:
    """An attachment's file name as the last segment of a drop path."""
    if "/" in name:
        raise PermanentError("drop file name may not contain '/'")
    _check_segment(name, "drop file name")
    return name


def _check_segment(segment: str, what: str) -> None:
    if not segment:
        raise PermanentError(f"{what} has an empty segment ('//' or a trailing '/')")
    if segment in (".", ".."):
        raise PermanentError(f"{what} has a '.' or '..' segment (it must stay inside the target)")
    if "\\" in segment:
        raise PermanentError(f"{what} contains a backslash")
    if any(unicodedata.category(char) in _REFUSED_CATEGORIES for char in segment):
        raise PermanentError(f"{what} contains a control or format character")
    if len(segment.encode()) > MAX_SEGMENT_BYTES:
        raise PermanentError(f"{what} has a segment longer than {MAX_SEGMENT_BYTES} bytes")


@dataclass(frozen=True, slots=True)
class DropFile:
    """One file of a drop: ``name`` is ``<key>/<file name>``, relative to the target."""

    name: str
    content_type: str
    data: bytes


def drop_files(
    key: str, attachments: Sequence[Attachment], text_body: str | None, html_body: str | None
) -> tuple[DropFile, ...]:
    """What one recipient's drop writes (see the module docstring); ``PermanentError``
    for a bad key or file name, two files of one name, or nothing to write."""
    check_drop_key(key)
    files = [
        DropFile(f"{key}/{check_file_name(a.filename)}", a.content_type, a.data)
        for a in attachments
    ]
    if text_body is not None and text_body.strip():
        files.append(DropFile(f"{key}/{BODY_TEXT_NAME}", _TEXT_TYPE, text_body.encode()))
    if html_body is not None and html_body.strip():
        files.append(DropFile(f"{key}/{BODY_HTML_NAME}", _HTML_TYPE, html_body.encode()))
    if not files:
        raise PermanentError("nothing to drop: no attachments and a blank body")
    names = [f.name.casefold() for f in files]
    if len(set(names)) != len(names):
        raise PermanentError(
            "two files of the drop share a name (attachments, or an attachment named "
            f"{BODY_TEXT_NAME} / {BODY_HTML_NAME})"
        )
    return tuple(files)


class DropTarget(Protocol):
    """A parsed ``--target`` (``drop_targets.S3Target``, ``SftpTarget``)."""

    @property
    def uri(self) -> str: ...


T = TypeVar("T", bound=DropTarget)


@dataclass(frozen=True, slots=True)
class DropForm(Generic[T]):
    """One recipient's drop, ready for a drop sender: ``target`` is the job's parsed
    ``--target``. Also a ``channels.OutboxForm``: embedded mode writes it into the
    outbox (see ``outbox_files``)."""

    channel: str
    job_id: int
    email_id: int
    target: T
    files: tuple[DropFile, ...]

    @property
    def outbox_stem(self) -> str:
        return f"{self.job_id}-{self.email_id}"

    def outbox_files(self) -> Sequence[tuple[str, bytes]]:
        """``<stem>.<channel>.json``, a manifest of where each file would have gone
        (target, ``<key>/<file name>``, type, size, SHA-256), then each file as
        ``<stem>.<channel>.<n><extension>``: outbox file names hold ids only, as the
        email outbox's do; the key and file names are in the manifest."""
        suffixes = [f".{self.channel}.{n}{_extension(f.name)}" for n, f in enumerate(self.files, 1)]
        manifest = {
            "channel": self.channel,
            "target": self.target.uri,
            "files": [
                {
                    "name": f.name,
                    "content_type": f.content_type,
                    "bytes": len(f.data),
                    "sha256": hashlib.sha256(f.data).hexdigest(),
                    "outbox_file": self.outbox_stem + suffix,
                }
                for f, suffix in zip(self.files, suffixes, strict=True)
            ],
        }
        listing = json.dumps(manifest, ensure_ascii=False, indent=2).encode()
        return [(f".{self.channel}.json", listing)] + [
            (suffix, f.data) for f, suffix in zip(self.files, suffixes, strict=True)
        ]

    def digest(self) -> str:
        """Names and bytes of every file, hashed: the same drop gives the same id."""
        digest = hashlib.sha256()
        for f in self.files:
            for part in (f.name.encode(), f.data):
                digest.update(len(part).to_bytes(8, "big"))
                digest.update(part)
        return digest.hexdigest()[:32]


def _extension(name: str) -> str:
    found = _EXTENSION.search(name)
    return found.group(0).lower() if found else ""


class DropRenderer(Generic[T]):
    """``channels.ChannelRenderer`` of a drop channel: the claimed email's key checked
    again, its job's target parsed and checked against the allow-list, the attachments
    loaded, the body rendered; bad input is a ``PermanentError`` for this email only."""

    def __init__(
        self,
        channel: str,
        field: str,
        parse_target: Callable[[str | None], T],
        renderer: Renderer,
        attachments: AttachmentLoader,
    ) -> None:
        self._channel = channel
        self._field = field
        self._parse_target = parse_target
        self._renderer = renderer
        self._attachments = attachments

    async def render(self, claimed: ClaimedEmail, template: Template) -> DropForm[T]:
        """Build the email's drop; nothing has left the process yet."""
        email, job = claimed.email, claimed.job
        key = check_drop_key(email.to_address, self._field)
        target = self._parse_target(job.target)
        content = self._renderer.render(template, email.variables)
        loaded = await asyncio.gather(*(self._attachments.load(ref) for ref in email.attachments))
        files = drop_files(key, loaded, content.text_body, content.html_body)
        return DropForm(self._channel, job.id, email.id, target, files)

"""Attachment loaders: ``file:`` paths inside one directory, and the router by URI scheme.

The ``s3://`` loader (allowed buckets only) is AWS code and lives in ``adapters.aws.s3``.

Attachment URIs come from upstream data, so they are treated as hostile. The rules of the
URI itself live in the model (``AttachmentRef.file_path``, ``s3_location``), shared with
the import; here a ``file:`` path may also not be a symlink that leads outside the base
directory, and an ``s3://`` URI may only name a configured bucket. Error messages never
quote the URI (a key or path can contain a customer's name).
"""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path, PurePosixPath

from delivery_server.errors import PermanentError, RetryableError
from delivery_server.mime import MAX_SES_MESSAGE_BYTES
from delivery_server.models import Attachment, AttachmentRef
from delivery_server.ports import AttachmentLoader

# Nothing larger can go out through SES anyway (base64 makes it bigger still).
MAX_ATTACHMENT_BYTES = MAX_SES_MESSAGE_BYTES


class FileAttachmentLoader:
    """Loads ``file:relative/path`` attachments from inside ``base_dir`` only.

    With no ``base_dir`` every file attachment is refused (the safe default).
    """

    def __init__(self, base_dir: Path | None, *, max_bytes: int = MAX_ATTACHMENT_BYTES) -> None:
        self._base_dir = base_dir
        self._max_bytes = max_bytes

    async def load(self, ref: AttachmentRef) -> Attachment:
        """Read the file (off the event loop); refused or missing is a PermanentError."""
        if self._base_dir is None:
            raise PermanentError("file attachments are disabled (no attachments directory)")
        relative = ref.file_path()
        data = await asyncio.to_thread(_read_inside, self._base_dir, relative, self._max_bytes)
        return Attachment(filename=ref.filename, content_type=ref.content_type, data=data)


def _read_inside(base_dir: Path, relative: PurePosixPath, max_bytes: int) -> bytes:
    """Resolve ``relative`` under ``base_dir`` (symlinks included) and read it."""
    try:
        base = base_dir.resolve(strict=True)
        target = (base / relative).resolve(strict=True)
    except (FileNotFoundError, NotADirectoryError):
        raise PermanentError("file attachment not found") from None
    except OSError as exc:  # symlink loops, I/O errors
        raise PermanentError(f"file attachment unreadable ({type(exc).__name__})") from None
    if not target.is_relative_to(base):
        raise PermanentError("file attachment path escapes the attachments directory")
    # O_NOFOLLOW: the checked path may not be swapped for a symlink before the open.
    # O_NONBLOCK: opening a FIFO must not hang a worker thread forever.
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(target, flags)
    except FileNotFoundError:
        raise PermanentError("file attachment not found") from None
    except OSError as exc:
        raise PermanentError(f"file attachment unreadable ({type(exc).__name__})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise PermanentError("file attachment is not a regular file")
    try:
        with os.fdopen(fd, "rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:  # an I/O error on a network file system may pass
        raise RetryableError(f"file attachment read failed ({type(exc).__name__})") from None
    if len(data) > max_bytes:
        raise PermanentError(f"file attachment too large (limit {max_bytes} bytes)")
    return data


class AttachmentRouter:
    """``ports.AttachmentLoader`` dispatching on the URI scheme (``file:`` or ``s3://``)."""

    def __init__(self, file_loader: AttachmentLoader, s3_loader: AttachmentLoader | None) -> None:
        self._file_loader = file_loader
        self._s3_loader = s3_loader

    async def load(self, ref: AttachmentRef) -> Attachment:
        """Load through the loader for the URI's scheme; unknown schemes are refused."""
        if ref.scheme == "file":
            return await self._file_loader.load(ref)
        if self._s3_loader is None:
            raise PermanentError("s3 attachments are not configured")
        return await self._s3_loader.load(ref)

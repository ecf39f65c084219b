"""Where a drop job writes (DESIGN §12): ``--target`` URIs of the ``s3`` and ``sftp``
channels, parsed, normalised and checked against their allow-lists.

``s3://bucket/prefix/``
    A bucket of ``DELIVERY_DROP_S3_BUCKETS`` and an optional prefix, taken as a folder
    (``s3://b/out`` means ``s3://b/out/``) under the drop rules of ``drops.check_drop_key``.
``sftp://user@host[:port]/dir``
    A host of ``DELIVERY_DROP_SFTP_HOSTS`` (an entry ``host`` allows any port,
    ``host:port`` that port only), port 22 by default, a user name (required), and the
    directory: ``/upload`` is the absolute ``/upload``, ``/~/upload`` is ``upload`` in the
    login directory, none is the login directory itself. A password in the URI is
    refused: it would be stored with the job; it goes in ``DELIVERY_SFTP_PASSWORD``.

``jobs create`` refuses a bad target with ``channels.TargetRefusedError`` (exit 2) naming
the setting; a drop renderer checks the stored target again at the claim (the settings may
have changed since) and fails that email with a ``PermanentError``. A target holds no
recipient data, so messages may quote it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import quote, unquote, urlsplit

from delivery_server.channels import ChannelRules
from delivery_server.drops import check_drop_key
from delivery_server.errors import PermanentError, TargetRefusedError
from delivery_server.settings import Settings

__all__ = [
    "S3Target",
    "SftpTarget",
    "parse_s3_target",
    "parse_sftp_target",
    "refusing_target",
    "s3_rules",
    "s3_target_parser",
    "sftp_rules",
    "sftp_target_parser",
]

SFTP_DEFAULT_PORT = 22
# S3's bucket naming rules (the DNS-compatible ones every region accepts).
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_S3_SETTING = "DELIVERY_DROP_S3_BUCKETS"
_SFTP_SETTING = "DELIVERY_DROP_SFTP_HOSTS"

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class S3Target:
    """A bucket and a folder prefix (``""`` or ending in ``/``)."""

    bucket: str
    prefix: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def object_key(self, name: str) -> str:
        """The object key of a drop file (``drops.DropFile.name``)."""
        return self.prefix + name


@dataclass(frozen=True, slots=True)
class SftpTarget:
    """A login and a directory (``""``: the login directory; relative or absolute)."""

    user: str
    host: str
    port: int
    directory: str

    @property
    def uri(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.directory.startswith("/"):
            path = self.directory
        else:
            path = f"/~/{self.directory}" if self.directory else ""
        return f"sftp://{quote(self.user, safe='')}@{host}:{self.port}{path}"

    def remote_path(self, name: str) -> str:
        """The server path of a drop file (``drops.DropFile.name``)."""
        if not self.directory:
            return name
        return f"{self.directory.rstrip('/')}/{name}"


def parse_s3_target(uri: str | None, allowed: frozenset[str]) -> S3Target:
    """``s3://bucket/prefix/`` checked; ``PermanentError`` saying what is wrong."""
    if not uri:
        raise PermanentError("an s3 job needs --target s3://bucket/prefix/")
    if not uri.startswith("s3://") or "?" in uri or "#" in uri:
        raise PermanentError("s3 target must look like s3://bucket/prefix/")
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise PermanentError("s3 target: invalid bucket name")
    if bucket not in allowed:
        raise PermanentError(f"s3 target: bucket {bucket!r} is not in {_S3_SETTING}")
    prefix = prefix.rstrip("/")
    if prefix:
        check_drop_key(prefix, "target prefix")
        prefix += "/"
    return S3Target(bucket=bucket, prefix=prefix)


def parse_sftp_target(uri: str | None, allowed: frozenset[str]) -> SftpTarget:
    """``sftp://user@host:port/dir`` checked; ``PermanentError`` saying what is wrong."""
    if not uri:
        raise PermanentError("an sftp job needs --target sftp://user@host:port/dir")
    try:
        parts = urlsplit(uri)
        port = parts.port or SFTP_DEFAULT_PORT
    except ValueError:
        raise PermanentError("sftp target must look like sftp://user@host:port/dir") from None
    if parts.scheme != "sftp" or not parts.hostname or parts.query or parts.fragment:
        raise PermanentError("sftp target must look like sftp://user@host:port/dir")
    if parts.password is not None:
        raise PermanentError(
            "sftp target: no password in the URI (it would be stored with the job); "
            "set DELIVERY_SFTP_PASSWORD or DELIVERY_SFTP_PRIVATE_KEY"
        )
    user = unquote(parts.username or "")
    if not user or any(unicodedata.category(c).startswith("C") for c in user):
        raise PermanentError("sftp target needs a user name (sftp://user@host/dir)")
    host = parts.hostname.lower()
    if not _sftp_allowed(host, port, allowed):
        raise PermanentError(f"sftp target: host {host!r} (port {port}) is not in {_SFTP_SETTING}")
    return SftpTarget(user=user, host=host, port=port, directory=_sftp_directory(parts.path))


def _sftp_allowed(host: str, port: int, allowed: frozenset[str]) -> bool:
    shown = f"[{host}]" if ":" in host else host
    return host in allowed or f"{shown}:{port}" in allowed


def _sftp_directory(path: str) -> str:
    """The URL path as the server's directory (see the module docstring)."""
    path = unquote(path)
    relative = path.startswith("/~/") or path == "/~"
    inner = path[2:] if relative else path
    inner = inner.strip("/")
    if not inner:  # sftp://user@host and sftp://user@host/: the login directory
        return ""
    check_drop_key(inner, "target directory")
    return inner if relative else f"/{inner}"


def s3_target_parser(allowed: frozenset[str]) -> Callable[[str | None], S3Target]:
    """The claim-time check of an s3 job's target (``PermanentError``)."""
    return lambda uri: parse_s3_target(uri, allowed)


def sftp_target_parser(allowed: frozenset[str]) -> Callable[[str | None], SftpTarget]:
    """The claim-time check of an sftp job's target (``PermanentError``)."""
    return lambda uri: parse_sftp_target(uri, allowed)


def refusing_target(
    parse: Callable[[str | None], S3Target | SftpTarget],
) -> Callable[[str | None], str | None]:
    """``ChannelRules.check_target``: the normalised URI, or ``TargetRefusedError``
    (``jobs create`` exits 2 with the reason) for what ``parse`` refuses."""

    def check(uri: str | None) -> str | None:
        try:
            return parse(uri).uri
        except PermanentError as exc:
            raise TargetRefusedError(f"--target: {exc}") from None

    return check


def s3_rules(settings: Settings) -> ChannelRules:
    """What ``jobs create --channel s3`` and the import check: the ``key`` column."""
    return ChannelRules(
        name="s3",
        recipient_field="key",
        check_recipient=lambda value: check_drop_key(value, "key"),
        check_target=refusing_target(s3_target_parser(settings.drop_s3_bucket_set)),
    )


def sftp_rules(settings: Settings) -> ChannelRules:
    """What ``jobs create --channel sftp`` and the import check: the ``path`` column."""
    return ChannelRules(
        name="sftp",
        recipient_field="path",
        check_recipient=lambda value: check_drop_key(value, "path"),
        check_target=refusing_target(sftp_target_parser(settings.drop_sftp_host_set)),
    )

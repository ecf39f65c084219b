"""The drop senders' error tables (adapters/aws/s3_drop.py, adapters/sftp_drop.py), row by
row; and the SFTP rename on servers without posix-rename."""

from __future__ import annotations

import socket

import aiohttp
import asyncssh
import pytest
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from delivery_server.adapters.aws.s3_drop import translate_s3_put_error
from delivery_server.adapters.sftp_drop import load_credentials, replace, translate_sftp_error
from delivery_server.errors import (
    AccountPausedError,
    ConfigError,
    PermanentError,
    ProviderUnreachableError,
    RetryableError,
    ThrottledError,
)


def s3_error(code: str, status: int) -> ClientError:
    response = {
        "Error": {"Code": code, "Message": "key customers/jane roe/statement.pdf"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "PutObject")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (s3_error("NoSuchBucket", 404), PermanentError),
        (s3_error("AccessDenied", 403), PermanentError),
        (s3_error("KMS.NotFoundException", 400), PermanentError),
        (s3_error("InvalidDigest", 400), PermanentError),
        (s3_error("EntityTooLarge", 400), PermanentError),
        (s3_error("SlowDown", 503), ThrottledError),
        (s3_error("KMS.ThrottlingException", 400), ThrottledError),
        (s3_error("Whatever", 429), ThrottledError),
        (s3_error("InvalidAccessKeyId", 403), AccountPausedError),
        (s3_error("SignatureDoesNotMatch", 403), AccountPausedError),
        (s3_error("InternalError", 500), RetryableError),
        (s3_error("BadDigest", 400), RetryableError),
        (s3_error("ExpiredToken", 400), RetryableError),
        (s3_error("ServiceUnavailable", 503), RetryableError),
        (NoCredentialsError(), AccountPausedError),
        (ConnectTimeoutError(endpoint_url="http://s3"), ProviderUnreachableError),
        (
            EndpointConnectionError(endpoint_url="http://s3", error=ConnectionRefusedError()),
            ProviderUnreachableError,
        ),
        (
            EndpointConnectionError(endpoint_url="http://s3", error=socket.gaierror()),
            ProviderUnreachableError,
        ),
        (
            EndpointConnectionError(endpoint_url="http://s3", error=ConnectionResetError()),
            RetryableError,
        ),
        (ReadTimeoutError(endpoint_url="http://s3"), RetryableError),
        (aiohttp.ServerDisconnectedError(), RetryableError),
        (TimeoutError(), RetryableError),
    ],
)
def test_s3_put_errors(exc: Exception, expected: type[Exception]) -> None:
    translated = translate_s3_put_error(exc)
    assert type(translated) is expected
    assert "jane" not in str(translated)


@pytest.mark.parametrize(
    ("exc", "expected", "says"),
    [
        (asyncssh.HostKeyNotVerifiable("changed"), PermanentError, "host key"),
        (asyncssh.PermissionDenied("no"), PermanentError, "login refused"),
        (asyncssh.SFTPPermissionDenied("jane"), PermanentError, "refused"),
        (asyncssh.SFTPNoSuchFile("jane"), PermanentError, "refused"),
        (asyncssh.SFTPWriteProtect("jane"), PermanentError, "refused"),
        (asyncssh.SFTPOpUnsupported("jane"), PermanentError, "refused"),
        (asyncssh.SFTPFailure("jane"), RetryableError, "failed"),
        (asyncssh.SFTPNoSpaceOnFilesystem("jane"), RetryableError, "failed"),
        (asyncssh.SFTPQuotaExceeded("jane"), RetryableError, "failed"),
        (asyncssh.SFTPConnectionLost("jane"), RetryableError, "failed"),
        (asyncssh.ConnectionLost("gone"), RetryableError, "connection failed"),
        (ConnectionRefusedError(), RetryableError, "unreachable"),
        (socket.gaierror(), RetryableError, "unreachable"),
        (TimeoutError(), RetryableError, "timed out"),
    ],
)
def test_sftp_errors(exc: Exception, expected: type[Exception], says: str) -> None:
    translated = translate_sftp_error(exc)
    assert type(translated) is expected
    assert says in str(translated)
    assert "jane" not in str(translated)


class V3Server:
    """An SFTP client on a server without posix-rename: rename refuses an existing target."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.calls: list[str] = []

    async def posix_rename(self, old: str, new: str) -> None:
        raise asyncssh.SFTPOpUnsupported("POSIX rename not supported")

    async def exists(self, path: str) -> bool:
        return path in self.files

    async def remove(self, path: str) -> None:
        self.calls.append(f"remove {path}")
        del self.files[path]

    async def rename(self, old: str, new: str) -> None:
        if new in self.files:
            raise asyncssh.SFTPFailure("exists")
        self.calls.append(f"rename {old} {new}")
        self.files[new] = self.files.pop(old)


async def test_without_posix_rename_an_existing_file_is_replaced() -> None:
    server = V3Server({"d/.part-1": b"new", "d/f.pdf": b"old"})

    await replace(server, "d/.part-1", "d/f.pdf")  # type: ignore[arg-type]

    assert server.files == {"d/f.pdf": b"new"}
    assert server.calls == ["remove d/f.pdf", "rename d/.part-1 d/f.pdf"]


async def test_without_posix_rename_a_new_file_is_renamed() -> None:
    server = V3Server({"d/.part-1": b"new"})
    await replace(server, "d/.part-1", "d/f.pdf")  # type: ignore[arg-type]
    assert server.files == {"d/f.pdf": b"new"}


def test_a_private_key_is_read_once_and_never_shown() -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    text = key.export_private_key().decode()

    credentials = load_credentials(text, None, "hunter2")

    assert credentials.private_key is not None
    assert credentials.private_key.public_data == key.public_data
    assert "hunter2" not in repr(credentials)
    assert "PRIVATE" not in repr(credentials)


def test_an_unreadable_private_key_names_the_setting() -> None:
    with pytest.raises(ConfigError, match="DELIVERY_SFTP_PRIVATE_KEY") as caught:
        load_credentials("-----BEGIN OPENSSH PRIVATE KEY-----\nnot a key\n", None, None)
    assert "not a key" not in str(caught.value)

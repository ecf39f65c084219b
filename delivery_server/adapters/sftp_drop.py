"""The ``sftp`` channel's sender: one recipient's drop uploaded over SFTP (DESIGN §12).

Every file of a ``drops.DropForm`` is written under a temporary name in its directory
(``.part-<random>``, created with its parents when missing), flushed (``fsync@openssh.com``
when the server has it), then renamed onto its final name with ``posix-rename@openssh.com``,
which replaces an existing file in one step. A server without that extension gets a plain
rename, after removing an existing file of the final name (a moment without the file,
never half a file). So a partner never reads half a file, and a retried drop (the same
names, the same bytes) is harmless: where an unanswered send makes an email ``unknown``,
an unanswered upload is simply retried. A temporary file a failed upload leaves behind is
removed when possible; one a killed process leaves keeps its ``.part-`` name.

The host key is always verified: against ``DELIVERY_SFTP_KNOWN_HOSTS`` (an OpenSSH
``known_hosts`` file), else ``~/.ssh/known_hosts``; an unknown or changed key refuses the
connection. The login is the target's user with ``DELIVERY_SFTP_PRIVATE_KEY`` (the key's
text, optionally ``DELIVERY_SFTP_PRIVATE_KEY_PASSPHRASE``) and/or
``DELIVERY_SFTP_PASSWORD``; no agent, no ``~/.ssh`` keys, no ``~/.ssh/config``.

One SSH connection per login (user, host, port), kept open and shared by that login's
uploads (SFTP requests are multiplexed on one session); at most
``DELIVERY_SFTP_MAX_UPLOADS`` drops at a time in the process, and as many connections,
the least recently used idle one closed to make room.

How failures map onto the error tree (``errors``):

================================================================  =======================
failure                                                           raised
================================================================  =======================
host key unknown or changed (``HostKeyNotVerifiable``), login     ``PermanentError``
refused (``PermissionDenied``), SFTP permission denied, write
protected, no such path, not a directory, is a directory,
invalid file name, operation unsupported, bad message
connection refused, DNS failure, connect or login timeout, the    ``RetryableError``
connection lost or reset at any point, an upload past its
deadline, no space, quota exceeded, generic SFTP failure
================================================================  =======================

Connection failures cost an attempt rather than pausing the channel (as the webhook's):
one partner's host being down must not hold back the drops to every other host. No
failure is ``unknown``: uploads are idempotent. Messages never quote the path or the user.
"""

from __future__ import annotations

import asyncio
import contextlib
import posixpath
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import asyncssh

from delivery_server.drop_targets import SftpTarget
from delivery_server.drops import DropFile, DropForm
from delivery_server.errors import ConfigError, DeliveryError, PermanentError, RetryableError

_PERMANENT_SFTP_CODES = frozenset(
    {
        asyncssh.FX_PERMISSION_DENIED,
        asyncssh.FX_WRITE_PROTECT,
        asyncssh.FX_NO_SUCH_FILE,
        asyncssh.FX_NO_SUCH_PATH,
        asyncssh.FX_NOT_A_DIRECTORY,
        asyncssh.FX_FILE_IS_A_DIRECTORY,
        asyncssh.FX_INVALID_FILENAME,
        asyncssh.FX_LINK_LOOP,
        asyncssh.FX_OP_UNSUPPORTED,
        asyncssh.FX_BAD_MESSAGE,
        asyncssh.FX_OWNER_INVALID,
        asyncssh.FX_GROUP_INVALID,
    }
)
_TEMP_PREFIX = ".part-"
# A temporary file left by a failed upload is removed within this, or left.
_CLEANUP_SECONDS = 5.0
# What an upload can raise that ``translate_sftp_error`` maps.
_UPLOAD_ERRORS = (asyncssh.Error, OSError, TimeoutError)


def translate_sftp_error(exc: Exception) -> DeliveryError:
    """Map an exception from a connection or an upload onto the error tree (see the
    module table)."""
    name = type(exc).__name__
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        return PermanentError(
            "sftp host key not verified: unknown or changed (see DELIVERY_SFTP_KNOWN_HOSTS)"
        )
    if isinstance(exc, asyncssh.PermissionDenied):
        return PermanentError("sftp login refused (DELIVERY_SFTP_PRIVATE_KEY / _PASSWORD)")
    if isinstance(exc, asyncssh.SFTPError):
        if exc.code in _PERMANENT_SFTP_CODES:
            return PermanentError(f"sftp upload refused ({name})")
        return RetryableError(f"sftp upload failed ({name})")
    if isinstance(exc, TimeoutError):
        return RetryableError("sftp connection or upload timed out")
    if isinstance(exc, OSError):  # refused, DNS, unreachable, reset
        return RetryableError(f"sftp host unreachable ({name})")
    return RetryableError(f"sftp connection failed ({name})")


@dataclass(frozen=True, slots=True)
class SftpCredentials:
    """How this server logs in to every sftp target (the user comes from the target)."""

    private_key: asyncssh.SSHKey | None = None
    password: str | None = None

    def __repr__(self) -> str:  # never show the secrets, whatever logs the object
        return "SftpCredentials(<hidden>)"


def load_credentials(
    private_key: str | None, passphrase: str | None, password: str | None
) -> SftpCredentials:
    """Read the key text once, at start-up; a bad key is a ``ConfigError``."""
    key = None
    if private_key:
        try:
            key = asyncssh.import_private_key(private_key, passphrase)
        except (asyncssh.KeyImportError, ValueError):
            raise ConfigError(
                "configuration error: DELIVERY_SFTP_PRIVATE_KEY: not a private key this "
                "server can read (or DELIVERY_SFTP_PRIVATE_KEY_PASSPHRASE is wrong)"
            ) from None
    return SftpCredentials(private_key=key, password=password or None)


class _Login(NamedTuple):
    user: str
    host: str
    port: int


class _Session:
    """One SSH connection and its SFTP session, with the uploads using it."""

    def __init__(self, connection: asyncssh.SSHClientConnection, sftp: asyncssh.SFTPClient):
        self.connection = connection
        self.sftp = sftp
        self.users = 0

    def close(self) -> None:
        self.sftp.exit()
        self.connection.close()


class SftpDropSender:
    """``channels.ChannelSender`` of the ``sftp`` channel (see ``open_sftp_drop_sender``)."""

    def __init__(
        self,
        credentials: SftpCredentials,
        *,
        known_hosts: Path | None = None,
        max_uploads: int = 8,
        timeout: float = 30.0,
    ) -> None:
        self._credentials = credentials
        self._known_hosts = known_hosts
        self._timeout = timeout
        self._uploads = asyncio.Semaphore(max_uploads)
        self._max_sessions = max_uploads
        self._sessions: OrderedDict[_Login, _Session] = OrderedDict()
        self._connecting: dict[_Login, asyncio.Lock] = {}

    async def max_send_rate(self) -> float | None:
        """No account-wide rate: each partner's server sets its own pace."""
        return None

    async def send(self, outgoing: DropForm[SftpTarget]) -> str:
        """Upload every file of the drop; return ``sftp-<digest>``."""
        target = outgoing.target
        login = _Login(target.user, target.host, target.port)
        async with self._uploads:
            try:
                session = await self._session(login)
            except _UPLOAD_ERRORS as exc:
                raise translate_sftp_error(exc) from None
            session.users += 1
            try:
                await self._upload_all(session.sftp, target, outgoing.files)
            except _UPLOAD_ERRORS as exc:
                if not isinstance(exc, asyncssh.SFTPError) or _connection_gone(exc):
                    self._discard(login, session)
                raise translate_sftp_error(exc) from None
            finally:
                session.users -= 1
        return f"sftp-{outgoing.digest()}"

    async def _upload_all(
        self, sftp: asyncssh.SFTPClient, target: SftpTarget, files: tuple[DropFile, ...]
    ) -> None:
        made: set[str] = set()
        for file in files:
            final = target.remote_path(file.name)
            directory = posixpath.dirname(final)
            # A whole file gets twice the timeout: connect-and-read timeouts do not apply
            # to an SFTP write, and a stalled server must not hold a drop forever.
            async with asyncio.timeout(2 * self._timeout):
                if directory and directory not in made:
                    await sftp.makedirs(directory, exist_ok=True)
                    made.add(directory)
                await _upload(sftp, directory, final, file.data)

    async def _session(self, login: _Login) -> _Session:
        """The login's open session, connecting once when there is none."""
        lock = self._connecting.setdefault(login, asyncio.Lock())
        async with lock:
            session = self._sessions.get(login)
            if session is not None and not session.connection.is_closed():
                self._sessions.move_to_end(login)
                return session
            if session is not None:
                self._discard(login, session)
            self._make_room()
            session = await self._connect(login)
            self._sessions[login] = session
            return session

    async def _connect(self, login: _Login) -> _Session:
        keys = [self._credentials.private_key] if self._credentials.private_key else None
        connection = await asyncssh.connect(
            login.host,
            login.port,
            username=login.user,
            # Never None: None would switch host key checking off.
            known_hosts=str(self._known_hosts) if self._known_hosts else (),
            client_keys=keys,
            password=self._credentials.password,
            agent_path=None,
            config=None,
            connect_timeout=self._timeout,
            login_timeout=self._timeout,
            keepalive_interval=30,
        )
        try:
            sftp = await asyncio.wait_for(connection.start_sftp_client(), self._timeout)
        except BaseException:
            connection.close()
            raise
        return _Session(connection, sftp)

    def _make_room(self) -> None:
        """Close the least recently used idle session when the pool is full."""
        if len(self._sessions) < self._max_sessions:
            return
        for login, session in self._sessions.items():
            if session.users == 0:
                self._discard(login, session)
                return

    def _discard(self, login: _Login, session: _Session) -> None:
        if self._sessions.get(login) is session:
            del self._sessions[login]
            lock = self._connecting.get(login)
            if lock is not None and not lock.locked():  # keep the locks as bounded
                del self._connecting[login]
        session.close()

    async def aclose(self) -> None:
        """Close every connection."""
        sessions = list(self._sessions.values())
        self._sessions.clear()
        for session in sessions:
            session.close()
        for session in sessions:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(session.connection.wait_closed(), _CLEANUP_SECONDS)


def _connection_gone(exc: asyncssh.SFTPError) -> bool:
    return exc.code in (asyncssh.FX_CONNECTION_LOST, asyncssh.FX_NO_CONNECTION)


async def _upload(sftp: asyncssh.SFTPClient, directory: str, final: str, data: bytes) -> None:
    """Write ``data`` to a temporary name beside ``final``, then rename it into place."""
    temp = posixpath.join(directory, f"{_TEMP_PREFIX}{uuid.uuid4().hex}")
    try:
        async with sftp.open(temp, "wb") as handle:
            await handle.write(data)
            with contextlib.suppress(asyncssh.SFTPOpUnsupported):
                await handle.fsync()
        await replace(sftp, temp, final)
    except Exception:
        # Not on cancellation: a wedged connection would hold the shutdown.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(sftp.remove(temp), _CLEANUP_SECONDS)
        raise


async def replace(sftp: asyncssh.SFTPClient, temp: str, final: str) -> None:
    """Rename ``temp`` onto ``final``, replacing a file of that name."""
    try:
        await sftp.posix_rename(temp, final)
        return
    except asyncssh.SFTPOpUnsupported:
        pass
    # SFTP v3's rename refuses an existing target: remove it first (a retried drop).
    if await sftp.exists(final):
        await sftp.remove(final)
    await sftp.rename(temp, final)


@contextlib.asynccontextmanager
async def open_sftp_drop_sender(
    credentials: SftpCredentials,
    *,
    known_hosts: Path | None = None,
    max_uploads: int = 8,
    timeout: float = 30.0,
) -> AsyncIterator[SftpDropSender]:
    """The SFTP drop sender; every connection it opened is closed on exit."""
    sender = SftpDropSender(
        credentials, known_hosts=known_hosts, max_uploads=max_uploads, timeout=timeout
    )
    try:
        yield sender
    finally:
        await sender.aclose()

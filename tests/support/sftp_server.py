"""A real SFTP server (asyncssh) on 127.0.0.1, in its own thread and event loop
(``running_sftp_server``) or on the test's (``serving_sftp``).

It serves one directory (chrooted) to one user, who logs in with a password or a key, under
a host key made for the run; it records the file operations a client asked for (so a test
can tell a file was only ever written under a temporary name) and the connections made,
and can cut every open connection.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh

USER = "partner"
PASSWORD = "correct horse battery staple"


@dataclass
class SftpServerState:
    """What the server saw: ``ops`` as ("open" | "rename" | "posix_rename", path...)
    relative to the served root, and how many SSH connections were made; and what it
    refuses."""

    ops: list[tuple[str, ...]] = field(default_factory=list)
    connections: int = 0
    # Directories (relative) where opening a file is refused with "permission denied".
    read_only: set[str] = field(default_factory=set)
    # Awaited before every open (on the server's loop): a test's scripted fault or hang.
    before_open: Callable[[str], Awaitable[None]] | None = None
    live: list[asyncssh.SSHServerConnection] = field(default_factory=list)


def _relative(path: bytes) -> str:
    """A path as the client named it (in the chroot), without its leading ``/``."""
    return path.decode().lstrip("/")


def _recording_sftp(root: Path, state: SftpServerState) -> type[asyncssh.SFTPServer]:
    class RecordingSftp(asyncssh.SFTPServer):
        def __init__(self, chan: asyncssh.SSHServerChannel) -> None:
            super().__init__(chan, chroot=str(root).encode())

        async def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> object:
            state.ops.append(("open", _relative(path)))
            if any(_relative(path).startswith(f"{d}/") for d in state.read_only):
                raise asyncssh.SFTPPermissionDenied("read-only directory")
            if state.before_open is not None:
                await state.before_open(_relative(path))
            return super().open(path, pflags, attrs)

        def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
            state.ops.append(("posix_rename", _relative(oldpath), _relative(newpath)))
            super().posix_rename(oldpath, newpath)

        def rename(self, oldpath: bytes, newpath: bytes) -> None:
            state.ops.append(("rename", _relative(oldpath), _relative(newpath)))
            super().rename(oldpath, newpath)

    return RecordingSftp


def _ssh_server(client_key: asyncssh.SSHKey, state: SftpServerState) -> type[asyncssh.SSHServer]:
    class PartnerServer(asyncssh.SSHServer):
        def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
            state.connections += 1
            state.live.append(conn)

        def begin_auth(self, username: str) -> bool:
            return True

        def password_auth_supported(self) -> bool:
            return True

        def validate_password(self, username: str, password: str) -> bool:
            return username == USER and password == PASSWORD

        def public_key_auth_supported(self) -> bool:
            return True

        def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
            return username == USER and key.public_data == client_key.public_data

    return PartnerServer


@dataclass
class SftpServer:
    """A running server: where it listens, its keys, and what it saw."""

    port: int
    root: Path
    host_key: asyncssh.SSHKey
    client_key: asyncssh.SSHKey
    state: SftpServerState
    _loop: asyncio.AbstractEventLoop

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def known_hosts_line(self, key: asyncssh.SSHKey | None = None) -> str:
        """The ``known_hosts`` line for this server (with another key: a changed one)."""
        public = (key or self.host_key).export_public_key().decode().strip()
        return f"[{self.host}]:{self.port} {public}\n"

    def target(self, directory: str = "/drops") -> str:
        return f"sftp://{USER}@{self.host}:{self.port}{directory}"

    def cut_connections(self) -> None:
        """Close every open SSH connection (a server restart, a dropped link)."""

        def cut() -> None:
            for conn in self.state.live:
                conn.abort()
            self.state.live.clear()

        self._loop.call_soon_threadsafe(cut)


def _prepare(root: Path) -> tuple[Path, asyncssh.SSHKey, asyncssh.SSHKey, SftpServerState]:
    """The served directory (made, resolved), fresh host and client keys, a clean state."""
    root.mkdir(parents=True, exist_ok=True)
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    return root.resolve(), host_key, client_key, SftpServerState()


async def _listen(
    root: Path,
    state: SftpServerState,
    host_key: asyncssh.SSHKey,
    client_key: asyncssh.SSHKey,
    port: int = 0,
) -> asyncssh.SSHAcceptor:
    return await asyncssh.listen(
        "127.0.0.1",
        port,
        server_host_keys=[host_key],
        server_factory=_ssh_server(client_key, state),
        sftp_factory=_recording_sftp(root, state),
        allow_scp=False,
    )


@asynccontextmanager
async def serving_sftp(root: Path, port: int = 0) -> AsyncIterator[SftpServer]:
    """The same server on the running event loop (its hooks run on the test's loop)."""
    root, host_key, client_key, state = _prepare(root)
    acceptor = await _listen(root, state, host_key, client_key, port)
    loop = asyncio.get_running_loop()
    try:
        yield SftpServer(acceptor.get_port(), root, host_key, client_key, state, _loop=loop)
    finally:
        acceptor.close()
        await acceptor.wait_closed()


@contextmanager
def running_sftp_server(root: Path) -> Iterator[SftpServer]:
    """Serve ``root`` over SFTP on a free loopback port, in a thread, until the block
    ends."""
    root, host_key, client_key, state = _prepare(root)
    loop = asyncio.new_event_loop()
    started: dict[str, Any] = {}
    ready = threading.Event()

    async def listen() -> None:
        try:
            started["acceptor"] = await _listen(root, state, host_key, client_key)
        except BaseException as exc:
            started["error"] = exc
        finally:
            ready.set()

    thread = threading.Thread(target=loop.run_forever, name="sftp-server", daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(listen(), loop)
    if not ready.wait(timeout=30) or "error" in started:
        raise RuntimeError(f"the SFTP server did not start: {started.get('error')!r}")
    acceptor: asyncssh.SSHAcceptor = started["acceptor"]
    server = SftpServer(acceptor.get_port(), root, host_key, client_key, state, _loop=loop)
    try:
        yield server
    finally:

        async def stop() -> None:
            acceptor.close()
            await acceptor.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()

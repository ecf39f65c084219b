"""A TCP proxy on a free loopback port, for cutting a server's database connections.

The product connects to the proxy as if it were MariaDB. ``cut(seconds)`` drops every open
connection at once (a reset, as after a network partition or a database failover) and, for
``seconds``, refuses new ones (accepted and reset at once) or stalls them (accepted, then
never answered until the window ends). ``lose_commit_answers(count, matching)`` is the
worst moment of such a cut: a transaction that ran a statement containing ``matching``
commits on the server, and the connection is reset before the client hears so. Faults
are injected outside the product, where a real outage would hit it.

Threads, not asyncio: the proxy must keep working while a test blocks (``wait_for``,
``subprocess.run``), and a thread per pipe direction is plenty for a test's handful of
pooled connections.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Literal

CutMode = Literal["refuse", "stall"]
_CHUNK = 65536
# A MySQL COM_QUERY packet's command byte followed by the statement (how aiomysql commits).
_COMMIT = b"\x03COMMIT"
_ROLLBACK = b"\x03ROLLBACK"


@dataclass(frozen=True)
class Cut:
    """One injected outage: when (wall clock), for how long, how many connections dropped."""

    started: float
    seconds: float
    mode: CutMode
    dropped: int


class _Pipe:
    """One client connection and its upstream connection, pumped both ways."""

    def __init__(self, client: socket.socket, upstream: socket.socket, proxy: TcpProxy) -> None:
        self.client = client
        self.upstream = upstream
        self.proxy = proxy
        self.matched = False  # the open transaction ran a statement the proxy looks for
        self.swallow_answer = False  # the next answer from upstream must be lost
        self._closed = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._pump_requests, daemon=True).start()
        threading.Thread(target=self._pump_answers, daemon=True).start()

    def _pump_requests(self) -> None:
        try:
            while data := self.client.recv(_CHUNK):
                self.proxy._inspect(self, data)
                self.upstream.sendall(data)
        except OSError:
            pass
        self._done()

    def _pump_answers(self) -> None:
        try:
            while data := self.upstream.recv(_CHUNK):
                if self.swallow_answer:  # the server committed; the client never hears it
                    self.proxy._answer_lost()
                    self.close(reset=True)
                    break
                self.client.sendall(data)
        except OSError:
            pass
        self._done()

    def _done(self) -> None:
        self.close(reset=False)
        self.proxy._forget(self)

    def close(self, *, reset: bool) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        for sock in (self.client, self.upstream):
            _close(sock, reset=reset)


def _close(sock: socket.socket, *, reset: bool) -> None:
    """Close a socket; ``reset`` sends an RST (SO_LINGER 0) instead of a FIN."""
    with contextlib.suppress(OSError):
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # shutdown wakes a recv blocked in another thread; close alone would not.
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class TcpProxy:
    """Forwards ``127.0.0.1:<port>`` to ``upstream_host:upstream_port``."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.cuts: list[Cut] = []
        self.connections = 0  # connections forwarded since start
        self.refused = 0  # connections refused or stalled during cuts
        self.lost_answers: list[float] = []  # when a commit's answer was lost (wall clock)
        self._lose_commits = 0
        self._matching = b""
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._pipes: set[_Pipe] = set()
        self._stalled: list[socket.socket] = []
        self._blocked_until = 0.0
        self._mode: CutMode = "refuse"
        self._lock = threading.Lock()
        self._closing = False
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    def url_for(self, database_url: str) -> str:
        """``database_url`` with its host and port replaced by this proxy's."""
        host = f"{self.upstream[0]}:{self.upstream[1]}"
        assert host in database_url, f"{database_url} does not point at {host}"
        return database_url.replace(host, f"127.0.0.1:{self.port}", 1)

    def start(self) -> TcpProxy:
        self._thread.start()
        return self

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._pipes)

    def blocked(self) -> bool:
        """True while a cut is under way."""
        return time.monotonic() < self._blocked_until

    def cut(self, seconds: float, mode: CutMode = "refuse") -> Cut:
        """Drop every open connection now and refuse (or stall) new ones for ``seconds``.
        Returns at once; the proxy heals by itself when the window is over."""
        with self._lock:
            self._blocked_until = time.monotonic() + seconds
            self._mode = mode
            pipes, self._pipes = self._pipes, set()
        for pipe in pipes:
            pipe.close(reset=True)
        record = Cut(started=time.time(), seconds=seconds, mode=mode, dropped=len(pipes))
        self.cuts.append(record)
        if mode == "stall":
            threading.Thread(target=self._release_stalled, args=(seconds,), daemon=True).start()
        return record

    def lose_commit_answers(self, count: int, matching: bytes) -> None:
        """For the next ``count`` transactions that run a statement containing
        ``matching``: forward their COMMIT, then reset the connection instead of passing
        the server's answer back (the transaction is committed; the client cannot know)."""
        with self._lock:
            self._lose_commits = count
            self._matching = matching

    def _inspect(self, pipe: _Pipe, data: bytes) -> None:
        with self._lock:
            if self._lose_commits <= 0:
                return
            if self._matching in data:
                pipe.matched = True
            elif _COMMIT in data and pipe.matched:
                self._lose_commits -= 1
                pipe.swallow_answer = True
            elif _COMMIT in data or _ROLLBACK in data:
                pipe.matched = False

    def _answer_lost(self) -> None:
        with self._lock:
            self.lost_answers.append(time.time())

    def _release_stalled(self, seconds: float) -> None:
        time.sleep(seconds)
        with self._lock:
            stalled, self._stalled = self._stalled, []
        for sock in stalled:
            _close(sock, reset=True)

    def _accept_loop(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            if self._closing:
                _close(client, reset=True)
                return
            with self._lock:
                blocked = time.monotonic() < self._blocked_until
                if blocked:
                    self.refused += 1
                    if self._mode == "stall":
                        self._stalled.append(client)
                        continue
            if blocked:
                _close(client, reset=True)
                continue
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.upstream, timeout=10)
        except OSError:
            _close(client, reset=True)
            return
        upstream.settimeout(None)
        pipe = _Pipe(client, upstream, self)
        with self._lock:
            cut_meanwhile = time.monotonic() < self._blocked_until
            if not cut_meanwhile:
                self._pipes.add(pipe)
                self.connections += 1
        if cut_meanwhile:  # a cut began while this connection was being opened
            pipe.close(reset=True)
            return
        pipe.start()

    def _forget(self, pipe: _Pipe) -> None:
        with self._lock:
            self._pipes.discard(pipe)

    def close(self) -> None:
        self._closing = True
        _close(self._listener, reset=False)
        with self._lock:
            pipes, self._pipes = self._pipes, set()
            stalled, self._stalled = self._stalled, []
        for pipe in pipes:
            pipe.close(reset=True)
        for sock in stalled:
            _close(sock, reset=True)
        self._thread.join(timeout=5)

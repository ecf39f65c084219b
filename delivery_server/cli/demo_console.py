"""The demo's operator console: the API listener on loopback, and a token to log in with.

The console listens on ``DEFAULT_PORT`` so that a newcomer's bookmark keeps working from
one run to the next; when something else holds that port, any free port is taken
instead (the URL printed is always the one bound). The token is minted into the demo's
own database, which is recreated on every run, so it is new each time too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
from typing import TYPE_CHECKING

from rich.console import Console

from delivery_server.api_tokens import TokenScope, mint_token
from delivery_server.errors import DeliveryError
from delivery_server.lifecycle import stop_on_signals
from delivery_server.ports import Store

if TYPE_CHECKING:
    from delivery_server.app import Listening

DEFAULT_PORT = 8090
HOST = "127.0.0.1"
OPERATOR = "demo"  # the token's name: "who" in the audit log


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 0 to 65535."""
    if not (text.isascii() and text.isdigit() and int(text) <= 65535):
        raise argparse.ArgumentTypeError("a port is a number from 0 to 65535")
    return int(text)


def bindable_port(wanted: int) -> int:
    """``wanted`` when it is free on loopback now (0: any port); else 0."""
    if wanted == 0:
        return 0
    with socket.socket() as probe, contextlib.suppress(OSError):
        probe.bind((HOST, wanted))
        return wanted
    return 0


async def demo_token(store: Store) -> str:
    """A new operate token named ``demo``: the demo's operator may pause and cancel."""
    secret, hashed = mint_token()
    await store.add_api_token(OPERATOR, TokenScope.OPERATE, hashed)
    return secret


def show_console(console: Console, port: int, token: str) -> None:
    """The URL and the token, each alone on its line (a terminal may wrap neither)."""
    console.print(f"operator console: [bold]http://{HOST}:{port}/[/] - log in with this token:")
    console.print(token, soft_wrap=True, highlight=False, markup=False)


async def until_listening(listening: Listening, server: asyncio.Task[None]) -> None:
    """Wait until the server's listeners are bound (its own error if it fails first)."""
    started = asyncio.create_task(listening.started.wait())
    await asyncio.wait({started, server}, return_when=asyncio.FIRST_COMPLETED)
    if not started.done():
        started.cancel()
        await server  # it ended before listening: its error is the demo's
        raise DeliveryError("demo: the server stopped before it was listening")


async def until_interrupted(stop: asyncio.Event, server: asyncio.Task[None]) -> None:
    """Wait for Ctrl-C (or SIGTERM), or for the server to end by itself."""
    with stop_on_signals(stop):
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({stopping, server}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()

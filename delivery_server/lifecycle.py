"""Process lifecycle: signals set a stop flag; a second signal forces the exit.

As in uvicorn (``Server.capture_signals``), the handlers only set a flag; the loops
notice it and shut down in stages. The handlers that were installed before are saved
and restored afterwards, so a caller's own SIGINT/SIGTERM handling (a test runner's, an
embedding program's) works again once the server has stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Iterator

import structlog

log = structlog.get_logger(__name__)

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    """Set ``stop`` on SIGTERM/SIGINT; a second signal exits at once (code 1). On exit,
    the handlers that were there before are put back."""
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            log.warning("forced_exit", signal=signal.Signals(signum).name)
            os._exit(1)
        log.info("shutdown_requested", signal=signal.Signals(signum).name)
        stop.set()

    # The loop's own handlers (safe to set an asyncio.Event from); but removing them
    # leaves the default action, not what was there before: so that is saved here.
    previous = {sig: signal.getsignal(sig) for sig in HANDLED_SIGNALS}
    for sig in HANDLED_SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            loop.remove_signal_handler(sig)
            # None: a handler not installed from Python, which cannot be put back.
            if handler is not None:
                signal.signal(sig, handler)

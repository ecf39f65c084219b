"""What every command module shares: exit codes, settings, logging, argparse types.

Command modules import this, never the package ``cli`` itself, so the command tree has no
import cycle: ``cli`` imports the command modules, they import ``_common``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from delivery_server.settings import Settings, load_settings

T = TypeVar("T")
Handler = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def run_coroutine(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on uvloop when it is installed, else on the default loop."""
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop
    except ImportError:  # uvloop is not built for every platform (Windows)
        pass
    else:
        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(coro)


def settings_for(args: argparse.Namespace, **overrides: Any) -> Settings:
    """The settings for this command (``--config``, then the environment)."""
    # Absent unless given: see the note on --config in build_parser.
    config: Path | None = getattr(args, "config", None)
    return load_settings(config, **overrides)


def admin_logging(settings: Settings) -> None:
    """Logs of short commands go to stderr: their stdout is tables or JSON for scripts."""
    from delivery_server.logging import configure_logging

    configure_logging(settings, stream=sys.stderr)


def fail(message: str, code: int = EXIT_FAILURE) -> int:
    """Print one line on stderr and return ``code``."""
    sys.stderr.write(" ".join(message.split()) + "\n")
    return code


def describe_unexpected(exc: BaseException) -> str:
    """One line for an error we did not expect (driver, network, OS).

    Only the first line of the message: drivers go on with the SQL and its parameters,
    which hold personal data.
    """
    text = str(exc).strip()
    first = text.splitlines()[0][:300] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def positive_int(maximum: int) -> Callable[[str], int]:
    """An argparse type: an integer from 1 to ``maximum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not 1 <= value <= maximum:
            raise argparse.ArgumentTypeError(f"must be between 1 and {maximum}")
        return value

    return parse

"""The ``delivery-server`` command line (DESIGN §6).

Exit codes: 0 ok; 2 usage or configuration error (one line naming the setting); 1 any
other failure (one line on stderr). Commands live in ``cli_jobs``, ``cli_templates`` and
``demo``; this module parses, loads the settings, runs the coroutine and maps errors to
exit codes, so that every command fails the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from delivery_server import __version__
from delivery_server.errors import ConfigError, DeliveryError
from delivery_server.settings import Settings, load_settings

T = TypeVar("T")
Handler = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXAMPLES = """\
examples:
  delivery-server demo                       1,000 statements end to end, nothing to set up
  delivery-server db upgrade
  delivery-server templates push delivery_server/examples/templates
  delivery-server jobs create --template statement --from "Bank <s@bank.example>" \\
      --recipients customers.csv
  delivery-server jobs watch 1
  delivery-server run                        serve (settings: DELIVERY_* or --config)

exit codes: 0 ok, 1 failure, 2 usage or configuration error
"""


class UsageError(DeliveryError):
    """A command was called with arguments that cannot work together (exit code 2)."""


def main(argv: list[str] | None = None) -> int:
    """Run one command; return its exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_usage(sys.stderr)
        return EXIT_USAGE
    try:
        return run_coroutine(handler(args))
    except ConfigError as exc:
        return fail(str(exc), EXIT_USAGE)
    except UsageError as exc:
        return fail(f"error: {exc}", EXIT_USAGE)
    except DeliveryError as exc:
        return fail(f"error: {exc}")
    except KeyboardInterrupt:
        return fail("interrupted", EXIT_INTERRUPTED)
    except Exception as exc:
        return fail(f"error: {describe_unexpected(exc)}")


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree."""
    from delivery_server import cli_jobs, cli_templates

    # --config is accepted before and after the subcommand: SUPPRESS keeps a subcommand
    # from overwriting a value given earlier with its own default. (No set_defaults for
    # it: parents share their action objects, so that would change every default.)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        type=Path,
        default=argparse.SUPPRESS,
        metavar="FILE",
        help="TOML settings file (environment variables win over it)",
    )
    parser = argparse.ArgumentParser(
        prog="delivery-server",
        description="Bulk personalized email: jobs in MySQL/SQLite, SQS fan-out, SES/SMTP.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    run = commands.add_parser("run", parents=[common], help="run the server")
    run.add_argument(
        "--role",
        choices=["all", "publisher", "consumer"],
        default="all",
        help="what this process does (default: all)",
    )
    run.add_argument(
        "--restart-failed", action="store_true", help="restart every failed job first, then serve"
    )
    run.set_defaults(handler=_run)

    db = commands.add_parser("db", parents=[common], help="database schema")
    db_commands = db.add_subparsers(title="commands", metavar="COMMAND", required=True)
    upgrade = db_commands.add_parser(
        "upgrade", parents=[common], help="create or upgrade the schema (idempotent)"
    )
    upgrade.set_defaults(handler=_db_upgrade)

    cli_jobs.add_commands(commands, common)
    cli_templates.add_commands(commands, common)

    demo = commands.add_parser(
        "demo",
        parents=[common],
        help="send N bank statements end to end, fully embedded (SQLite, outbox)",
    )
    demo.add_argument(
        "--emails",
        type=positive_int(1_000_000),
        default=1000,
        metavar="N",
        help="how many customers (default: 1000)",
    )
    demo.add_argument(
        "--output",
        type=Path,
        default=Path("demo-output"),
        metavar="DIR",
        help="where the database, PDFs and .eml files go (default: demo-output)",
    )
    demo.set_defaults(handler=_demo)
    return parser


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


async def _run(args: argparse.Namespace) -> int:
    from delivery_server.app import serve
    from delivery_server.logging import configure_logging

    settings = settings_for(args)
    configure_logging(settings)
    await serve(settings, role=args.role, restart_failed=args.restart_failed)
    return EXIT_OK


async def _db_upgrade(args: argparse.Namespace) -> int:
    from delivery_server.app import upgrade_database

    settings = settings_for(args)
    admin_logging(settings)
    await upgrade_database(settings)
    print("database schema is up to date")
    return EXIT_OK


async def _demo(args: argparse.Namespace) -> int:
    from delivery_server.demo import run_demo

    return await run_demo(getattr(args, "config", None), emails=args.emails, output=args.output)

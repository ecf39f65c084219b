"""The ``delivery-server`` command line (DESIGN §6).

Exit codes: 0 ok; 2 usage or configuration error (one line naming the setting); 1 any
other failure, a ``ConflictError`` (the job's state forbids the action) among them (one
line on stderr). Each command group is a module of this package
(``server``, ``jobs``, ``templates``, ``demo``), sharing ``_common``; this module builds the
tree, runs the chosen command's coroutine and maps errors to exit codes, so that every
command fails the same way.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from delivery_server import __version__
from delivery_server.cli import demo, jobs, server, suppressions, templates, tokens
from delivery_server.cli._common import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    Handler,
    describe_unexpected,
    fail,
    run_coroutine,
)
from delivery_server.errors import ConfigError, ConflictError, DeliveryError, UsageError

__all__ = ["build_parser", "main"]

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
    except ConflictError as exc:  # not a usage error: the same command may work later
        return fail(f"error: {exc}", EXIT_FAILURE)
    except DeliveryError as exc:
        return fail(f"error: {exc}")
    except KeyboardInterrupt:
        return fail("interrupted", EXIT_INTERRUPTED)
    except Exception as exc:
        return fail(f"error: {describe_unexpected(exc)}")


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree."""
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

    for group in (server, jobs, templates, suppressions, tokens, demo):
        group.add_commands(commands, common)
    return parser

"""``delivery-server run`` and ``delivery-server db ...``: serve, and keep the schema."""

from __future__ import annotations

import argparse
from typing import Any

from delivery_server.cli._common import EXIT_OK, admin_logging, settings_for


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``run`` and ``db`` to the command tree."""
    run = commands.add_parser("run", parents=[common], help="run the server")
    run.add_argument(
        "--role",
        choices=["all", "publisher", "consumer", "tracker", "api"],
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

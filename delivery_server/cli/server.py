"""``delivery-server run`` and ``delivery-server db ...``: serve, and keep the schema."""

from __future__ import annotations

import argparse
from typing import Any

from delivery_server.cli._common import EXIT_OK, admin_logging, positive_int, settings_for

MAX_RETENTION_DAYS = 36_500  # as DELIVERY_RETENTION_DAYS


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
    purge = db_commands.add_parser(
        "purge",
        parents=[common],
        help="erase the addresses, variables and attachment refs of finished jobs' emails",
    )
    purge.add_argument(
        "--older-than",
        type=positive_int(MAX_RETENTION_DAYS),
        metavar="DAYS",
        help="jobs that finished more than DAYS ago (default: DELIVERY_RETENTION_DAYS, 90)",
    )
    purge.add_argument("--json", action="store_true", help="print JSON for scripts")
    purge.set_defaults(handler=_db_purge)


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


async def _db_purge(args: argparse.Namespace) -> int:
    from delivery_server.app import open_store
    from delivery_server.cli.output import print_json
    from delivery_server.retention import Retention

    settings = settings_for(args)
    admin_logging(settings)
    days = args.older_than or settings.retention_days
    async with open_store(settings) as store:
        report = await Retention(store, days=days).purge_once()
    if args.json:
        print_json(
            {
                "finished_before": report.finished_before.isoformat() + "Z",
                "jobs_purged": report.purged,
                "jobs_unfinished": report.unfinished,
                "emails_erased": report.erased,
            }
        )
        return EXIT_OK
    print(
        f"purged {report.purged} jobs finished before "
        f"{report.finished_before:%Y-%m-%d %H:%M} UTC ({days} days): "
        f"{report.erased:,} emails erased"
    )
    if report.unfinished:
        print(f"{report.unfinished} jobs were reopened meanwhile and left for a later pass")
    return EXIT_OK

"""``delivery-server jobs find ADDR`` and ``jobs export JOB``: a customer's emails across
jobs, and a job's emails as CSV.

The address looked for is personal data: it is never logged and never printed in the
table (the JSON has each email's address as stored, for scripts). An export is written
to stdout a page at a time, so a job of any size exports in flat memory.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from delivery_server.cli._common import EXIT_OK, admin_logging, positive_int, settings_for
from delivery_server.cli.output import plural, print_json, redact
from delivery_server.email_listing import EmailFilter
from delivery_server.email_records import EXPORT_COLUMNS, FoundEmail, export_row
from delivery_server.errors import NotFoundError
from delivery_server.models import DeliveryStatus, EmailStatus
from delivery_server.ports import Store

EXPORT_PAGE = 1_000
DEFAULT_FOUND = 100
_NUMBERS = frozenset({"email", "job", "attempts"})
_WRAPPED = frozenset({"job name", "last error"})


def add_commands(
    sub: Any, parents: Sequence[argparse.ArgumentParser], job_id: Callable[[str], int]
) -> None:
    """Add ``jobs find`` and ``jobs export`` to the ``jobs`` commands."""
    find = sub.add_parser(
        "find", parents=list(parents), help="which jobs and emails went to an address"
    )
    find.add_argument("address", type=address_looked_for, metavar="ADDR")
    find.add_argument(
        "--limit",
        type=positive_int(100_000),
        default=DEFAULT_FOUND,
        metavar="N",
        help=f"at most N emails, newest first (default {DEFAULT_FOUND})",
    )
    find.set_defaults(handler=_find)

    # No --json: the output is CSV (the parents minus as_json).
    export = sub.add_parser(
        "export", parents=list(parents[:1]), help="a job's emails as CSV on stdout"
    )
    export.add_argument("job", type=job_id, metavar="JOB")
    export.add_argument(
        "--status",
        type=EmailStatus,
        choices=list(EmailStatus),
        metavar="S",
        help="only emails in this status (" + ", ".join(EmailStatus) + ")",
    )
    export.add_argument(
        "--delivery-status",
        type=DeliveryStatus,
        choices=list(DeliveryStatus),
        metavar="D",
        help="only emails the recipient's side reported so (" + ", ".join(DeliveryStatus) + ")",
    )
    export.set_defaults(handler=_export)


def address_looked_for(text: str) -> str:
    """An argparse type: something with an ``@`` (it need not be valid: a row with a bad
    address is worth finding too)."""
    address = text.strip()
    if "@" not in address or len(address) > 320:
        raise argparse.ArgumentTypeError("not an email address")
    return address


@asynccontextmanager
async def _store(args: argparse.Namespace) -> AsyncIterator[Store]:
    from delivery_server.app import open_store

    settings = settings_for(args)
    admin_logging(settings)
    async with open_store(settings) as store:
        yield store


async def _find(args: argparse.Namespace) -> int:
    async with _store(args) as store:
        found = await store.emails_to(args.address, args.limit)
    if args.json:
        print_json([found_json(item) for item in found])
    else:
        Console().print(found_table(found))
    return EXIT_OK


async def _export(args: argparse.Namespace) -> int:
    selected = EmailFilter(status=args.status, delivery_status=args.delivery_status)
    writer = csv.writer(sys.stdout, lineterminator="\n")
    async with _store(args) as store:
        try:
            await store.job(args.job)
        except NotFoundError:
            raise NotFoundError(f"job {args.job} does not exist") from None
        writer.writerow(EXPORT_COLUMNS)
        after = 0
        while page := await store.email_page(args.job, selected, EXPORT_PAGE, after):
            writer.writerows(export_row(row) for row in page)
            sys.stdout.flush()
            after = page[-1].id
    return EXIT_OK


def found_json(item: FoundEmail) -> dict[str, Any]:
    email = item.email
    return {
        "email_id": email.id,
        "job_id": email.job_id,
        "job_name": item.job_name,
        "job_status": str(item.job_status),
        "to_address": email.to_address,
        "status": str(email.status),
        "delivery_status": str(email.delivery_status) if email.delivery_status else None,
        "attempts": email.attempts,
        "last_error": redact(email.last_error) if email.last_error else None,
        "provider_message_id": email.provider_message_id,
        "created_at": _time(email.created_at),
        "sent_at": _time(email.sent_at),
        "delivery_updated_at": _time(email.delivery_updated_at),
    }


def found_table(found: Sequence[FoundEmail]) -> Table:
    table = Table(
        title=f"{plural(len(found), 'email')} to this address" if found else "no email to it",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    # Ids, states and times stay whole (a state cut in two reads as two words) and fit 80
    # columns; the error takes what is left and folds. Job names: --json, or jobs show.
    for column in ("email", "job", "job status", "status", "delivery", "attempts", "sent (UTC)"):
        table.add_column(column, justify="right" if column in _NUMBERS else "left", no_wrap=True)
    table.add_column("last error", overflow="fold", ratio=1)
    for item in found:
        email = item.email
        table.add_row(
            str(email.id),
            str(email.job_id),
            str(item.job_status),
            str(email.status),
            str(email.delivery_status or ""),
            str(email.attempts),
            f"{email.sent_at:%Y-%m-%d %H:%M}" if email.sent_at else "",
            Text(redact(email.last_error or "")),
        )
    return table


def _time(value: Any) -> str | None:
    return value.isoformat() + "Z" if value is not None else None

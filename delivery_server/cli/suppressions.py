"""``delivery-server suppressions ...``: the addresses that must not be mailed again.

The tracker adds hard bounces and complaints by itself and the unsubscribe endpoint adds
``unsubscribe``; operators add ``manual`` entries (or any reason) here, import a list from
another system, look and remove. An email to a suppressed address becomes ``suppressed``
when a consumer claims it: never sent, not an attempt, not a failure of its job.
"""

from __future__ import annotations

import argparse
import csv
import io
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from delivery_server.cli._common import EXIT_OK, admin_logging, positive_int, settings_for
from delivery_server.cli.output import print_json
from delivery_server.errors import DeliveryError, PermanentError, UsageError
from delivery_server.mime import validate_address
from delivery_server.models import Suppression, SuppressionReason, utcnow
from delivery_server.suppression import normalise_address

# Rows of an import written per store call: bounded memory for lists of any length.
IMPORT_BATCH = 1000
# How many bad lines of an import are listed (all are counted).
SHOWN_INVALID_LINES = 20


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``suppressions`` and its subcommands to the command tree."""
    group = commands.add_parser(
        "suppressions", parents=[common], help="addresses never to be mailed again"
    )
    sub = group.add_subparsers(title="commands", metavar="COMMAND", required=True)
    reason = argparse.ArgumentParser(add_help=False)
    reason.add_argument(
        "--reason",
        type=suppression_reason,
        choices=list(SuppressionReason),
        default=SuppressionReason.MANUAL,
        help="why (default: manual)",
    )
    reason.add_argument(
        "--expires", type=future_time, metavar="ISO8601", help="until when (default: forever)"
    )
    reason.add_argument("--note", metavar="TEXT", help="a note for operators (no personal data)")

    listing = sub.add_parser("list", parents=[common], help="the suppression list, newest first")
    listing.add_argument("--json", action="store_true", help="print JSON for scripts")
    listing.add_argument("--limit", type=positive_int(100_000), default=100, metavar="N")
    listing.add_argument("--offset", type=int, default=0, metavar="N")
    listing.set_defaults(handler=_list)

    add = sub.add_parser("add", parents=[common, reason], help="suppress addresses")
    add.add_argument("addresses", nargs="+", metavar="ADDR")
    add.add_argument("--json", action="store_true", help="print JSON for scripts")
    add.set_defaults(handler=_add)

    remove = sub.add_parser("remove", parents=[common], help="mail these addresses again")
    remove.add_argument("addresses", nargs="+", metavar="ADDR")
    remove.add_argument("--json", action="store_true", help="print JSON for scripts")
    remove.set_defaults(handler=_remove)

    load = sub.add_parser(
        "import",
        parents=[common, reason],
        help="suppress every address of a file (one per line, or CSV with an email column)",
    )
    load.add_argument("file", type=Path, metavar="FILE")
    load.add_argument("--json", action="store_true", help="print JSON for scripts")
    load.set_defaults(handler=_import)


def suppression_reason(text: str) -> SuppressionReason:
    """An argparse type: one of the reasons, all of them named when it is none."""
    try:
        return SuppressionReason(text)
    except ValueError:
        names = ", ".join(reason.value for reason in SuppressionReason)
        raise argparse.ArgumentTypeError(f"must be one of {names}") from None


def future_time(text: str) -> datetime:
    """An argparse type: an ISO 8601 time in the future, as naive UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time") from None
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    if value <= utcnow():
        raise argparse.ArgumentTypeError("must be in the future")
    return value


def checked_address(text: str) -> str:
    """A syntactically valid address in its normalised form; the error never quotes it."""
    return normalise_address(validate_address(text.strip()))


def entries(addresses: Sequence[str], args: argparse.Namespace) -> list[Suppression]:
    """The entries for ``addresses`` with the command's reason, expiry and note."""
    return [
        Suppression(
            address=address,
            reason=args.reason,
            created_at=utcnow(),
            expires_at=args.expires,
            note=args.note,
        )
        for address in addresses
    ]


def _checked_arguments(addresses: Sequence[str]) -> list[str]:
    checked: list[str] = []
    for position, text in enumerate(addresses, start=1):
        try:
            checked.append(checked_address(text))
        except PermanentError as exc:
            raise UsageError(f"address {position}: {exc}") from None
    return checked


async def _list(args: argparse.Namespace) -> int:
    from delivery_server.app import open_store

    settings = settings_for(args)
    admin_logging(settings)
    async with open_store(settings) as store:
        found = await store.suppressions(limit=args.limit, offset=args.offset)
    if args.json:
        print_json([suppression_json(entry) for entry in found])
        return EXIT_OK
    table = Table(
        title="suppressions" if found else "suppressions: none",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    for column in ("address", "reason", "since (UTC)", "expires (UTC)", "note"):
        table.add_column(column)
    for entry in found:
        table.add_row(
            entry.address,
            entry.reason.value,
            f"{entry.created_at:%Y-%m-%d %H:%M}" if entry.created_at else "",
            f"{entry.expires_at:%Y-%m-%d %H:%M}" if entry.expires_at else "never",
            entry.note or "",
        )
    Console().print(table)
    return EXIT_OK


def suppression_json(entry: Suppression) -> dict[str, Any]:
    return {
        "address": entry.address,
        "reason": entry.reason.value,
        "created_at": entry.created_at.isoformat() + "Z" if entry.created_at else None,
        "expires_at": entry.expires_at.isoformat() + "Z" if entry.expires_at else None,
        "note": entry.note,
    }


async def _add(args: argparse.Namespace) -> int:
    from delivery_server.app import open_store

    addresses = _checked_arguments(args.addresses)
    settings = settings_for(args)
    admin_logging(settings)
    async with open_store(settings) as store:
        added = await store.add_suppressions(entries(addresses, args))
    _report(args, {"added": added}, f"{added:,} address(es) suppressed ({args.reason.value})")
    return EXIT_OK


async def _remove(args: argparse.Namespace) -> int:
    from delivery_server.app import open_store

    addresses = _checked_arguments(args.addresses)
    settings = settings_for(args)
    admin_logging(settings)
    async with open_store(settings) as store:
        removed = await store.remove_suppressions(addresses)
    _report(args, {"removed": removed}, f"{removed:,} address(es) removed from the list")
    return EXIT_OK


async def _import(args: argparse.Namespace) -> int:
    from delivery_server.app import open_store

    settings = settings_for(args)
    admin_logging(settings)
    invalid: list[tuple[int, str]] = []
    added = 0
    async with open_store(settings) as store:
        for batch in _batches(read_addresses(args.file, invalid)):
            added += await store.add_suppressions(entries(batch, args))
    summary = {"added": added, "invalid": [{"line": n, "error": e} for n, e in invalid]}
    text = f"{added:,} address(es) suppressed ({args.reason.value}) from {args.file}"
    if invalid:
        shown = "\n".join(f"  line {n}: {e}" for n, e in invalid[:SHOWN_INVALID_LINES])
        more = len(invalid) - SHOWN_INVALID_LINES
        text += f"; {len(invalid):,} line(s) skipped:\n{shown}"
        text += f"\n  ... and {more:,} more (--json lists all)" if more > 0 else ""
    _report(args, summary, text)
    return EXIT_OK


def _report(args: argparse.Namespace, summary: dict[str, Any], text: str) -> None:
    if args.json:
        print_json(summary)
    else:
        print(text)


def _batches(addresses: Iterator[str]) -> Iterator[list[str]]:
    batch: list[str] = []
    for address in addresses:
        batch.append(address)
        if len(batch) >= IMPORT_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def read_addresses(path: Path, invalid: list[tuple[int, str]]) -> Iterator[str]:
    """The valid addresses of ``path``; bad lines go to ``invalid`` as (line, error).

    One address per line, or a CSV file whose header has an ``email`` (or ``address``)
    column, as exported by SES's suppression list or another mailer.
    """
    try:
        # utf-8-sig: spreadsheets save CSV with a byte order mark, which is not part of
        # the header's first name (nor of a plain list's first address).
        handle = path.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise DeliveryError(f"cannot read {path}: {exc.strerror}") from None
    with handle:
        try:
            first = handle.readline()
            column = _address_column(first)
            lines: Iterator[tuple[int, str]]
            if column is None:
                lines = _plain_lines(first, handle)
            else:
                lines = _csv_cells(handle, column, invalid)
            for number, text in lines:
                if not text.strip() or text.lstrip().startswith("#"):
                    continue
                try:
                    yield checked_address(text)
                except PermanentError as exc:
                    invalid.append((number, str(exc)))
        except UnicodeDecodeError:
            raise DeliveryError(f"{path} is not UTF-8 text") from None


def _address_column(first_line: str) -> int | None:
    """The index of the address column when the first line is a CSV header, else None."""
    if "," not in first_line and first_line.strip().lower() not in ("email", "address"):
        return None
    header = [cell.strip().lower() for cell in next(csv.reader(io.StringIO(first_line)), [])]
    for name in ("email", "address"):
        if name in header:
            return header.index(name)
    raise DeliveryError("the CSV header has no email (or address) column")


def _plain_lines(first: str, rest: Iterator[str]) -> Iterator[tuple[int, str]]:
    yield 1, first
    yield from enumerate(rest, start=2)


def _csv_cells(
    rest: Iterator[str], column: int, invalid: list[tuple[int, str]]
) -> Iterator[tuple[int, str]]:
    """Each row's address cell with the line the row starts on (a quoted cell may span
    lines); a row the csv module cannot read goes to ``invalid`` and the rest is read."""
    reader = csv.reader(rest)
    start = 2  # line 1 is the header, read before
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # e.g. a NUL byte; the reader goes on at the next line
            invalid.append((start, f"malformed CSV: {exc}"))
        else:
            yield start, row[column] if column < len(row) else ""
        start = reader.line_num + 2

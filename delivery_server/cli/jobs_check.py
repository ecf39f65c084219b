"""``delivery-server jobs check``: pre-flight of a job or a recipients file; sends nothing.

Exit 0 when nothing would fail, 1 when anything would (the report says what, by line or
email id), 2 for a usage error. ``jobs create --check`` runs the file's pre-flight first
and creates nothing when it fails.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from delivery_server.cli._common import EXIT_FAILURE, EXIT_OK, admin_logging, fail, settings_for
from delivery_server.cli.output import plural, print_json
from delivery_server.errors import UsageError
from delivery_server.ports import AttachmentLoader, Store
from delivery_server.preflight import CheckReport, SenderAddresses, check_file, check_job

# How many problems are listed on the terminal (--json lists up to 1,000).
SHOWN_PROBLEMS = 20


def add_command(
    sub: Any, parents: Sequence[argparse.ArgumentParser], job_id: Callable[[str], int]
) -> None:
    """Add ``jobs check`` to the ``jobs`` commands."""
    check = sub.add_parser(
        "check",
        parents=list(parents),
        help="pre-flight: what would fail if JOB (or a recipients file) were sent; sends nothing",
    )
    check.add_argument("job", type=job_id, nargs="?", metavar="JOB")
    check.add_argument(
        "--recipients", type=Path, metavar="FILE", help="check a .csv or .jsonl file instead"
    )
    check.add_argument("--template", metavar="NAME", help="the template the file is for")
    check.add_argument(
        "--from", dest="from_address", metavar="ADDR", help="the sender, to check it too"
    )
    check.set_defaults(handler=_check)


@asynccontextmanager
async def _adapters(args: argparse.Namespace) -> AsyncIterator[tuple[Store, AttachmentLoader]]:
    from delivery_server.app import open_attachments, open_store

    settings = settings_for(args)
    admin_logging(settings)
    async with open_store(settings) as store, open_attachments(settings) as attachments:
        yield store, attachments


async def _check(args: argparse.Namespace) -> int:
    if (args.job is None) == (args.recipients is None):
        raise UsageError("jobs check needs JOB or --recipients FILE --template NAME (not both)")
    if args.recipients is not None and not args.template:
        raise UsageError("jobs check --recipients needs --template NAME")
    if args.job is not None and (args.template or args.from_address):
        raise UsageError("--template and --from go with --recipients (a job has its own)")
    async with _adapters(args) as (store, attachments):
        if args.job is not None:
            report = await check_job(store, args.job, attachments)
            subject = f"job {args.job}"
        else:
            sender = SenderAddresses(args.from_address)
            report = await check_file(args.recipients, args.template, store, attachments, sender)
            subject = f"{args.recipients} for template {args.template!r}"
    return show_report(report, subject, args.json)


async def file_passes(
    store: Store, args: argparse.Namespace, attachments: AttachmentLoader | None = None
) -> bool:
    """``jobs create --check``: the file's pre-flight; False (report shown) when it fails."""
    sender = SenderAddresses(args.from_address, args.reply_to)
    if attachments is None:
        from delivery_server.app import open_attachments

        async with open_attachments(settings_for(args)) as loader:
            report = await check_file(args.recipients, args.template, store, loader, sender)
    else:
        report = await check_file(args.recipients, args.template, store, attachments, sender)
    if report.ok:
        fail(f"pre-flight: {_counted(report)}, nothing would fail")
        return True
    show_report(report, f"{args.recipients} for template {args.template!r}", args.json)
    fail("error: nothing was created (fix the problems above, or create without --check)")
    return False


def show_report(report: CheckReport, subject: str, as_json: bool) -> int:
    """Print the report (text or JSON on stdout); return the command's exit code."""
    if as_json:
        print_json(report_json(report))
    else:
        for line in report_lines(report, subject):
            print(line)
    if report.ok:
        return EXIT_OK
    noun = "row" if report.unit == "line" else "email"
    failing = plural(report.failing, noun) if report.failing else "the job as a whole"
    return fail(f"error: pre-flight found problems: {failing} would fail", EXIT_FAILURE)


def report_json(report: CheckReport) -> dict[str, Any]:
    where = "line" if report.unit == "line" else "email_id"
    return {
        "ok": report.ok,
        "checked": report.checked,
        "failing": report.failing,
        "problem_counts": {str(kind): count for kind, count in sorted(report.kinds.items())},
        "general": report.general,
        "problems": [
            {where: p.at, "kind": str(p.kind), "reason": p.reason} for p in report.problems
        ],
        "attachments": {
            "read": report.attachments,
            "bytes": report.attachment_bytes,
            "digests_recorded": report.digests_recorded,
        },
    }


def report_lines(report: CheckReport, subject: str) -> list[str]:
    verdict = (
        "nothing would fail"
        if report.ok
        else f"{plural(report.failing, 'row' if report.unit == 'line' else 'email')} would fail"
    )
    lines = [f"checked {subject}: {_counted(report)}; {verdict}"]
    lines += [f"  {problem}" for problem in report.general]
    if report.attachments:
        recorded = (
            f", sha256 of {report.digests_recorded:,} recorded" if report.digests_recorded else ""
        )
        lines.append(
            f"attachments: {plural(report.attachments, 'file')} read "
            f"({report.attachment_bytes:,} bytes){recorded}"
        )
    if report.kinds:
        counts = ", ".join(f"{count:,} {kind}" for kind, count in sorted(report.kinds.items()))
        lines.append(f"problems: {counts}")
    where = "line" if report.unit == "line" else "email"
    for problem in report.problems[:SHOWN_PROBLEMS]:
        lines.append(f"{where} {problem.at}: {problem.kind}: {problem.reason}")
    hidden = report.problem_count - min(len(report.problems), SHOWN_PROBLEMS)
    if hidden > 0:
        lines.append(f"... and {hidden:,} more problems (--json lists up to 1,000)")
    return lines


def _counted(report: CheckReport) -> str:
    return plural(report.checked, "row" if report.unit == "line" else "unsent email") + " checked"

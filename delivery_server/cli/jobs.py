"""``delivery-server jobs ...``: create a job from a file, look at it, steer it."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from email.utils import parseaddr
from pathlib import Path
from typing import Any

from rich.console import Console

import delivery_server.cli.output as cli_output
from delivery_server.channels import CHANNEL_NAMES, DEFAULT_CHANNEL
from delivery_server.cli import jobs_check, jobs_find
from delivery_server.cli._common import (
    EXIT_FAILURE,
    EXIT_OK,
    admin_logging,
    fail,
    positive_int,
    settings_for,
)
from delivery_server.errors import (
    ConfigError,
    ConflictError,
    JobImportError,
    NotFoundError,
    PermanentError,
    UsageError,
)
from delivery_server.job_import import ImportReport, JobRequest, create_job_from_file
from delivery_server.mime import check_header, validate_address
from delivery_server.models import Job, JobStatus, utcnow
from delivery_server.ports import Store
from delivery_server.settings import Settings
from delivery_server.sms import MAX_SEGMENT_CAP

MAX_ID = 2**63 - 1
MAX_ERROR_TEXT = 1000  # longer than any last_error worth matching on
# How many bad rows are listed on the terminal (all of them are in --json output).
SHOWN_INVALID_ROWS = 20


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``jobs`` and its subcommands to the command tree."""
    jobs = commands.add_parser("jobs", parents=[common], help="create, follow and steer jobs")
    sub = jobs.add_subparsers(title="commands", metavar="COMMAND", required=True)
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print JSON for scripts")
    job_id = positive_int(MAX_ID)

    create = sub.add_parser(
        "create", parents=[common, as_json], help="create a job from a CSV or JSONL file"
    )
    create.add_argument(
        "--template", required=True, metavar="NAME", help="a pushed template (any locale)"
    )
    create.add_argument(
        "--from",
        dest="from_address",
        required=True,
        type=mailbox,
        metavar="ADDR",
        help='sender, e.g. "Bank <statements@bank.example>"',
    )
    create.add_argument(
        "--recipients",
        required=True,
        type=Path,
        metavar="FILE",
        help="a .csv (header with an email column) or .jsonl file",
    )
    create.add_argument(
        "--channel",
        choices=CHANNEL_NAMES,
        default=DEFAULT_CHANNEL,
        help="what its recipients get (recipient column: email, phone, key, path, ref)",
    )
    create.add_argument(
        "--target",
        metavar="URI",
        help="where an s3, sftp or webhook job delivers (s3://bucket/prefix/, "
        "sftp://user@host/dir, https://host/path); allowed by DELIVERY_DROP_S3_BUCKETS, "
        "DELIVERY_DROP_SFTP_HOSTS, DELIVERY_WEBHOOK_HOSTS",
    )
    create.add_argument(
        "--max-segments",
        type=positive_int(MAX_SEGMENT_CAP),
        metavar="N",
        help=f"an sms job's cap on segments per SMS (1-{MAX_SEGMENT_CAP}; default "
        "DELIVERY_SMS_MAX_SEGMENTS): a longer body fails that recipient",
    )
    create.add_argument("--name", type=job_name, metavar="N", help="a name for people")
    create.add_argument(
        "--schedule-at",
        type=iso_datetime,
        metavar="ISO8601",
        help="not before this time (no zone: UTC)",
    )
    create.add_argument(
        "--send-by",
        type=iso_datetime,
        metavar="ISO8601",
        help="emails not sent by this time are not sent at all: they expire (no zone: UTC)",
    )
    create.add_argument(
        "--draft", action="store_true", help="leave the job in draft (start it with 'jobs resume')"
    )
    create.add_argument("--reply-to", type=mailbox, metavar="ADDR")
    create.add_argument(
        "--unsubscribe",
        action="store_true",
        help="one-click unsubscribe links in its emails (needs DELIVERY_PUBLIC_URL and "
        "DELIVERY_UNSUBSCRIBE_SECRET); statements and other transactional mail go without",
    )
    create.add_argument(
        "--strict", action="store_true", help="import nothing if any row is invalid"
    )
    create.add_argument(
        "--check",
        action="store_true",
        help="pre-flight the file first (as jobs check); create nothing if anything would fail",
    )
    create.set_defaults(handler=_create)

    listing = sub.add_parser("list", parents=[common, as_json], help="the most recent jobs")
    listing.add_argument("--limit", type=positive_int(10_000), default=50)
    listing.set_defaults(handler=_list)

    show = sub.add_parser(
        "show", parents=[common, as_json], help="a job's counts by status and last errors"
    )
    show.add_argument("job", type=job_id, metavar="JOB")
    show.set_defaults(handler=_show)

    watch = sub.add_parser("watch", parents=[common], help="follow a job until it is done")
    watch.add_argument("job", type=job_id, metavar="JOB")
    watch.set_defaults(handler=_watch)

    for name, handler, text in (
        ("pause", _pause, "pause a processing job"),
        ("resume", _resume, "resume a paused job (or start a draft)"),
        ("cancel", _cancel, "cancel a job and its unsent emails"),
    ):
        command = sub.add_parser(name, parents=[common], help=text)
        command.add_argument("job", type=job_id, metavar="JOB")
        command.set_defaults(handler=handler)

    restart = sub.add_parser(
        "restart-failed",
        parents=[common, as_json],
        help="send failed emails again (JOB... or --all)",
    )
    restart.add_argument("jobs", type=job_id, nargs="*", metavar="JOB")
    restart.add_argument("--all", action="store_true", help="every job")
    restart.add_argument(
        "--include-unknown",
        action="store_true",
        help="also emails that may have been sent (could deliver twice)",
    )
    restart.add_argument(
        "--transient-only",
        action="store_true",
        help="leave permanent failures (invalid address, missing variable, rejected) failed",
    )
    restart.add_argument(
        "--error",
        type=error_text,
        metavar="TEXT",
        help="only emails whose last error contains TEXT (case-insensitive)",
    )
    restart.set_defaults(handler=_restart_failed)
    jobs_check.add_command(sub, [common, as_json], job_id)
    jobs_find.add_commands(sub, [common, as_json], job_id)


# -- argument types ---------------------------------------------------------------------


def mailbox(text: str) -> str:
    """An argparse type: ``addr`` or ``Display Name <addr>``, checked as at send time."""
    _, address = parseaddr(text)
    try:
        check_header("address", text)
        if not address:
            raise PermanentError("not an email address")
        validate_address(address)
    except PermanentError as exc:
        reason = str(exc).removeprefix("invalid recipient address: ")
        raise argparse.ArgumentTypeError(f"invalid address: {reason}") from None
    return text.strip()


def job_name(text: str) -> str:
    if not text.strip() or len(text) > 255:
        raise argparse.ArgumentTypeError("a job name is 1 to 255 characters")
    return text


def error_text(text: str) -> str:
    """An argparse type: the text ``restart-failed --error`` looks for in ``last_error``."""
    if not text.strip():
        raise argparse.ArgumentTypeError("give some text to look for in the last error")
    if len(text) > MAX_ERROR_TEXT:
        raise argparse.ArgumentTypeError(f"at most {MAX_ERROR_TEXT} characters")
    return text


def iso_datetime(text: str) -> datetime:
    """An argparse type: ISO 8601; with a zone converted to UTC, without one taken as UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time (e.g. 2025-01-31T08:00:00+01:00)"
        ) from None
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


# -- commands ---------------------------------------------------------------------------


@asynccontextmanager
async def _store(args: argparse.Namespace) -> AsyncIterator[Store]:
    from delivery_server.app import open_store

    settings = settings_for(args)
    admin_logging(settings)
    async with open_store(settings) as store:
        yield store


def _check_unsubscribe_links(settings: Settings) -> None:
    """A job that asks for unsubscribe links needs somewhere for them to point."""
    missing = [
        name
        for name, value in (
            ("DELIVERY_PUBLIC_URL", settings.public_url),
            ("DELIVERY_UNSUBSCRIBE_SECRET", settings.unsubscribe_secret),
        )
        if value is None
    ]
    if missing:
        raise ConfigError(f"configuration error: --unsubscribe needs {' and '.join(missing)}")


async def _job(store: Store, job_id: int) -> Job:
    """The job, or a clear ``NotFoundError``."""
    try:
        return await store.job(job_id)
    except NotFoundError:
        raise NotFoundError(f"job {job_id} does not exist") from None


def _check_send_by(send_by: datetime | None, schedule_at: datetime | None) -> None:
    """A deadline that has passed, or comes before the job may start, would expire every
    email of the job: refused before anything is written."""
    if send_by is None:
        return
    if send_by <= utcnow():
        raise UsageError(f"--send-by {send_by:%Y-%m-%d %H:%M:%S} UTC is in the past")
    if schedule_at is not None and send_by <= schedule_at:
        raise UsageError("--send-by must be later than --schedule-at")


async def _create(args: argparse.Namespace) -> int:
    from delivery_server.app import channel_rules

    _check_send_by(args.send_by, args.schedule_at)
    settings = settings_for(args)
    if args.unsubscribe:
        if args.channel != DEFAULT_CHANNEL:
            raise UsageError("--unsubscribe: only email jobs carry unsubscribe links")
        _check_unsubscribe_links(settings)
    if args.check and args.channel != DEFAULT_CHANNEL:
        raise UsageError("--check: the pre-flight reads email recipients; leave it out")
    if args.max_segments is not None and args.channel != "sms":
        raise UsageError("--max-segments: only sms jobs count segments (add --channel sms)")
    rules = channel_rules(settings, args.channel)
    # Refused before anything is opened; the import checks it again for other callers.
    target = rules.check_target(args.target)
    request = JobRequest(
        template=args.template,
        from_address=args.from_address,
        recipients=args.recipients,
        name=args.name,
        reply_to=args.reply_to,
        scheduled_at=args.schedule_at,
        draft=args.draft,
        strict=args.strict,
        unsubscribe=args.unsubscribe,
        send_by=args.send_by,
        channel=rules,
        target=target,
        max_segments=args.max_segments,
    )
    err = Console(stderr=True)
    async with _store(args) as store:
        if args.check and not await jobs_check.file_passes(store, args):
            return EXIT_FAILURE
        try:
            with cli_output.import_progress(err) as on_progress:
                report = await create_job_from_file(store, request, on_progress)
        except JobImportError as exc:
            _print_invalid(exc.report, err)
            raise
    assert report.job is not None
    secret = _signing_secret(settings, report.job)
    if args.json:
        created = cli_output.import_json(report)
        if secret is not None:
            created["signing_secret"] = secret
        cli_output.print_json(created)
        return EXIT_OK
    _print_invalid(report, err)
    print(cli_output.import_line(report))
    if report.job.status == JobStatus.PROCESSING:
        print(f"follow it with: delivery-server jobs watch {report.job.id}")
    if secret is not None:
        print("the receiver verifies X-Delivery-Signature with this job's secret:")
        print(secret)
    return EXIT_OK


def _signing_secret(settings: Settings, job: Job) -> str | None:
    """A webhook job's signing secret, for its receiver: shown to the operator by
    ``jobs create``, alone on the last line (derived, never stored, never logged)."""
    if job.channel != "webhook" or settings.webhook_secret is None:
        return None
    from delivery_server.adapters.channels.webhook import job_secret

    return job_secret(settings.webhook_secret.get_secret_value().encode(), job.id)


def _print_invalid(report: ImportReport, err: Console) -> None:
    for row in report.invalid[:SHOWN_INVALID_ROWS]:
        err.print(f"line {row.line}: {row.reason}", markup=False, highlight=False, soft_wrap=True)
    hidden = report.invalid_count - min(len(report.invalid), SHOWN_INVALID_ROWS)
    if hidden > 0:
        err.print(f"... and {hidden} more invalid rows (--json lists up to 1,000)", highlight=False)


async def _list(args: argparse.Namespace) -> int:
    async with _store(args) as store:
        jobs = await store.jobs(args.limit)
    if args.json:
        cli_output.print_json([cli_output.job_json(job) for job in jobs])
    else:
        Console().print(cli_output.jobs_table(jobs))
    return EXIT_OK


async def _show(args: argparse.Namespace) -> int:
    async with _store(args) as store:
        await _job(store, args.job)
        summary = await store.job_summary(args.job)
    if args.json:
        cli_output.print_json(cli_output.summary_json(summary))
    else:
        cli_output.print_summary(Console(), summary)
    return EXIT_OK


async def _watch(args: argparse.Namespace) -> int:
    from delivery_server.cli.progress import follow_job

    console = Console()
    async with _store(args) as store:
        await _job(store, args.job)
        summary = await follow_job(store, args.job, console)
    console.print(cli_output.summary_line(summary), markup=False, highlight=False)
    if summary.job.status == JobStatus.FAILED:
        return fail(f"error: job {args.job} failed (see: delivery-server jobs show {args.job})")
    return EXIT_OK


async def _pause(args: argparse.Namespace) -> int:
    return await _transition(args, JobStatus.PAUSED, [JobStatus.PROCESSING], "paused")


async def _resume(args: argparse.Namespace) -> int:
    return await _transition(
        args, JobStatus.PROCESSING, [JobStatus.PAUSED, JobStatus.DRAFT], "resumed"
    )


async def _transition(
    args: argparse.Namespace, target: JobStatus, sources: Sequence[JobStatus], verb: str
) -> int:
    async with _store(args) as store:
        job = await _job(store, args.job)
        if job.status == target:
            print(f"job {job.id} is already {target}")
            return EXIT_OK
        if job.status not in sources:
            allowed = " or ".join(sources)
            raise ConflictError(f"job {job.id} is {job.status}: only a {allowed} job can be {verb}")
        try:
            job = await store.set_job_status(job.id, target, expected=sources)
        except NotFoundError:
            raise NotFoundError(f"job {job.id} does not exist") from None
        except ConflictError:
            # Someone else changed it in between (the update is conditional): say to what.
            now = await _job(store, job.id)
            raise ConflictError(f"job {job.id} became {now.status}; it was not {verb}") from None
    print(f"job {job.id} {verb}: now {job.status}")
    return EXIT_OK


async def _cancel(args: argparse.Namespace) -> int:
    async with _store(args) as store:
        job = await _job(store, args.job)
        if job.status in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED):
            raise ConflictError(f"job {job.id} is already {job.status}: nothing to cancel")
        cancelled = await store.cancel_job(job.id)
    print(f"job {job.id} cancelled: {cancelled:,} unsent emails will not be sent")
    return EXIT_OK


async def _restart_failed(args: argparse.Namespace) -> int:
    if bool(args.jobs) == bool(args.all):
        raise UsageError("restart-failed needs job ids or --all (not both)")
    async with _store(args) as store:
        for job_id in args.jobs:
            await _job(store, job_id)
        restarted = await store.restart_failed(
            args.jobs or None,
            args.include_unknown,
            transient_only=args.transient_only,
            error_contains=args.error,
        )
    if args.json:
        cli_output.print_json({"restarted": restarted, "jobs": args.jobs or "all"})
        return EXIT_OK
    which = "every job" if args.all else "job " + ", ".join(str(j) for j in args.jobs)
    kinds = "failed and unknown" if args.include_unknown else "failed"
    if args.transient_only:
        kinds = "transiently " + kinds
    matching = "" if args.error is None else " matching the error text"
    print(f"{restarted} {kinds} emails{matching} of {which} will be sent again")
    return EXIT_OK

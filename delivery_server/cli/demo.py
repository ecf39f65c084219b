"""``delivery-server demo``: N bank statements, end to end, with nothing to set up.

Everything runs embedded in one process and lands in one directory (``demo-output`` by
default, recreated on every run): a SQLite database, ``statements/<n>.pdf``, the
``recipients.jsonl`` the job was created from, and ``outbox/`` with one ``.eml`` per
customer. The job goes through the same import, publisher, queue, consumers and sender
as in production; only the adapters differ.

After the send, the outbox reports SES's events for each file it writes (a few customers
have SES mailbox simulator addresses: they bounce, complain, or are on SES's suppression
list) and the tracker records them, as it records SES's own on AWS; the demo waits for
those reports and ends with the delivery counts and the addresses now suppressed.

The operator console runs alongside (``demo_console``): its URL and a token are printed
before the send, and it is up while the job runs. ``--rate`` slows the send so that there
is time to watch it there; ``--keep-serving`` keeps the console (and the server) up after
the summary, until Ctrl-C. Without it the demo ends as soon as the job is done.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from delivery_server.channels import CHANNEL_NAMES, DEFAULT_CHANNEL
from delivery_server.cli._common import positive_int
from delivery_server.cli.demo_channels import channel_settings, demo_target, rewrite_recipients
from delivery_server.cli.demo_console import (
    DEFAULT_PORT,
    bindable_port,
    demo_token,
    port_number,
    show_console,
    until_interrupted,
    until_listening,
)
from delivery_server.cli.output import format_duration
from delivery_server.cli.progress import follow_job
from delivery_server.errors import DeliveryError, DemoDirectoryError
from delivery_server.examples.statements import (
    require_pdf_writer,
    write_recipients,
    write_statements,
)
from delivery_server.job_import import JobRequest, create_job_from_file
from delivery_server.models import DeliveryStatus, EmailStatus, JobSummary
from delivery_server.ports import Store
from delivery_server.settings import Settings, load_settings
from delivery_server.template_files import bundled_templates

# Marks a directory as the demo's own, so that recreating it can never delete anything else.
MARKER = ".delivery-server-demo"
FROM_ADDRESS = "Example Bank <statements@bank.example>"
STATEMENTS_PER_TASK = 250
# The tracker keeps up with the sends, so the last reports follow the last send closely;
# the demo stops waiting only when none has come for this long (a stuck tracker).
REPORTS_STALL_SECONDS = 30.0
REPORTS_POLL_SECONDS = 0.2
SUPPRESSIONS_PAGE = 1000


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``demo`` to the command tree."""
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
    demo.add_argument(
        "--console-port",
        type=port_number,
        default=DEFAULT_PORT,
        metavar="PORT",
        help=f"the operator console's port on 127.0.0.1 (default: {DEFAULT_PORT}, or any "
        "free port when that one is taken; 0: any free port)",
    )
    demo.add_argument(
        "--rate",
        type=positive_int(100_000),
        default=None,
        metavar="N",
        help="send at most N emails a second, to watch the job in the console "
        "(default: as fast as it goes)",
    )
    demo.add_argument(
        "--keep-serving",
        action="store_true",
        help="after the summary, keep the console up until Ctrl-C",
    )
    demo.add_argument(
        "--channel",
        choices=CHANNEL_NAMES,
        default=DEFAULT_CHANNEL,
        help="send the statements as sms, s3 or sftp drops, or webhooks (into the outbox)",
    )
    demo.set_defaults(handler=_demo)


async def _demo(args: argparse.Namespace) -> int:
    return await run_demo(
        getattr(args, "config", None),
        emails=args.emails,
        output=args.output,
        console_port=args.console_port,
        rate=args.rate,
        keep_serving=args.keep_serving,
        channel=args.channel,
    )


async def run_demo(
    config: Path | None,
    *,
    emails: int,
    output: Path,
    console_port: int = 0,
    rate: int | None = None,
    keep_serving: bool = False,
    channel: str = DEFAULT_CHANNEL,
) -> int:
    """Run the demo; exit code 0 only when every email was sent."""
    from delivery_server.app import (
        Listening,
        channel_rules,
        open_store,
        serve,
        upgrade_database,
    )
    from delivery_server.logging import configure_logging

    require_pdf_writer()
    console = Console()
    output = await asyncio.to_thread(prepare_directory, output)
    settings = demo_settings(
        config, output, api_port=console_port, max_send_rate=rate, **channel_settings(channel)
    )
    configure_logging(settings, stream=sys.stderr)
    console.print(f"[bold]delivery-server demo[/]: {emails:,} bank statements in {output}")
    await upgrade_database(settings)
    await _write_statements(output / "statements", emails, console)
    recipients = output / "recipients.jsonl"
    await asyncio.to_thread(write_recipients, recipients, emails)
    await asyncio.to_thread(rewrite_recipients, recipients, channel)

    async with open_store(settings) as store:
        for file in bundled_templates():
            await store.add_template(file.template)
        report = await create_job_from_file(
            store,
            JobRequest(
                template="statement",
                from_address=FROM_ADDRESS,
                recipients=recipients,
                name=f"demo: {emails:,} statements",
                channel=channel_rules(settings, channel),
                target=demo_target(channel),
            ),
        )
        assert report.job is not None
        job_id = report.job.id
        token = await demo_token(store)
        console.print(f"job {job_id}: {report.imported:,} emails imported, sending...")
        stop = asyncio.Event()
        started = time.monotonic()
        listening = Listening()
        server = asyncio.create_task(serve(settings, stop=stop, listening=listening))
        try:
            await until_listening(listening, server)
            assert listening.api_port is not None  # the demo's settings have a port
            show_console(console, listening.api_port, token)
            await follow_job(store, job_id, console, interval=0.2, alongside=server)
            elapsed = time.monotonic() - started
            # Only the email outbox plays the provider's part after the send.
            summary = (
                await wait_for_reports(store, job_id, alongside=server)
                if channel == DEFAULT_CHANNEL
                else await store.job_summary(job_id)
            )
            suppressed = await count_suppressions(store)
            _print_summary(console, settings, summary, suppressed, elapsed)
            if keep_serving:
                console.print("the console stays up: press Ctrl-C to stop")
                await until_interrupted(stop, server)
        finally:
            stop.set()
            await server  # a crashed server raises here, and the demo fails with its error

    sent = summary.counts.get(EmailStatus.SENT, 0)
    if sent != emails:
        not_sent = {s: n for s, n in summary.counts.items() if s != EmailStatus.SENT and n}
        others = ", ".join(f"{n:,} {status}" for status, n in not_sent.items())
        raise DeliveryError(f"demo: only {sent:,} of {emails:,} emails were sent ({others})")
    return 0


def _print_summary(
    console: Console, settings: Settings, summary: JobSummary, suppressed: int, elapsed: float
) -> None:
    job_id = summary.job.id
    sent = summary.counts.get(EmailStatus.SENT, 0)
    rate = sent / elapsed if elapsed > 0 else 0.0
    console.print(
        f"job {job_id} {summary.job.status}: [green]{sent:,} sent[/], "
        f"{summary.counts.get(EmailStatus.FAILED, 0):,} failed "
        f"in {format_duration(elapsed)} ({rate:,.0f} emails/s)"
    )
    if summary.job.channel != DEFAULT_CHANNEL:
        where = settings.outbox_dir
        console.print(f"what the {summary.job.channel} channel would send is in {where}")
        return
    console.print(f"the .eml files are in {settings.outbox_dir} (open one with a mail reader)")
    console.print(after_the_send(summary, suppressed))


def demo_settings(
    config: Path | None,
    output: Path,
    *,
    api_port: int = 0,
    max_send_rate: float | None = None,
    **channel: Any,
) -> Settings:
    """The settings of an embedded run inside ``output``; explicit values win over the
    environment so that a configured production database can never be used by the demo."""
    return load_settings(
        config,
        database_url=f"sqlite:///{output / 'delivery.db'}",
        queue="local",
        sender="outbox",
        outbox_dir=output / "outbox",
        attachments_dir=output,
        http_host="127.0.0.1",
        http_port=0,  # any free port: a demo must not clash with a running server
        api_host="127.0.0.1",  # the console: loopback only, whatever the config says
        api_port=bindable_port(api_port),
        max_send_rate=max_send_rate,
        poll_interval=0.2,
        retry_base_delay=0.2,
        concurrency=32,
        log_level="warning",
        log_format="console",
        # The demo's customers complain at 1 in 300 to show complaints; SES's own review
        # threshold (0.1 %, the default) would rightly pause such a job after 200 sends.
        brake_complaint_rate=0.01,
        **channel,
    )


def reported(summary: JobSummary) -> int:
    """The job's emails the recipient's side has reported on (delivered, bounced, ...)."""
    return sum(summary.delivery_counts.values())


async def wait_for_reports(
    store: Store,
    job_id: int,
    *,
    alongside: asyncio.Task[None],
    stall_seconds: float = REPORTS_STALL_SECONDS,
    interval: float = REPORTS_POLL_SECONDS,
) -> JobSummary:
    """Poll the job until every sent email has a delivery report, the server (``alongside``)
    ends, or no new report came for ``stall_seconds``; return the last summary."""
    summary = await store.job_summary(job_id)
    progressed = time.monotonic()
    while reported(summary) < summary.counts.get(EmailStatus.SENT, 0) and not alongside.done():
        if time.monotonic() - progressed > stall_seconds:
            break
        await asyncio.sleep(interval)
        before, summary = reported(summary), await store.job_summary(job_id)
        if reported(summary) > before:
            progressed = time.monotonic()
    return summary


async def count_suppressions(store: Store) -> int:
    """How many addresses are on the suppression list (the demo's database is its own)."""
    total = 0
    while page := await store.suppressions(SUPPRESSIONS_PAGE, total):
        total += len(page)
        if len(page) < SUPPRESSIONS_PAGE:
            break
    return total


def after_the_send(summary: JobSummary, suppressed: int) -> str:
    """The closing line: what the recipients' side reported, and the suppressions."""
    counts = summary.delivery_counts
    line = (
        f"after the send: [green]{counts.get(DeliveryStatus.DELIVERED, 0):,} delivered[/], "
        f"{counts.get(DeliveryStatus.BOUNCED, 0):,} bounced, "
        f"{counts.get(DeliveryStatus.COMPLAINED, 0):,} complained; "
        f"{suppressed:,} address{'' if suppressed == 1 else 'es'} now suppressed"
    )
    missing = summary.counts.get(EmailStatus.SENT, 0) - reported(summary)
    if missing > 0:
        line += f" ({missing:,} sent emails not reported on yet)"
    return line


def prepare_directory(output: Path) -> Path:
    """Empty ``output`` (refusing a directory that is not the demo's); return its path."""
    output = output.resolve()
    if output.exists():
        if not output.is_dir():
            raise DemoDirectoryError(f"{output} exists and is not a directory")
        if any(output.iterdir()) and not (output / MARKER).exists():
            raise DemoDirectoryError(
                f"{output} already holds files the demo did not write; "
                "choose another --output directory"
            )
        shutil.rmtree(output)
    (output / "statements").mkdir(parents=True)
    (output / "outbox").mkdir()
    (output / MARKER).write_text("written by delivery-server demo; recreated on every run\n")
    return output


async def _write_statements(directory: Path, count: int, console: Console) -> None:
    """Write every PDF in worker processes (fpdf2 is pure Python and CPU-bound)."""
    ranges = [
        (start, min(start + STATEMENTS_PER_TASK, count + 1))
        for start in range(1, count + 1, STATEMENTS_PER_TASK)
    ]
    workers = max(1, min(os.cpu_count() or 1, len(ranges)))
    loop = asyncio.get_running_loop()
    # "spawn": forking a process that runs an event loop and database threads is unsafe.
    context = multiprocessing.get_context("spawn")
    with (
        ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool,
        Progress(
            TextColumn("writing PDF statements"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as progress,
    ):
        bar = progress.add_task("statements", total=count)
        tasks = [
            loop.run_in_executor(pool, write_statements, str(directory), start, stop)
            for start, stop in ranges
        ]
        try:
            for finished in asyncio.as_completed(tasks):
                progress.advance(bar, await finished)
        except BaseException:
            # Collect the others' results too, so that no failure is left unretrieved.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

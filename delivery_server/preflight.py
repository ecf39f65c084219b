"""Pre-flight (``jobs check``): what would fail if a job were sent now, found before it is.

Each email goes through what its send would do, short of sending: the address check of
the import and the claim, the template version it would render with (a job's pinned one,
else the highest; its locale, else ``en``), a real render with its variables, every
attachment loaded through the same loaders (present, readable, under the size limit) and
hashed, and the finished message's header and size checks (``mime.CheckedEmail``). A
render that fails for want of variables names them (Jinja's undeclared variables of the
template less the row's keys); a variable guarded by ``is defined`` is not flagged,
because the render is what decides.

Memory stays bounded for any number of emails: a file is read a batch at a time in a
worker thread, a job's emails a keyset page at a time; only the first
``MAX_KEPT_PROBLEMS`` problems are kept (all are counted), and an attachment's bytes are
held only while a bounded number of emails are checked at once. Problem texts never quote
an address, a variable's value, a path or a key: they name the line or the email id.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass, field
from email.utils import parseaddr
from enum import StrEnum
from pathlib import Path
from typing import Literal, Protocol

import jinja2
from jinja2 import meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

from delivery_server.email_records import AttachmentDigest, StoredRecipient
from delivery_server.errors import NotFoundError, PermanentError, RetryableError
from delivery_server.mime import CheckedEmail, check_header, check_message_size, validate_address
from delivery_server.models import (
    Attachment,
    AttachmentRef,
    EmailStatus,
    Job,
    NewEmail,
    OutgoingEmail,
    Template,
)
from delivery_server.ports import AttachmentLoader
from delivery_server.recipients import Row, read_recipients
from delivery_server.renderer import Renderer

DEFAULT_LOCALE = "en"  # what the pipeline falls back to (pipeline.TemplateCache.resolve)
BATCH_SIZE = 500  # rows read, or emails paged, per step
MAX_KEPT_PROBLEMS = 1_000  # all are counted; this many are kept to be shown
EMAILS_AT_ONCE = 8  # emails checked concurrently: bounds attachment bytes held at once
# Emails a send would still take: a job's settled and in-flight emails are not checked.
CHECKED_STATUSES = (EmailStatus.PENDING, EmailStatus.QUEUED)
_HASH_IN_THREAD = 1 << 20  # hash larger attachments off the event loop
_BAD_ADDRESS = "invalid recipient address"  # how mime.validate_address's reasons begin
# How Jinja names a top-level variable it did not get (``StrictUndefined``).
_UNDEFINED_NAME = re.compile(r"'(\w+)' is undefined")


class ProblemKind(StrEnum):
    """What about an email would fail."""

    ROW = "row"  # the row (file) or the stored fields (job) cannot be read
    ADDRESS = "address"
    TEMPLATE = "template"  # no template for its locale, or the render failed
    VARIABLES = "variables"  # the template needs variables the email does not have
    ATTACHMENT = "attachment"
    MESSAGE = "message"  # the finished message: a header check or its size


@dataclass(frozen=True, slots=True)
class Problem:
    at: int  # the line of the file, or the email id
    kind: ProblemKind
    reason: str


@dataclass(slots=True)
class CheckReport:
    """What a pre-flight found: counts, and the first problems in file or id order."""

    unit: Literal["line", "email"]
    checked: int = 0  # rows or emails looked at
    failing: int = 0  # of those, how many have at least one problem
    kinds: dict[ProblemKind, int] = field(default_factory=dict)  # problems by kind
    problems: list[Problem] = field(default_factory=list)  # the first MAX_KEPT_PROBLEMS
    general: list[str] = field(default_factory=list)  # of the whole job or file
    attachments: int = 0  # attachments read and hashed
    attachment_bytes: int = 0
    digests_recorded: int = 0  # of those, how many digests were stored (a job's)

    @property
    def ok(self) -> bool:
        """Nothing would fail."""
        return not self.general and not self.failing

    @property
    def problem_count(self) -> int:
        return sum(self.kinds.values())

    def add(self, at: int, found: Sequence[tuple[ProblemKind, str]]) -> None:
        if not found:
            return
        self.failing += 1
        for kind, reason in found:
            self.kinds[kind] = self.kinds.get(kind, 0) + 1
            if len(self.problems) < MAX_KEPT_PROBLEMS:
                self.problems.append(Problem(at, kind, reason))


class TemplateReader(Protocol):
    async def template(self, name: str, locale: str, as_of: int | None = None) -> Template | None:
        """The highest version of a template in a locale (at or below ``as_of``)."""
        ...


class JobCheckStore(TemplateReader, Protocol):
    """What checking a stored job reads and records."""

    async def job(self, job_id: int) -> Job:
        """One job; ``NotFoundError`` when there is none."""
        ...

    async def recipients_page(
        self, job_id: int, statuses: Sequence[EmailStatus], after_id: int, limit: int
    ) -> list[StoredRecipient]:
        """Emails of the job in ``statuses`` with ids above ``after_id``, in id order."""
        ...

    async def record_attachment_digests(
        self, job_id: int, digests: Sequence[AttachmentDigest]
    ) -> int:
        """Store what pre-flight read of attachments (the audit trail); return how many."""
        ...


@dataclass(frozen=True, slots=True)
class SenderAddresses:
    """The job's From and Reply-To; None: not known (a file checked without ``--from``)."""

    from_address: str | None = None
    reply_to: str | None = None


async def check_file(
    path: Path,
    template_name: str,
    templates: TemplateReader,
    attachments: AttachmentLoader,
    sender: SenderAddresses | None = None,
) -> CheckReport:
    """Check every row of a recipients file against the highest template version.

    A file that cannot be read as a whole raises ``RecipientsFileError`` (as the import).
    """
    report = CheckReport("line")
    checker = await _Checker.create(template_name, None, templates, attachments, sender, report)
    rows = read_recipients(path)
    try:
        while batch := await asyncio.to_thread(_next_rows, rows):
            await checker.check_batch(batch)
    finally:
        # ValueError: a thread left inside the generator by a cancellation still holds it.
        with contextlib.suppress(ValueError):
            rows.close()
    return report


async def check_job(
    store: JobCheckStore, job_id: int, attachments: AttachmentLoader
) -> CheckReport:
    """Check the job's unsent emails (pending, queued) page by page, and record the
    SHA-256 of every attachment read (``record_attachment_digests``)."""
    try:
        job = await store.job(job_id)
    except NotFoundError:
        raise NotFoundError(f"job {job_id} does not exist") from None
    report = CheckReport("email")
    sender = SenderAddresses(job.from_address, job.reply_to)
    checker = await _Checker.create(
        job.template_name, job.template_version, store, attachments, sender, report
    )
    after = 0
    while page := await store.recipients_page(job_id, CHECKED_STATUSES, after, BATCH_SIZE):
        after = page[-1].id
        digests = await checker.check_batch([(row.id, stored_email(row)) for row in page])
        if digests:
            report.digests_recorded += await store.record_attachment_digests(job_id, digests)
    return report


def _next_rows(rows: Generator[Row, None, None]) -> list[Row]:
    """The next batch of the file's rows (empty at its end); runs in a worker thread."""
    batch: list[Row] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= BATCH_SIZE:
            break
    return batch


def stored_email(row: StoredRecipient) -> NewEmail | str:
    """An email as stored (upstream systems write these rows), or why it cannot be sent:
    the address as the claim's message check sees it, variables a JSON object, the
    attachments a JSON list of references that their loaders would accept."""
    if not isinstance(row.variables, dict):
        return "variables must be a JSON object"
    if row.attachments is not None and not isinstance(row.attachments, list):
        return "attachments must be a JSON list"
    try:
        address = validate_address(check_header("To", row.to_address))
    except PermanentError as exc:
        reason = str(exc)
        return reason if reason.startswith(_BAD_ADDRESS) else f"{_BAD_ADDRESS}: {reason}"
    try:
        refs = tuple(AttachmentRef.from_json(item) for item in row.attachments or ())
        for ref in refs:
            ref.check_uri()
    except PermanentError as exc:
        return f"attachments: {exc}"
    return NewEmail(address, row.variables, row.locale, refs)


def _unreadable_kind(reason: str) -> ProblemKind:
    """The kind of a row the reader refused, from its reason (``recipients._new_email``)."""
    if reason.startswith((_BAD_ADDRESS, "missing email", "email must")):
        return ProblemKind.ADDRESS
    if reason.startswith("attachment"):
        return ProblemKind.ATTACHMENT
    return ProblemKind.ROW


def template_variables(template: Template) -> frozenset[str]:
    """The top-level variables the template's parts use (Jinja's undeclared variables),
    needed or guarded alike."""
    environment = ImmutableSandboxedEnvironment()
    names: set[str] = set()
    for source in (template.subject, template.text_body, template.html_body):
        if source:
            names |= meta.find_undeclared_variables(environment.parse(source))
    return frozenset(names)


def sender_problem(sender: SenderAddresses) -> str | None:
    """What is wrong with a job's From or Reply-To, as the message check would say."""
    for header, value in (("From", sender.from_address), ("Reply-To", sender.reply_to)):
        if value is None:
            continue
        try:
            check_header(header, value)
            address = parseaddr(value)[1]
            if not address:
                raise PermanentError("not an email address")
            validate_address(address)
        except PermanentError as exc:
            reason = str(exc).removeprefix("invalid recipient address: ")
            return f"the job's {header} address is invalid: {reason}"
    return None


@dataclass(slots=True)
class _Outcome:
    problems: list[tuple[ProblemKind, str]] = field(default_factory=list)
    digests: list[tuple[int, int, str]] = field(default_factory=list)  # number, size, sha


TemplateFor = Callable[[str | None], Awaitable[Template | str]]


class _Checker:
    """Checks emails the way their send would treat them."""

    def __init__(
        self,
        template_for: TemplateFor,
        attachments: AttachmentLoader,
        sender: SenderAddresses,
        report: CheckReport,
    ) -> None:
        self._template_for = template_for
        self._attachments = attachments
        self._sender = sender
        self._report = report
        self._renderer = Renderer()
        self._variables: dict[tuple[str, int], frozenset[str]] = {}
        self._slots = asyncio.Semaphore(EMAILS_AT_ONCE)

    @classmethod
    async def create(
        cls,
        name: str,
        as_of: int | None,
        templates: TemplateReader,
        attachments: AttachmentLoader,
        sender: SenderAddresses | None,
        report: CheckReport,
    ) -> _Checker:
        """A checker, with the problems of the whole job noted in ``report.general``."""
        sender = sender or SenderAddresses()
        found: dict[str, Template | None] = {}

        async def template_for(locale: str | None) -> Template | str:
            for candidate in dict.fromkeys((locale or DEFAULT_LOCALE, DEFAULT_LOCALE)):
                if candidate not in found:
                    found[candidate] = await templates.template(name, candidate, as_of)
                if (template := found[candidate]) is not None:
                    return template
            return f"template {name!r} does not exist in this locale or in {DEFAULT_LOCALE!r}"

        if isinstance(await template_for(None), str):
            report.general.append(f"template {name!r} does not exist (no {DEFAULT_LOCALE!r})")
        if (problem := sender_problem(sender)) is not None:
            report.general.append(problem)
            sender = SenderAddresses()  # checked once here, not again for every email
        return cls(template_for, attachments, sender, report)

    async def check_batch(self, batch: Sequence[Row]) -> list[AttachmentDigest]:
        """Check a batch (concurrently, in bounds); note its problems in order."""
        readable = [item for _, item in batch if not isinstance(item, str)]
        checked = iter(await asyncio.gather(*(self._guarded(item) for item in readable)))
        digests: list[AttachmentDigest] = []
        for at, item in batch:
            self._report.checked += 1
            if isinstance(item, str):
                self._report.add(at, [(_unreadable_kind(item), item)])
                continue
            outcome = next(checked)
            self._report.add(at, outcome.problems)
            digests += [AttachmentDigest(at, n, size, sha) for n, size, sha in outcome.digests]
        return digests

    async def _guarded(self, email: NewEmail) -> _Outcome:
        async with self._slots:
            return await self._check(email)

    async def _check(self, email: NewEmail) -> _Outcome:
        outcome = _Outcome()
        template = await self._template_for(email.locale)
        content = None
        if isinstance(template, str):
            outcome.problems.append((ProblemKind.TEMPLATE, template))
        else:
            try:
                content = self._renderer.render(template, email.variables)
            except PermanentError as exc:
                outcome.problems.append(self._render_problem(template, email, exc))
        loaded = await self._load_attachments(email.attachments, outcome)
        if content is not None and loaded is not None:
            message = OutgoingEmail(
                # Without a known sender the recipient stands in: only its headers are checked.
                from_address=self._sender.from_address or email.to_address,
                to_address=email.to_address,
                subject=content.subject,
                text_body=content.text_body,
                html_body=content.html_body,
                reply_to=self._sender.reply_to,
                attachments=loaded,
            )
            try:
                check_message_size(_encoded_size(CheckedEmail(message)))
            except PermanentError as exc:
                outcome.problems.append((ProblemKind.MESSAGE, str(exc)))
        return outcome

    def _render_problem(
        self, template: Template, email: NewEmail, exc: PermanentError
    ) -> tuple[ProblemKind, str]:
        missing = self._missing_variables(template, email, exc)
        if missing:
            return ProblemKind.VARIABLES, f"missing variables: {', '.join(missing)}"
        return ProblemKind.TEMPLATE, str(exc)

    def _missing_variables(
        self, template: Template, email: NewEmail, exc: PermanentError
    ) -> list[str]:
        """The template's variables the email lacks that its render needs: each one the
        render stopped at, filled in and rendered again (a variable guarded by ``is
        defined`` never stops it), until it renders or stops for another reason."""
        key = (template.locale, template.version)
        if key not in self._variables:
            self._variables[key] = template_variables(template)
        declared = self._variables[key] - email.variables.keys()
        missing: list[str] = []
        filled = dict(email.variables)
        while exc is not None and isinstance(exc.__cause__, jinja2.UndefinedError):
            name = _UNDEFINED_NAME.fullmatch(exc.__cause__.message or "")
            if name is None or name[1] not in declared or name[1] in filled:
                break
            missing.append(name[1])
            filled[name[1]] = ""
            try:
                self._renderer.render(template, filled)
            except PermanentError as again:
                exc = again
            else:
                break
        return sorted(missing)

    async def _load_attachments(
        self, refs: Sequence[AttachmentRef], outcome: _Outcome
    ) -> tuple[Attachment, ...] | None:
        """Every attachment, read and hashed; None when one could not be read."""
        loaded: list[Attachment] = []
        for number, ref in enumerate(refs, start=1):
            try:
                attachment = await self._attachments.load(ref)
            except PermanentError as exc:
                outcome.problems.append((ProblemKind.ATTACHMENT, f"attachment {number}: {exc}"))
                continue
            except RetryableError as exc:
                # It may load at send time, but nothing says it will: not checked is not ok.
                reason = f"attachment {number}: could not be read now: {exc}"
                outcome.problems.append((ProblemKind.ATTACHMENT, reason))
                continue
            outcome.digests.append((number, len(attachment.data), await _sha256(attachment)))
            self._report.attachments += 1
            self._report.attachment_bytes += len(attachment.data)
            loaded.append(attachment)
        return tuple(loaded) if len(loaded) == len(refs) else None


async def _sha256(attachment: Attachment) -> str:
    if len(attachment.data) < _HASH_IN_THREAD:
        return hashlib.sha256(attachment.data).hexdigest()
    return await asyncio.to_thread(lambda: hashlib.sha256(attachment.data).hexdigest())


def _encoded_size(email: CheckedEmail) -> int:
    """About what the MIME message weighs: the bodies, and the attachments in base64."""
    parts = (email.subject, email.text_body, email.html_body or "")
    bodies = sum(len(part.encode()) for part in parts)
    return bodies + sum(4 * -(-len(a.data) // 3) for a in email.attachments)

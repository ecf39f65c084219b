"""Pre-flight over in-memory templates and attachments: every kind of problem, by line and
by email id, the digests, and flat memory over a large file."""

from __future__ import annotations

import hashlib
import tracemalloc
from collections.abc import Sequence
from pathlib import Path

import pytest

from delivery_server.email_records import AttachmentDigest, StoredRecipient
from delivery_server.errors import NotFoundError, PermanentError, RetryableError
from delivery_server.models import (
    Attachment,
    AttachmentRef,
    EmailStatus,
    Job,
    JobStatus,
    Template,
)
from delivery_server.preflight import (
    MAX_KEPT_PROBLEMS,
    ProblemKind,
    SenderAddresses,
    check_file,
    check_job,
    stored_email,
    template_variables,
)

STATEMENT = Template(
    "statement",
    "en",
    3,
    "Statement {{ period }}",
    "Dear {{ name }}, {{ balance }}{% if note is defined %} {{ note }}{% endif %}",
    "<p>{{ name }}</p>",
)
PDF = b"%PDF-1.4 statement"


class Templates:
    def __init__(self, *templates: Template) -> None:
        self.templates = {(t.name, t.locale): t for t in templates}
        self.asked: list[tuple[str, str, int | None]] = []

    async def template(self, name: str, locale: str, as_of: int | None = None) -> Template | None:
        self.asked.append((name, locale, as_of))
        return self.templates.get((name, locale))


class Files:
    """Attachments by URI: bytes, or the error their load raises."""

    def __init__(self, files: dict[str, bytes | Exception] | None = None) -> None:
        self.files = files or {}

    async def load(self, ref: AttachmentRef) -> Attachment:
        found = self.files.get(ref.uri, PermanentError("file attachment not found"))
        if isinstance(found, Exception):
            raise found
        return Attachment(ref.filename, ref.content_type, found)


def attachment(uri: str) -> str:
    return f'[{{"uri": "{uri}", "filename": "s.pdf", "content_type": "application/pdf"}}]'


async def test_a_file_with_every_kind_of_bad_row(tmp_path: Path) -> None:
    recipients = tmp_path / "r.jsonl"
    lines = [
        '{"email": "ann@example.com", "name": "Ann", "period": "2024", "balance": "1"}',
        '{"email": "not an address", "name": "Bob", "period": "2024", "balance": "1"}',
        '{"email": "cid@example.com", "period": "2024"}',  # name and balance missing
        "{broken",
        '{"email": "dan@example.com", "name": "Dan", "period": "2024", "balance": "1",'
        f' "attachments": {attachment("file:missing.pdf")}}}',
        '{"email": "eve@example.com", "name": "Eve", "period": "2024", "balance": "1",'
        f' "attachments": {attachment("file:../etc/passwd")}}}',
        '{"email": "fay@example.com", "name": "Fay", "period": "2024", "balance": "1",'
        f' "attachments": {attachment("s3://b/slow.pdf")}}}',
        '{"email": "gus@example.com", "name": "Gus", "period": "2024", "balance": "1",'
        ' "locale": "de"}',  # no German template: English, as the pipeline falls back
        '{"email": "hal@example.com", "name": "Hal", "period": "=?utf-8?q?Hi?=", "balance": "1"}',
        '{"email": "ivy@example.com", "name": "Ivy", "period": "2024", "balance": "1",'
        f' "attachments": {attachment("file:ok.pdf")}}}',
    ]
    recipients.write_text("\n".join(lines) + "\n")
    files = Files({"file:ok.pdf": PDF, "s3://b/slow.pdf": RetryableError("s3 (SlowDown)")})

    report = await check_file(recipients, "statement", Templates(STATEMENT), files)

    found = {(p.at, p.kind): p.reason for p in report.problems}
    assert found == {
        (2, ProblemKind.ADDRESS): found[(2, ProblemKind.ADDRESS)],
        (3, ProblemKind.VARIABLES): "missing variables: balance, name",
        (4, ProblemKind.ROW): found[(4, ProblemKind.ROW)],
        (5, ProblemKind.ATTACHMENT): "attachment 1: file attachment not found",
        (6, ProblemKind.ATTACHMENT): found[(6, ProblemKind.ATTACHMENT)],
        (7, ProblemKind.ATTACHMENT): "attachment 1: could not be read now: s3 (SlowDown)",
        (9, ProblemKind.MESSAGE): "header injection attempt in Subject",
    }
    assert "invalid recipient address" in found[(2, ProblemKind.ADDRESS)]
    assert "escapes the attachments directory" in found[(6, ProblemKind.ATTACHMENT)]
    assert [p.at for p in report.problems] == sorted(p.at for p in report.problems)
    assert (report.checked, report.failing, report.ok) == (10, 7, False)
    assert (report.attachments, report.attachment_bytes) == (1, len(PDF))
    assert report.digests_recorded == 0  # a file has no email ids to record them against
    for problem in report.problems:  # never a value of the row
        assert "example.com" not in problem.reason
        assert "passwd" not in problem.reason


async def test_a_good_file_passes_and_a_guarded_variable_is_not_needed(tmp_path: Path) -> None:
    recipients = tmp_path / "r.csv"
    recipients.write_text("email,name,period,balance\nann@example.com,Ann,2024,1\n")
    assert "note" in template_variables(STATEMENT)

    report = await check_file(
        recipients,
        "statement",
        Templates(STATEMENT),
        Files(),
        SenderAddresses("Bank <s@b.example>"),
    )

    assert report.ok
    assert report.checked == 1
    assert not report.problems


async def test_a_missing_template_or_a_bad_sender_is_a_problem_of_the_whole_file(
    tmp_path: Path,
) -> None:
    recipients = tmp_path / "r.csv"
    recipients.write_text("email,name,period,balance\nann@example.com,Ann,2024,1\n")

    missing = await check_file(recipients, "nope", Templates(STATEMENT), Files())
    bad_sender = await check_file(
        recipients, "statement", Templates(STATEMENT), Files(), SenderAddresses("no address")
    )

    assert missing.general == ["template 'nope' does not exist (no 'en')"]
    assert [p.kind for p in missing.problems] == [ProblemKind.TEMPLATE]
    assert not missing.ok
    assert bad_sender.general == [
        "the job's From address is invalid: An email address must have an @-sign"
    ]
    assert not bad_sender.problems
    assert not bad_sender.ok


async def test_the_first_problems_are_kept_and_all_are_counted(tmp_path: Path) -> None:
    recipients = tmp_path / "r.csv"
    rows = "".join(f"x{i}@example.com,Ann\n" for i in range(MAX_KEPT_PROBLEMS + 50))
    recipients.write_text("email,name\n" + rows)

    report = await check_file(recipients, "statement", Templates(STATEMENT), Files())

    assert report.failing == MAX_KEPT_PROBLEMS + 50
    assert report.kinds == {ProblemKind.VARIABLES: MAX_KEPT_PROBLEMS + 50}
    assert len(report.problems) == MAX_KEPT_PROBLEMS
    assert report.problems[0].at == 2  # the line after the header


class JobStore(Templates):
    """The reads and the audit trail of ``check_job``, over a list of stored rows."""

    def __init__(self, job: Job, rows: list[StoredRecipient], *templates: Template) -> None:
        super().__init__(*templates)
        self.job_ = job
        self.rows = rows
        self.recorded: list[AttachmentDigest] = []
        self.pages: list[tuple[int, int]] = []

    async def job(self, job_id: int) -> Job:
        if job_id != self.job_.id:
            raise NotFoundError("no such job")
        return self.job_

    async def recipients_page(
        self, job_id: int, statuses: Sequence[EmailStatus], after_id: int, limit: int
    ) -> list[StoredRecipient]:
        assert set(statuses) == {EmailStatus.PENDING, EmailStatus.QUEUED}
        self.pages.append((after_id, limit))
        return [row for row in self.rows if row.id > after_id][:limit]

    async def record_attachment_digests(
        self, job_id: int, digests: Sequence[AttachmentDigest]
    ) -> int:
        self.recorded += digests
        return len(digests)


async def test_a_job_is_checked_by_email_id_with_its_pinned_version_and_digests() -> None:
    job = Job(7, "j", JobStatus.PROCESSING, "statement", "Bank <s@b.example>",
              template_version=3)  # fmt: skip
    variables = {"name": "Ann", "period": "2024", "balance": "1"}
    pdf = [{"uri": "file:ok.pdf", "filename": "s.pdf"}]
    rows = [
        StoredRecipient(10, "ann@example.com", None, variables, pdf),
        StoredRecipient(11, "ann@example.com", None, "{not json", None),
        StoredRecipient(12, "bad", "fr", variables, None),
        StoredRecipient(13, "bob@example.com", "fr", variables, [{"uri": "ftp://x"}]),
        StoredRecipient(14, "cid@example.com", None, {"name": "Cid"}, pdf + pdf),
    ]
    store = JobStore(job, rows, STATEMENT)

    report = await check_job(store, 7, Files({"file:ok.pdf": PDF}))

    assert [(p.at, p.kind) for p in report.problems] == [
        (11, ProblemKind.ROW),
        (12, ProblemKind.ADDRESS),
        (13, ProblemKind.ATTACHMENT),
        (14, ProblemKind.VARIABLES),
    ]
    assert report.unit == "email"
    assert report.checked == 5
    assert report.failing == 4
    sha = hashlib.sha256(PDF).hexdigest()
    assert store.recorded == [
        AttachmentDigest(10, 1, len(PDF), sha),
        AttachmentDigest(14, 1, len(PDF), sha),
        AttachmentDigest(14, 2, len(PDF), sha),
    ]
    assert report.digests_recorded == 3
    assert {as_of for _, _, as_of in store.asked} == {3}  # the version the job pinned
    assert store.pages[-1] == (14, 500)  # keyset pages until an empty one


async def test_checking_a_missing_job_says_so() -> None:
    store = JobStore(Job(1, "j", JobStatus.DRAFT, "statement", "s@b.example"), [], STATEMENT)
    with pytest.raises(NotFoundError, match="job 2 does not exist"):
        await check_job(store, 2, Files())


def test_stored_rows_are_read_as_the_send_would_read_them() -> None:
    good = stored_email(StoredRecipient(1, "ann@example.com", "de", {}, None))
    assert not isinstance(good, str)
    assert good.to_address == "ann@example.com"
    assert stored_email(StoredRecipient(1, "a@b.example", None, [], None)) == (
        "variables must be a JSON object"
    )
    assert stored_email(StoredRecipient(1, "a@b.example", None, {}, {"uri": 1})) == (
        "attachments must be a JSON list"
    )
    assert stored_email(StoredRecipient(1, "a@b.example\r\n", None, {}, None)) == (
        "invalid recipient address: header injection attempt in To"
    )


@pytest.mark.timeout(60)
async def test_memory_stays_flat_however_long_the_file(tmp_path: Path) -> None:
    """Ten times the rows take no more memory at the peak than a tenth (plus a little):
    rows are streamed, problems capped (both runs pass the cap). One row in ten is checked
    through to the message, the others are short rows; sizes are kept small because
    tracemalloc slows allocation-heavy code about ninefold."""

    def write(path: Path, count: int) -> Path:
        with path.open("w") as out:
            out.write("email,name,period,balance\n")
            for i in range(count):
                good = i % 10 == 0
                out.write(f"c{i}@example.com,Ann,2024,1\n" if good else f"c{i}@example.com\n")
        return path

    template = Template("statement", "en", 1, "S {{ period }}", "{{ name }} {{ balance }}")

    async def peak(path: Path) -> tuple[int, int, int]:
        tracemalloc.start()
        try:
            report = await check_file(path, "statement", Templates(template), Files())
            return tracemalloc.get_traced_memory()[1], report.checked, report.failing
        finally:
            tracemalloc.stop()

    small = await peak(write(tmp_path / "small.csv", 2_000))
    large = await peak(write(tmp_path / "large.csv", 20_000))

    assert small[1:] == (2_000, 1_800)
    assert large[1:] == (20_000, 18_000)
    assert large[0] < small[0] * 1.5 + 300_000, (small[0], large[0])

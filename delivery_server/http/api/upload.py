"""``POST /api/v1/jobs``: a job from an uploaded recipients file (``multipart/form-data``).

The file part is streamed to a private temporary file (never under the client's file
name: only its ``.csv``/``.jsonl`` suffix is kept) in bounded chunks, then imported by
``job_import.create_job_from_file``, the CLI's own import: the job stays in ``draft``
until every row is in, a broken-off import cancels it, and with ``strict`` (the default
here) a file with any invalid row imports nothing and answers 422 with the rows at fault.
"""

from __future__ import annotations

import tempfile
from pathlib import Path, PurePath
from typing import Any

from aiohttp import BodyPartReader, web
from pydantic import ValidationError

from delivery_server.api_tokens import TokenScope
from delivery_server.errors import (
    JobImportError,
    NotFoundError,
    PermanentError,
    RecipientsFileError,
)
from delivery_server.http.api.endpoints import Call, Endpoint, refuse
from delivery_server.http.api.models import (
    InvalidRowOut,
    JobCreated,
    JobForm,
    JobOut,
    error_details,
)
from delivery_server.job_import import JobRequest, create_job_from_file
from delivery_server.recipients import CSV_SUFFIXES, JSONL_SUFFIXES

MAX_UPLOAD_BYTES = 256 * 1024 * 1024
MAX_FIELD_BYTES = 4096
MAX_PARTS = 20
CHUNK_BYTES = 64 * 1024
FILE_FIELD = "recipients"


class _Upload:
    """What the form carried: its fields, and where its file was written."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.fields: dict[str, Any] = {}
        self.path: Path | None = None
        self.filename = ""


async def _read_form(request: web.Request, upload: _Upload, limit: int) -> None:
    if request.content_length is not None and request.content_length > limit:
        raise refuse(413, f"the upload is larger than {limit // (1024 * 1024)} MiB")
    if request.content_type != "multipart/form-data":
        raise refuse(415, "the body must be multipart/form-data with a recipients file")
    reader = await request.multipart()
    total = 0
    for _ in range(MAX_PARTS):
        part = await reader.next()
        if part is None:
            return
        if not isinstance(part, BodyPartReader) or not part.name:
            raise refuse(422, "nested or unnamed form parts are not accepted")
        if part.name == FILE_FIELD:
            total += await _save_file(part, upload, limit - total)
        else:
            value = await part.read_chunk(MAX_FIELD_BYTES + 1)
            if len(value) > MAX_FIELD_BYTES or not part.at_eof():
                raise refuse(413, f"form field {part.name!r} is too long")
            total += len(value)
            upload.fields[part.name] = value.decode("utf-8", errors="replace")
    raise refuse(422, f"more than {MAX_PARTS} form parts")


async def _save_file(part: BodyPartReader, upload: _Upload, room: int) -> int:
    if upload.path is not None:
        raise refuse(422, "only one recipients file per job")
    suffix = PurePath(part.filename or "").suffix.lower()
    if suffix not in CSV_SUFFIXES | JSONL_SUFFIXES:
        raise refuse(422, "the recipients file must be named .csv, .jsonl or .ndjson")
    upload.filename = PurePath(part.filename or "").name[:100]
    upload.path = upload.directory / f"recipients{suffix}"
    written = 0
    with upload.path.open("wb") as out:
        while chunk := await part.read_chunk(CHUNK_BYTES):
            written += len(chunk)
            if written > room:
                raise refuse(413, f"the upload is larger than {MAX_UPLOAD_BYTES // 2**20} MiB")
            out.write(chunk)
    return written


def create_job(unsubscribe_ready: bool, limit: int = MAX_UPLOAD_BYTES) -> Endpoint:
    """The upload endpoint; ``unsubscribe_ready``: the server can sign unsubscribe links."""

    async def handle(call: Call) -> JobCreated:
        with tempfile.TemporaryDirectory(prefix="delivery-upload-") as directory:
            upload = _Upload(Path(directory))
            await _read_form(call.request, upload, limit)
            try:
                form = JobForm.model_validate(upload.fields)
            except ValidationError as exc:
                raise refuse(422, f"invalid form: {_summary(exc)}") from None
            if upload.path is None:
                raise refuse(422, f"no {FILE_FIELD!r} file in the form")
            if form.unsubscribe and not unsubscribe_ready:
                raise PermanentError(
                    "unsubscribe links need DELIVERY_PUBLIC_URL and DELIVERY_UNSUBSCRIBE_SECRET"
                )
            request = JobRequest(
                template=form.template,
                from_address=form.from_address,
                recipients=upload.path,
                name=form.name or f"{form.template} {upload.filename}".strip(),
                reply_to=form.reply_to,
                scheduled_at=form.scheduled_at,
                draft=form.draft,
                strict=form.strict,
                unsubscribe=form.unsubscribe,
            )
            try:
                report = await create_job_from_file(call.store, request)
            except NotFoundError as exc:  # the template: the form is wrong, not the URL
                raise PermanentError(str(exc)) from None
            except JobImportError as exc:
                raise type(exc)(_named(exc, upload), exc.report) from None
            except RecipientsFileError as exc:
                raise RecipientsFileError(_named(exc, upload)) from None
        assert report.job is not None
        call.job_id = report.job.id
        call.detail = f"{report.imported} emails imported, {report.invalid_count} invalid rows"
        return JobCreated(
            job=JobOut.of(report.job),
            imported=report.imported,
            invalid_count=report.invalid_count,
            invalid=[InvalidRowOut(line=r.line, reason=r.reason) for r in report.invalid],
        )

    return Endpoint(
        "POST",
        "/api/v1/jobs",
        handle,
        "Create a job from a CSV or JSONL recipients file (multipart/form-data)",
        JobCreated,
        scope=TokenScope.OPERATE,
        status=201,
        action="job.create",
        form=JobForm,
        errors=(404, 413, 415, 422),
    )


def _named(exc: Exception, upload: _Upload) -> str:
    """The import's message about the uploaded file, not about our temporary copy."""
    text = str(exc).replace(str(upload.path), "the uploaded file")
    return text.replace("--strict", "strict")


def _summary(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in d.loc) or 'form'}: {d.msg}" for d in error_details(exc.errors())
    )

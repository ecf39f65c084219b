"""Reading a recipients file (CSV or JSONL) one row at a time.

Files can hold half a million rows, so nothing here keeps more than one row in memory:
``read_recipients`` is a generator that yields ``(line_number, NewEmail)`` for a good row
and ``(line_number, reason)`` for a bad one, so that callers can report bad rows and still
import the good ones. Problems with the file as a whole (unreadable, not UTF-8, no
``email`` column) raise ``RecipientsFileError`` instead.

CSV: a header row with an ``email`` column; optional ``locale`` and ``attachments`` (a JSON
list of attachment objects) columns; every other column is a string template variable.

JSONL: one JSON object per line with ``email``, optional ``locale`` and ``attachments``;
every other key is a template variable (nested values are kept as they are).

A job of another channel (DESIGN §12) names its recipients in its channel's column
instead of ``email`` (``phone``, ``key``, ``path``, ``ref``), checked by that channel's
rule; the value is stored as the email's ``to_address`` all the same.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from delivery_server.errors import PermanentError, RecipientsFileError
from delivery_server.mime import validate_address
from delivery_server.models import AttachmentRef, NewEmail

# Columns (CSV) or keys (JSONL) that are not template variables.
EMAIL_KEY, LOCALE_KEY, ATTACHMENTS_KEY = "email", "locale", "attachments"
CSV_SUFFIXES = frozenset({".csv"})
JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson"})

# BCP 47-ish: "en", "de-CH", "pt_BR", "zh-Hant-TW". Anything else is surely a data error.
_LOCALE = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8}){0,3}")

Row = tuple[int, NewEmail | str]
# A recipient value → the value stored (normalised); ``PermanentError`` when invalid.
RecipientCheck = Callable[[str], str]
# Splits after a CR that is not followed by LF.
_LONE_CR = re.compile(r"(?<=\r)(?!\n)")


def is_valid_locale(locale: str) -> bool:
    """Whether ``locale`` looks like a language tag (``en``, ``de-CH``)."""
    return _LOCALE.fullmatch(locale) is not None


def read_recipients(
    path: Path, key: str = EMAIL_KEY, check: RecipientCheck = validate_address
) -> Generator[Row, None, None]:
    """Yield every non-blank row of a ``.csv`` or ``.jsonl`` file, in file order; the
    recipient is in column ``key`` (``email`` unless the job's channel says otherwise)."""
    suffix = path.suffix.lower()
    if suffix not in CSV_SUFFIXES | JSONL_SUFFIXES:
        raise RecipientsFileError(
            f"{path}: unknown recipients format {suffix or '(no extension)'!r}: "
            "use a .csv or .jsonl file"
        )
    try:
        with path.open("rb") as binary:
            lines = _utf8_lines(path, binary, split_lone_cr=suffix in CSV_SUFFIXES)
            if suffix in CSV_SUFFIXES:
                yield from _read_csv(path, lines, _Recipient(key, check))
            else:
                yield from _read_jsonl(lines, _Recipient(key, check))
    except OSError as exc:
        raise RecipientsFileError(f"{path}: cannot read: {exc.strerror or exc}") from exc


def _utf8_lines(path: Path, binary: BinaryIO, *, split_lone_cr: bool) -> Iterator[str]:
    """Decode line by line, so that an encoding error names its exact line.

    Lines keep their endings: the csv module needs them inside quoted fields. Spreadsheets
    on macOS may end CSV lines with a lone CR, which is split here as text mode would.
    """
    for number, raw in enumerate(binary, start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RecipientsFileError(
                f"{path}: line {number} is not UTF-8 text (save the file as UTF-8)"
            ) from exc
        if number == 1:
            text = text.removeprefix("\ufeff")  # byte order mark
        if split_lone_cr and "\r" in text.rstrip("\r\n"):
            yield from (piece for piece in _LONE_CR.split(text) if piece)
        else:
            yield text


class _Recipient:
    """The recipient column of a file and its check."""

    __slots__ = ("check", "key")

    def __init__(self, key: str, check: RecipientCheck) -> None:
        self.key, self.check = key, check


def _read_csv(path: Path, lines: Iterator[str], recipient: _Recipient) -> Iterator[Row]:
    reader = csv.reader(lines, strict=True)
    header, header_line = _csv_header(path, reader, recipient.key)
    # Reserved columns match in any case; variables keep the header's spelling.
    keys = [name.lower() for name in header]
    email_at = keys.index(recipient.key)
    locale_at = keys.index(LOCALE_KEY) if LOCALE_KEY in keys else None
    attachments_at = keys.index(ATTACHMENTS_KEY) if ATTACHMENTS_KEY in keys else None
    variable_columns = [
        (i, name) for i, name in enumerate(header) if i not in (email_at, locale_at, attachments_at)
    ]
    last_line = header_line
    while True:
        line = last_line + 1  # a quoted field may span lines: report where the row starts
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            # The reader resumes on the next line, so this is one bad row; only an
            # unclosed quote runs to the end of the file, and the message says so.
            last_line = reader.line_num
            hint = (
                " (an unclosed quote runs to the end of the file)"
                if "end of data" in str(exc)
                else ""
            )
            yield line, f"malformed CSV: {exc}{hint}"
            continue
        last_line = reader.line_num
        if not any(field.strip() for field in fields):
            continue  # blank line (or a row of empty cells)
        if len(fields) != len(header):
            yield line, f"has {len(fields)} fields but the header has {len(header)}"
            continue
        variables: dict[str, Any] = {name: fields[i] for i, name in variable_columns}
        yield (
            line,
            _new_email(
                fields[email_at],
                fields[locale_at] if locale_at is not None else None,
                fields[attachments_at] if attachments_at is not None else None,
                variables,
                recipient,
                attachments_are_json_text=True,
            ),
        )


def _csv_header(path: Path, reader: Any, key: str) -> tuple[list[str], int]:
    try:
        for raw in reader:
            if any(cell.strip() for cell in raw):
                header = [cell.strip() for cell in raw]
                break
        else:
            raise RecipientsFileError(f"{path}: the file is empty (no header row)")
    except csv.Error as exc:
        raise RecipientsFileError(f"{path}: malformed CSV header: {exc}") from exc
    line = int(reader.line_num)
    if key not in (name.lower() for name in header):
        found = ", ".join(repr(name) for name in header)
        raise RecipientsFileError(
            f"{path}: line {line}: the header has no {key!r} column (found {found})"
        )
    if "" in header:
        raise RecipientsFileError(
            f"{path}: line {line}: column {header.index('') + 1} of the header has no name"
        )
    keys = [name.lower() for name in header]
    duplicates = sorted({name for name in keys if keys.count(name) > 1})
    if duplicates:
        raise RecipientsFileError(
            f"{path}: line {line}: the header repeats the column {duplicates[0]!r}"
        )
    return header, line


def _read_jsonl(lines: Iterator[str], recipient: _Recipient) -> Iterator[Row]:
    for line, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            # Without the line break, so that the error's column is a column of this line.
            data = json.loads(text.rstrip("\r\n"))
        except ValueError as exc:
            reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
            column = f" (column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
            yield line, f"invalid JSON: {reason}{column}"
            continue
        if not isinstance(data, dict):
            yield line, f"expected a JSON object, found {type(data).__name__}"
            continue
        email, locale = data.pop(recipient.key, None), data.pop(LOCALE_KEY, None)
        attachments = data.pop(ATTACHMENTS_KEY, None)
        yield (
            line,
            _new_email(
                email, locale, attachments, data, recipient, attachments_are_json_text=False
            ),
        )


def _new_email(
    email: Any,
    locale: Any,
    attachments: Any,
    variables: dict[str, Any],
    recipient: _Recipient,
    *,
    attachments_are_json_text: bool,
) -> NewEmail | str:
    """Build one row's email, or the reason it is invalid."""
    if email is None or (isinstance(email, str) and not email.strip()):
        return "missing email address" if recipient.key == EMAIL_KEY else f"missing {recipient.key}"
    if not isinstance(email, str):
        return f"{recipient.key} must be a string"
    if locale is not None and not isinstance(locale, str):
        return "locale must be a string"
    locale = locale.strip() if locale else None
    if locale and not is_valid_locale(locale):
        return f"invalid locale {locale!r}"
    try:
        # Same check as at send time, so that an imported address cannot fail it later.
        address = recipient.check(email.strip())
        refs = _attachments(attachments, attachments_are_json_text)
    except PermanentError as exc:
        return str(exc)
    return NewEmail(
        to_address=address, variables=variables, locale=locale or None, attachments=refs
    )


def _attachments(raw: Any, is_json_text: bool) -> tuple[AttachmentRef, ...]:
    if is_json_text:
        if raw is None or not raw.strip():
            return ()
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            raise PermanentError("attachments: not valid JSON") from exc
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise PermanentError("attachments must be a JSON list of objects")
    try:
        refs = tuple(AttachmentRef.from_json(item) for item in raw)
        for ref in refs:
            # The loader's own rules, so that what it would refuse at send is refused now.
            ref.check_uri()
    except PermanentError as exc:
        raise PermanentError(f"attachments: {exc}") from exc
    return refs

"""Recipients files: CSV and JSONL rows, bad rows reported by line, bad files refused."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

from delivery_server.errors import RecipientsFileError
from delivery_server.models import AttachmentRef, NewEmail
from delivery_server.recipients import is_valid_locale, read_recipients


def write(tmp_path: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def rows(path: Path) -> list[tuple[int, NewEmail | str]]:
    return list(read_recipients(path))


def test_csv_columns_become_string_variables(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "r.csv",
        "email,name,balance,locale\nann@example.com,Ann,12.50,de\nbob@example.com,Bob,0,\n",
    )
    assert rows(path) == [
        (2, NewEmail("ann@example.com", {"name": "Ann", "balance": "12.50"}, "de")),
        (3, NewEmail("bob@example.com", {"name": "Bob", "balance": "0"}, None)),
    ]


def test_csv_quoting_keeps_commas_quotes_and_line_breaks(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "r.csv",
        'email,address,note\n"ann@example.com","1 Main St, Springfield","say ""hi""\nthen bye"\n'
        "bob@example.com,x,y\n",
    )
    result = rows(path)
    assert result[0] == (
        2,
        NewEmail(
            "ann@example.com",
            {"address": "1 Main St, Springfield", "note": 'say "hi"\nthen bye'},
        ),
    )
    # The second record starts on line 4 because the first one spans two lines.
    assert result[1][0] == 4


def test_csv_byte_order_mark_blank_lines_and_unicode(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "r.csv",
        "\ufeffEmail,Name\r\n\r\nzoe@bücher.example,Zoë Ünal\r\n,\r\nli@example.com,李小龙\r\n",
    )
    assert rows(path) == [
        (3, NewEmail("zoe@xn--bcher-kva.example", {"Name": "Zoë Ünal"})),
        (5, NewEmail("li@example.com", {"Name": "李小龙"})),
    ]


def test_csv_bad_rows_are_reported_with_their_line_and_the_rest_imports(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "r.csv",
        "email,name,locale\n"
        "not-an-address,A,\n"
        ",B,\n"
        "c@example.com,C\n"
        "d@example.com,D,??\n"
        '"e@example.com"x,E,\n'
        "f@example.com,F,en\n",
    )
    result = rows(path)
    reasons = {line: item for line, item in result if isinstance(item, str)}
    assert set(reasons) == {2, 3, 4, 5, 6}
    assert reasons[2].startswith("invalid recipient address")
    assert reasons[3] == "missing email address"
    assert reasons[4] == "has 2 fields but the header has 3"
    assert reasons[5] == "invalid locale '??'"
    assert reasons[6].startswith("malformed CSV")
    assert result[-1] == (7, NewEmail("f@example.com", {"name": "F"}, "en"))


def test_csv_unclosed_quote_is_one_bad_row_that_says_why(tmp_path: Path) -> None:
    path = write(tmp_path, "r.csv", 'email,name\na@example.com,"Ann\nb@example.com,Bob\n')
    [(line, reason)] = rows(path)
    assert line == 2
    assert isinstance(reason, str)
    assert "unclosed quote" in reason


def test_csv_attachments_column_holds_a_json_list(tmp_path: Path) -> None:
    good = json.dumps(
        [{"uri": "file:statements/1.pdf", "filename": "s.pdf", "content_type": "application/pdf"}]
    )
    path = tmp_path / "r.csv"
    with path.open("w", newline="", encoding="utf-8") as stream:
        import csv

        writer = csv.writer(stream)
        writer.writerow(["email", "attachments"])
        writer.writerow(["a@example.com", good])
        writer.writerow(["b@example.com", ""])
        writer.writerow(["c@example.com", "[{"])
        writer.writerow(["d@example.com", '[{"uri": "file:../etc/passwd", "filename": "p"}]'])
        writer.writerow(["e@example.com", '[{"uri": "http://x/y", "filename": "p"}]'])
        writer.writerow(["f@example.com", '{"uri": "file:a", "filename": "p"}'])
    result = dict(rows(path))
    assert result[2] == NewEmail(
        "a@example.com",
        {},
        attachments=(AttachmentRef("file:statements/1.pdf", "s.pdf", "application/pdf"),),
    )
    assert result[3] == NewEmail("b@example.com", {})
    assert result[4] == "attachments: not valid JSON"
    assert "inside the attachments directory" in str(result[5])
    assert "file: or s3://" in str(result[6])
    assert result[7] == "attachments must be a JSON list of objects"


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("file:jane\x00doe.pdf", "invalid file attachment path"),
        ("file:2024\\jane-doe.pdf", "invalid file attachment path"),
        ("file:", "invalid file attachment path"),
        ("file:.", "invalid file attachment path"),
        ("file://fileserver/jane-doe.pdf", "must be relative"),
        ("file:/home/jane-doe.pdf", "must be relative"),
        ("file:2024/../../jane-doe.pdf", "escapes the attachments directory"),
        ("s3://statements", "needs a bucket and a key"),
        ("s3:///jane-doe.pdf", "needs a bucket and a key"),
        ("S3://statements/jane-doe.pdf", "unsupported attachment uri scheme"),
        ("https://example.org/jane-doe.pdf", "unsupported attachment uri scheme"),
    ],
)
def test_import_refuses_what_the_attachment_loaders_refuse(
    tmp_path: Path, uri: str, reason: str
) -> None:
    record = {"email": "ann@example.com", "attachments": [{"uri": uri, "filename": "s.pdf"}]}
    [(line, got)] = rows(write(tmp_path, "r.jsonl", json.dumps(record) + "\n"))
    assert line == 1
    assert isinstance(got, str)
    assert got.startswith("attachments: ")
    assert reason in got
    assert "jane" not in got  # a path or key can hold a customer's name: never quoted
    assert "fileserver" not in got


def test_csv_without_email_column_is_a_file_error(tmp_path: Path) -> None:
    path = write(tmp_path, "r.csv", "mail,name\na@example.com,A\n")
    with pytest.raises(RecipientsFileError, match="no 'email' column"):
        rows(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("\n\n", "empty"),
        ("email,name,name\n", "repeats the column 'name'"),
        ("email,,x\n", "column 2 of the header has no name"),
    ],
)
def test_csv_bad_headers_are_file_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(RecipientsFileError, match=message):
        rows(write(tmp_path, "r.csv", text))


def test_csv_that_is_not_utf8_is_a_file_error(tmp_path: Path) -> None:
    path = write(tmp_path, "r.csv", "email,name\na@example.com,J\xf6rg\n", encoding="latin-1")
    with pytest.raises(RecipientsFileError, match="line 2 is not UTF-8 text"):
        rows(path)


def test_csv_with_classic_mac_line_endings(tmp_path: Path) -> None:
    path = write(tmp_path, "r.csv", 'email,note\ra@example.com,"x\ry"\rb@example.com,z\r')
    assert rows(path) == [
        (2, NewEmail("a@example.com", {"note": "x\ry"})),
        (4, NewEmail("b@example.com", {"note": "z"})),
    ]


def test_jsonl_keeps_nested_variables(tmp_path: Path) -> None:
    record = {
        "email": "ann@example.com",
        "locale": "fr",
        "name": "Anne",
        "balance": 12.5,
        "transactions": [{"date": "2024-01-02", "amount": -3}],
        "attachments": [{"uri": "s3://bank/1.pdf", "filename": "1.pdf"}],
    }
    path = write(tmp_path, "r.jsonl", json.dumps(record, ensure_ascii=False) + "\n")
    assert rows(path) == [
        (
            1,
            NewEmail(
                "ann@example.com",
                {
                    "name": "Anne",
                    "balance": 12.5,
                    "transactions": [{"date": "2024-01-02", "amount": -3}],
                },
                "fr",
                (AttachmentRef("s3://bank/1.pdf", "1.pdf"),),
            ),
        )
    ]


def test_jsonl_malformed_lines_are_reported_and_the_rest_imports(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "r.jsonl",
        "\ufeff" + '{"email": "a@example.com"}\n'
        "\n"
        '{"email": "b@example.com", "name": }\n'
        '["c@example.com"]\n'
        '{"name": "no address"}\n'
        '{"email": 42}\n'
        '{"email": "g@example.com", "locale": 7}\n'
        '{"email": "h@example.com", "attachments": "x.pdf"}\n'
        '{"email": "i@example.com"}',  # no newline at the end of the file
    )
    result = rows(path)
    assert result[0] == (1, NewEmail("a@example.com"))
    assert result[1] == (3, "invalid JSON: Expecting value (column 36)")
    assert result[2] == (4, "expected a JSON object, found list")
    assert result[3] == (5, "missing email address")
    assert result[4] == (6, "email must be a string")
    assert result[5] == (7, "locale must be a string")
    assert result[6] == (8, "attachments must be a JSON list of objects")
    assert result[7] == (9, NewEmail("i@example.com"))


def test_jsonl_that_is_not_utf8_is_a_file_error_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"email": "a@example.com"}\n{"email": "b@example.com", "n": "\xff"}\n')
    with pytest.raises(RecipientsFileError, match="line 2 is not UTF-8 text"):
        rows(path)


def test_unknown_extension_and_missing_file_are_file_errors(tmp_path: Path) -> None:
    with pytest.raises(RecipientsFileError, match=r"use a \.csv or \.jsonl"):
        rows(write(tmp_path, "r.xlsx", "x"))
    with pytest.raises(RecipientsFileError, match="cannot read"):
        rows(tmp_path / "missing.csv")


def test_addresses_are_normalized(tmp_path: Path) -> None:
    path = write(tmp_path, "r.csv", "email\n  Ann@EXAMPLE.com \n")
    assert rows(path) == [(2, NewEmail("Ann@example.com"))]


def test_non_ascii_local_parts_are_refused_at_import(tmp_path: Path) -> None:
    # Neither SES nor the SMTP client speaks SMTPUTF8: better to say so before sending.
    [(line, reason)] = rows(write(tmp_path, "r.csv", "email\nzoë@example.com\n"))
    assert line == 2
    assert isinstance(reason, str)
    assert reason.startswith("invalid recipient address")


def _peak_reading(path: Path, rows: int) -> int:
    with path.open("w", encoding="utf-8") as stream:
        stream.write("email,name,account\n")
        for n in range(rows):
            stream.write(f"c{n}@example.com,Customer {n},DE{n:020d}\n")
    rows_iter = read_recipients(path)
    tracemalloc.start()
    try:
        count = sum(1 for _ in rows_iter)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == rows
    return peak


def test_rows_are_streamed_not_loaded(tmp_path: Path) -> None:
    # Memory must not grow with the file: four times the rows, about the same peak (the
    # bounded address-check cache and the reader's buffers are all that is held).
    small = _peak_reading(tmp_path / "small.csv", 5_000)
    large = _peak_reading(tmp_path / "large.csv", 20_000)
    assert large < small * 1.5 + 200_000, (small, large)


@pytest.mark.parametrize(
    ("locale", "valid"),
    [
        ("en", True),
        ("de-CH", True),
        ("pt_BR", True),
        ("zh-Hant-TW", True),
        ("e", False),
        ("english!", False),
        ("de-", False),
        ("", False),
    ],
)
def test_locale_shape(locale: str, valid: bool) -> None:
    assert is_valid_locale(locale) is valid

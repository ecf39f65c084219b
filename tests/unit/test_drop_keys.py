"""Drop keys and file names: hostile until checked; what one drop writes, and its id."""

from __future__ import annotations

import json

import pytest

from delivery_server.drop_targets import S3Target, parse_s3_target
from delivery_server.drops import (
    MAX_KEY_BYTES,
    DropForm,
    check_drop_key,
    check_file_name,
    drop_files,
)
from delivery_server.errors import PermanentError
from delivery_server.models import Attachment

PDF = Attachment("statement.pdf", "application/pdf", b"%PDF-1.4 jane")


@pytest.mark.parametrize(
    "key", ["jane", "customers/jane roe", "2024/ß/Ärger", "a" * 255, "x/" * 200 + "y"]
)
def test_relative_keys_pass(key: str) -> None:
    assert check_drop_key(key) == key


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("", "empty"),
        ("/etc/passwd", "relative"),
        ("../escape", r"'\.\.'"),
        ("customers/../../escape", r"'\.\.'"),
        ("customers/./jane", r"'\.'"),
        ("customers//jane", "empty segment"),
        ("customers/jane/", "empty segment"),
        ("customers\\..\\escape", "backslash"),
        ("jane\x00.pdf", "control"),
        ("jane\nroe", "control"),
        ("jane\x7f", "control"),
        ("invoice\u202efdp.exe", "format"),
        ("jane\u2028roe", "control"),
        ("a" * 256, "segment longer"),
        ("ab/" * 200, "longer than"),
    ],
)
def test_bad_keys_are_refused_without_quoting_them(key: str, reason: str) -> None:
    with pytest.raises(PermanentError, match=reason) as caught:
        check_drop_key(key)
    assert key.strip("/") not in str(caught.value) or not key.strip("/")


def test_the_key_limit_counts_utf8_bytes() -> None:
    fits = "é/" * (MAX_KEY_BYTES // 3) + "x"
    assert len(fits.encode()) <= MAX_KEY_BYTES
    check_drop_key(fits)
    with pytest.raises(PermanentError, match="longer than"):
        check_drop_key("é" * (MAX_KEY_BYTES // 2 + 1))


def test_the_field_is_named_in_the_reason() -> None:
    with pytest.raises(PermanentError, match="drop path must be relative"):
        check_drop_key("/x", "path")


@pytest.mark.parametrize("name", ["a/b.pdf", "..", "", "x\x00.pdf"])
def test_a_file_name_is_one_clean_segment(name: str) -> None:
    with pytest.raises(PermanentError):
        check_file_name(name)


def test_a_drop_holds_attachments_and_the_non_blank_bodies() -> None:
    files = drop_files("customers/jane", [PDF], "Dear Jane", "<p>Dear Jane</p>")

    assert [(f.name, f.content_type) for f in files] == [
        ("customers/jane/statement.pdf", "application/pdf"),
        ("customers/jane/body.txt", "text/plain; charset=utf-8"),
        ("customers/jane/body.html", "text/html; charset=utf-8"),
    ]
    assert files[1].data == b"Dear Jane"


def test_a_blank_body_is_left_out_and_an_empty_drop_refused() -> None:
    assert [f.name for f in drop_files("k", [PDF], "  \n", None)] == ["k/statement.pdf"]
    with pytest.raises(PermanentError, match="nothing to drop"):
        drop_files("k", [], " ", None)


@pytest.mark.parametrize(
    ("attachments", "text"),
    [
        ([PDF, Attachment("STATEMENT.PDF", "application/pdf", b"2")], None),
        ([Attachment("body.txt", "text/plain", b"x")], "Dear Jane"),
    ],
)
def test_two_files_of_one_name_are_refused(attachments: list[Attachment], text: str | None) -> None:
    with pytest.raises(PermanentError, match="share a name"):
        drop_files("k", attachments, text, None)


def test_an_attachment_name_with_a_slash_is_refused() -> None:
    with pytest.raises(PermanentError, match="may not contain '/'"):
        drop_files("k", [Attachment("../../x.pdf", "application/pdf", b"x")], None, None)


def _form(key: str = "customers/jane", text: str = "Dear Jane") -> DropForm[S3Target]:
    target = parse_s3_target("s3://drops/out/", frozenset({"drops"}))
    return DropForm("s3", 3, 7, target, drop_files(key, [PDF], text, None))


def test_the_same_drop_has_the_same_id_and_another_drop_another() -> None:
    assert _form().digest() == _form().digest()
    assert _form().digest() != _form(text="Dear Jane!").digest()
    assert _form().digest() != _form(key="customers/jane2").digest()


def test_the_outbox_form_is_a_manifest_and_id_named_files() -> None:
    files = _form().outbox_files()

    assert [suffix for suffix, _ in files] == [".s3.json", ".s3.1.pdf", ".s3.2.txt"]
    assert all("jane" not in suffix for suffix, _ in files)
    manifest = json.loads(files[0][1])
    assert manifest["target"] == "s3://drops/out/"
    assert [f["name"] for f in manifest["files"]] == [
        "customers/jane/statement.pdf",
        "customers/jane/body.txt",
    ]
    assert manifest["files"][0]["outbox_file"] == "3-7.s3.1.pdf"
    assert files[1][1] == PDF.data

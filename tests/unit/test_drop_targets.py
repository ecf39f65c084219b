"""Drop targets: s3:// and sftp:// URIs parsed, normalised and held to their allow-lists;
the channel rules jobs create uses (exit 2 naming the setting)."""

from __future__ import annotations

import pytest

from delivery_server.drop_targets import (
    S3Target,
    SftpTarget,
    parse_s3_target,
    parse_sftp_target,
    s3_rules,
    sftp_rules,
)
from delivery_server.errors import PermanentError, TargetRefusedError
from delivery_server.settings import load_settings

BUCKETS = frozenset({"drops", "partner.drops"})
HOSTS = frozenset({"sftp.partner.example", "other.example:2222"})
PARTNER = "sftp.partner.example"


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://drops/out/", S3Target("drops", "out/")),
        ("s3://drops/out", S3Target("drops", "out/")),
        ("s3://drops/a/b/", S3Target("drops", "a/b/")),
        ("s3://drops", S3Target("drops", "")),
        ("s3://partner.drops/", S3Target("partner.drops", "")),
    ],
)
def test_s3_targets_are_normalised_to_a_folder(uri: str, expected: S3Target) -> None:
    target = parse_s3_target(uri, BUCKETS)
    assert target == expected
    assert target.object_key("k/f.pdf") == expected.prefix + "k/f.pdf"
    assert parse_s3_target(target.uri, BUCKETS) == target


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        (None, "needs --target"),
        ("", "needs --target"),
        ("https://drops/out/", "must look like"),
        ("s3://drops/out/?versionId=1", "must look like"),
        ("s3://Drops/out/", "invalid bucket"),
        ("s3://a/out/", "invalid bucket"),
        ("s3://other/out/", "not in DELIVERY_DROP_S3_BUCKETS"),
        ("s3://drops/../x/", r"'\.\.'"),
        ("s3://drops//x/", "relative"),
        ("s3://drops/x//y/", "empty segment"),
    ],
)
def test_bad_s3_targets_are_refused(uri: str | None, reason: str) -> None:
    with pytest.raises(PermanentError, match=reason):
        parse_s3_target(uri, BUCKETS)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        (
            "sftp://bob@sftp.partner.example/in",
            SftpTarget("bob", "sftp.partner.example", 22, "/in"),
        ),
        (
            "sftp://bob@SFTP.Partner.Example:22/in/2024/",
            SftpTarget("bob", "sftp.partner.example", 22, "/in/2024"),
        ),
        (
            "sftp://bob@sftp.partner.example/~/in",
            SftpTarget("bob", "sftp.partner.example", 22, "in"),
        ),
        ("sftp://bob@sftp.partner.example", SftpTarget("bob", "sftp.partner.example", 22, "")),
        ("sftp://bob@other.example:2222/", SftpTarget("bob", "other.example", 2222, "")),
        (
            "sftp://a%40b@sftp.partner.example/in",
            SftpTarget("a@b", "sftp.partner.example", 22, "/in"),
        ),
    ],
)
def test_sftp_targets_are_parsed(uri: str, expected: SftpTarget) -> None:
    target = parse_sftp_target(uri, HOSTS)
    assert target == expected
    assert parse_sftp_target(target.uri, HOSTS) == target


def test_remote_paths_sit_in_the_target_directory() -> None:
    assert SftpTarget("u", "h", 22, "/in").remote_path("k/f.pdf") == "/in/k/f.pdf"
    assert SftpTarget("u", "h", 22, "in").remote_path("k/f.pdf") == "in/k/f.pdf"
    assert SftpTarget("u", "h", 22, "").remote_path("k/f.pdf") == "k/f.pdf"


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        (None, "needs --target"),
        ("ftp://bob@sftp.partner.example/in", "must look like"),
        ("sftp://bob@sftp.partner.example:99999/in", "must look like"),
        ("sftp://sftp.partner.example/in", "needs a user"),
        ("sftp://bob:hunter2@sftp.partner.example/in", "no password in the URI"),
        ("sftp://bob@evil.example/in", "not in DELIVERY_DROP_SFTP_HOSTS"),
        ("sftp://bob@other.example/in", "not in DELIVERY_DROP_SFTP_HOSTS"),  # port 22
        ("sftp://bob@169.254.169.254/in", "not in DELIVERY_DROP_SFTP_HOSTS"),
        ("sftp://bob@sftp.partner.example/in/../../etc", r"'\.\.'"),
        ("sftp://bob@sftp.partner.example/in?x=1", "must look like"),
    ],
)
def test_bad_sftp_targets_are_refused(uri: str | None, reason: str) -> None:
    with pytest.raises(PermanentError, match=reason) as caught:
        parse_sftp_target(uri, HOSTS)
    assert "hunter2" not in str(caught.value)


def test_the_rules_refuse_at_jobs_create_naming_the_setting() -> None:
    settings = load_settings(None, drop_s3_buckets="drops", drop_sftp_hosts="sftp.partner.example")
    s3, sftp = s3_rules(settings), sftp_rules(settings)

    assert (s3.recipient_field, sftp.recipient_field) == ("key", "path")
    assert s3.check_target("s3://drops/out") == "s3://drops/out/"
    assert sftp.check_target("sftp://bob@SFTP.partner.example/in") == (
        "sftp://bob@sftp.partner.example:22/in"
    )
    with pytest.raises(TargetRefusedError, match="DELIVERY_DROP_S3_BUCKETS"):
        s3.check_target("s3://other/out/")
    with pytest.raises(TargetRefusedError, match="DELIVERY_DROP_SFTP_HOSTS"):
        sftp.check_target("sftp://bob@evil.example/in")
    with pytest.raises(PermanentError, match="drop key"):
        s3.check_recipient("../x")
    with pytest.raises(PermanentError, match="drop path"):
        sftp.check_recipient("/etc/passwd")
    assert s3.check_recipient("customers/jane") == "customers/jane"


def test_with_no_allow_list_every_target_is_refused() -> None:
    settings = load_settings(None)
    with pytest.raises(TargetRefusedError):
        s3_rules(settings).check_target("s3://drops/out/")
    with pytest.raises(TargetRefusedError):
        sftp_rules(settings).check_target("sftp://bob@sftp.partner.example/in")

"""``jobs create --channel s3|sftp`` (issue 15 items 3, 4): the ``key``/``path`` column
checked row by row, targets outside the allow-lists refused with exit 2 naming the
setting, and nothing created then."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.test_cli import TEMPLATES, create, job_count, show
from tests.support.cli_runner import Cli

pytestmark = pytest.mark.timeout(60)


def keyed(path: Path, column: str) -> Path:
    path.write_text(
        f"{column},name,account,period,balance,currency\n"
        "customers/ann,Ann,DE0012345678,2024,1.00,EUR\n"
        "../../etc/cron.d/x,Bob,DE01,2024,0,EUR\n"
        "/abs/path,Cy,DE02,2024,0,EUR\n",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def drops_env(sqlite_url: str, monkeypatch: pytest.MonkeyPatch, cli: Cli) -> None:
    monkeypatch.setenv("DELIVERY_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("DELIVERY_DROP_S3_BUCKETS", "statements-drop")
    monkeypatch.setenv("DELIVERY_DROP_SFTP_HOSTS", "sftp.partner.example")
    assert cli("db", "upgrade").code == 0
    assert cli("templates", "push", str(TEMPLATES)).code == 0


@pytest.mark.usefixtures("drops_env")
@pytest.mark.parametrize(
    ("channel", "column", "target", "normalised"),
    [
        ("s3", "key", "s3://statements-drop/2024", "s3://statements-drop/2024/"),
        (
            "sftp",
            "path",
            "sftp://bank@sftp.partner.example/in",
            "sftp://bank@sftp.partner.example:22/in",
        ),
    ],
)
def test_a_drop_job_reads_its_column_and_refuses_bad_keys_by_row(
    cli: Cli, tmp_path: Path, channel: str, column: str, target: str, normalised: str
) -> None:
    recipients = keyed(tmp_path / "r.csv", column)
    result = create(cli, recipients, "--channel", channel, "--target", target)

    assert result.code == 0, result.err
    assert f"line 3: drop {column} has a '.' or '..' segment" in result.err
    assert f"line 4: drop {column} must be relative" in result.err
    assert "cron" not in result.err  # the refused value is never quoted
    job = show(cli, int(result.out.split()[1]))["job"]
    assert (job["channel"], job["target"], job["total_count"]) == (channel, normalised, 1)


@pytest.mark.usefixtures("drops_env")
@pytest.mark.parametrize(
    ("channel", "target", "named"),
    [
        ("s3", "s3://someone-elses-bucket/x/", "DELIVERY_DROP_S3_BUCKETS"),
        ("s3", None, "needs --target"),
        ("sftp", "sftp://bank@evil.example/in", "DELIVERY_DROP_SFTP_HOSTS"),
        ("sftp", "sftp://bank:secret@sftp.partner.example/in", "DELIVERY_SFTP_PASSWORD"),
        ("sftp", "sftp://bank@sftp.partner.example/../etc", "'..'"),
    ],
)
def test_a_target_outside_the_settings_exits_2_and_creates_nothing(
    cli: Cli, tmp_path: Path, channel: str, target: str | None, named: str
) -> None:
    extra = ["--channel", channel] + (["--target", target] if target else [])
    result = create(cli, keyed(tmp_path / "r.csv", "key" if channel == "s3" else "path"), *extra)

    assert result.code == 2
    assert named in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert "secret" not in result.err.replace("DELIVERY_SFTP_PASSWORD", "")
    assert job_count(cli) == 0

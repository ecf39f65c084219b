"""``jobs create --channel/--target`` (issue 15): the channel's recipient column, targets
refused with exit 2 naming the setting, the webhook job's secret shown once, and the
channel in ``jobs show``/``jobs list``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.test_cli import TEMPLATES, create, show
from tests.support.cli_runner import Cli

pytestmark = pytest.mark.timeout(60)
KEY = "s" * 40


def refs(path: Path) -> Path:
    path.write_text(
        "ref,name,account,period,balance,currency\n"
        "customer-1,Ann,DE0012345678,2024,1.00,EUR\n"
        "\n"
        '"bad\x07ref",Bob,DE01,2024,0,EUR\n',
        encoding="utf-8",
    )
    return path


@pytest.fixture
def templates(sqlite_url: str, monkeypatch: pytest.MonkeyPatch, cli: Cli) -> None:
    monkeypatch.setenv("DELIVERY_DATABASE_URL", sqlite_url)
    assert cli("db", "upgrade").code == 0
    assert cli("templates", "push", str(TEMPLATES)).code == 0


@pytest.fixture
def webhook_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DELIVERY_WEBHOOK_HOSTS", "hooks.example")
    monkeypatch.setenv("DELIVERY_WEBHOOK_SECRET", KEY)


@pytest.mark.usefixtures("templates", "webhook_env")
def test_a_webhook_job_reads_refs_and_prints_its_secret(cli: Cli, tmp_path: Path) -> None:
    from delivery_server.adapters.channels.webhook import job_secret

    target = "https://hooks.example/delivery"
    result = create(cli, refs(tmp_path / "r.csv"), "--channel", "webhook", "--target", target)
    assert result.code == 0, result.err
    assert "line 4: ref contains control characters" in result.err
    job_id = int(result.out.split()[1])
    assert result.out.splitlines()[-1] == job_secret(KEY.encode(), job_id)
    job = show(cli, job_id)["job"]
    assert (job["channel"], job["target"], job["total_count"]) == ("webhook", target, 1)
    listed = cli("jobs", "list")
    assert "webhook" in listed.out


@pytest.mark.usefixtures("templates", "webhook_env")
@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (("--channel", "webhook", "--target", "https://evil.example/x"), "DELIVERY_WEBHOOK_HOSTS"),
        (("--channel", "webhook"), "DELIVERY_WEBHOOK_HOSTS"),
        (("--channel", "webhook", "--target", "http://hooks.example/x"), "https://"),
        (("--target", "https://hooks.example/x"), "an email job takes no target"),
    ],
)
def test_targets_the_settings_do_not_allow_exit_2_naming_why(
    cli: Cli, tmp_path: Path, extra: tuple[str, ...], named: str
) -> None:
    result = create(cli, refs(tmp_path / "r.csv"), *extra)
    assert result.code == 2
    assert named in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert cli("jobs", "list", "--json").json() == []  # nothing written


@pytest.mark.usefixtures("templates")
def test_a_webhook_job_without_the_signing_key_is_refused(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DELIVERY_WEBHOOK_HOSTS", "hooks.example")
    result = create(
        cli, refs(tmp_path / "r.csv"), "--channel", "webhook", "--target", "https://hooks.example/x"
    )
    assert (result.code, "DELIVERY_WEBHOOK_SECRET" in result.err) == (2, True)


def phones(path: Path) -> Path:
    path.write_text("phone,name\n+14155550100,Ann\n", encoding="utf-8")
    return path


@pytest.mark.usefixtures("templates")
def test_an_sms_job_keeps_its_own_cap_on_segments(cli: Cli, tmp_path: Path) -> None:
    result = create(cli, phones(tmp_path / "p.csv"), "--channel", "sms", "--max-segments", "2")
    assert result.code == 0, result.err
    job = show(cli, int(result.out.split()[1]))["job"]
    assert (job["channel"], job["max_segments"]) == ("sms", 2)
    plain = create(cli, phones(tmp_path / "q.csv"), "--channel", "sms")
    assert show(cli, int(plain.out.split()[1]))["job"]["max_segments"] is None  # the setting's


@pytest.mark.usefixtures("templates")
@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (("--max-segments", "2"), "--max-segments: only sms jobs"),
        (("--channel", "sms", "--max-segments", "13"), "--max-segments"),
        (("--channel", "sms", "--max-segments", "0"), "--max-segments"),
    ],
)
def test_a_cap_on_segments_outside_an_sms_job_or_1_to_12_exits_2(
    cli: Cli, tmp_path: Path, extra: tuple[str, ...], named: str
) -> None:
    result = create(cli, phones(tmp_path / "p.csv"), *extra)
    assert result.code == 2
    assert named in result.err
    assert cli("jobs", "list", "--json").json() == []  # nothing written

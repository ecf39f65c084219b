from pathlib import Path

import pytest

from delivery_server.cli import main
from delivery_server.errors import ConfigError
from delivery_server.settings import load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("DELIVERY_"):
            monkeypatch.delenv(key)


def test_defaults_are_the_embedded_mode() -> None:
    settings = load_settings()
    assert (settings.queue, settings.sender, settings.max_attempts) == ("local", "outbox", 3)
    assert settings.database_url.get_secret_value().startswith("sqlite:///")
    assert (settings.http_host, settings.http_port) == ("127.0.0.1", 8080)


def test_environment_wins_over_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "c.toml"
    config.write_text("concurrency = 7\npoll_interval = 3.0\n")
    monkeypatch.setenv("DELIVERY_CONCURRENCY", "9")
    settings = load_settings(config)
    assert settings.concurrency == 9
    assert settings.poll_interval == 3.0


def test_unknown_file_keys_are_errors(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("concurrenc = 7\n")
    with pytest.raises(ConfigError, match="concurrenc"):
        load_settings(config)


def test_unknown_environment_settings_are_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DELIVERY_CONCURENCY", "9")
    with pytest.raises(ConfigError, match="DELIVERY_CONCURENCY"):
        load_settings()


@pytest.mark.parametrize(
    ("name", "value", "named"),
    [
        ("DELIVERY_QUEUE", "kafka", "DELIVERY_QUEUE"),
        ("DELIVERY_CONCURRENCY", "0", "DELIVERY_CONCURRENCY"),
        ("DELIVERY_DATABASE_URL", "postgres://x", "DELIVERY_DATABASE_URL"),
        ("DELIVERY_HTTP_PORT", "http", "DELIVERY_HTTP_PORT"),
    ],
)
def test_bad_values_name_the_setting(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, named: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert named in str(info.value)
    assert "\n" not in str(info.value)


def test_sqs_needs_a_queue_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DELIVERY_QUEUE", "sqs")
    with pytest.raises(ConfigError, match="DELIVERY_SQS_QUEUE_URL"):
        load_settings()


def test_secrets_are_not_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DELIVERY_DATABASE_URL", "mysql://u:hunter2@db:3306/x")
    assert "hunter2" not in repr(load_settings())


def test_a_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_settings(tmp_path / "missing.toml")


def test_shutdown_defaults_fit_in_the_stop_timeout() -> None:
    settings = load_settings()
    assert (settings.shutdown_grace, settings.cancel_deadline, settings.stop_timeout) == (
        25.0,
        5.0,
        30.0,
    )


@pytest.mark.parametrize(
    ("env", "named"),
    [
        (
            {"DELIVERY_SHUTDOWN_GRACE": "26"},
            ("DELIVERY_SHUTDOWN_GRACE", "DELIVERY_CANCEL_DEADLINE", "DELIVERY_STOP_TIMEOUT"),
        ),
        (
            {"DELIVERY_CANCEL_DEADLINE": "10"},
            ("DELIVERY_SHUTDOWN_GRACE", "DELIVERY_CANCEL_DEADLINE", "DELIVERY_STOP_TIMEOUT"),
        ),
        (
            {"DELIVERY_STOP_TIMEOUT": "20"},
            ("DELIVERY_SHUTDOWN_GRACE", "DELIVERY_CANCEL_DEADLINE", "DELIVERY_STOP_TIMEOUT"),
        ),
        (
            {
                "DELIVERY_QUEUE": "sqs",
                "DELIVERY_SQS_QUEUE_URL": "https://q",
                "DELIVERY_SHUTDOWN_GRACE": "20",
            },
            ("DELIVERY_RECEIVE_WAIT", "DELIVERY_SHUTDOWN_GRACE"),
        ),
        ({"DELIVERY_CANCEL_DEADLINE": "0"}, ("DELIVERY_CANCEL_DEADLINE",)),
    ],
)
def test_shutdown_stages_that_do_not_fit_are_errors(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: tuple[str, ...]
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert "\n" not in message
    for name in named:
        assert name in message


def test_shutdown_stages_may_use_a_longer_stop_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DELIVERY_STOP_TIMEOUT", "120")
    monkeypatch.setenv("DELIVERY_SHUTDOWN_GRACE", "100")
    monkeypatch.setenv("DELIVERY_CANCEL_DEADLINE", "20")
    settings = load_settings()
    assert settings.shutdown_grace + settings.cancel_deadline == settings.stop_timeout


def test_an_in_process_receive_need_not_fit_in_the_grace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The local queue is not long-polled with receive_wait; cutting its receive loses nothing.
    monkeypatch.setenv("DELIVERY_SHUTDOWN_GRACE", "0.5")
    assert load_settings().receive_wait > load_settings().shutdown_grace


def test_a_bad_combination_stops_the_server_with_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DELIVERY_SHUTDOWN_GRACE", "28")
    assert main(["run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "DELIVERY_SHUTDOWN_GRACE" in err
    assert "DELIVERY_STOP_TIMEOUT" in err


def test_tracking_defaults_sit_below_ses_review_thresholds() -> None:
    settings = load_settings()
    assert (settings.brake_bounce_rate, settings.brake_complaint_rate) == (0.05, 0.001)
    assert settings.brake_min_sends == 200
    assert settings.events_queue_url is None
    assert settings.api_port is None
    assert settings.topic_arns == frozenset()  # POST /ses/events refuses every message


def test_sns_topics_are_a_comma_separated_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "DELIVERY_SNS_TOPIC_ARNS", " arn:aws:sns:eu-west-1:1:a , arn:aws:sns:eu-west-1:1:b,"
    )
    assert load_settings().topic_arns == {"arn:aws:sns:eu-west-1:1:a", "arn:aws:sns:eu-west-1:1:b"}


@pytest.mark.parametrize(
    ("url", "accepted"),
    [
        ("https://mail.bank.example", True),
        ("http://127.0.0.1:8081", True),
        ("http://localhost:8081", True),
        ("http://mail.bank.example", False),  # unsubscribe links travel to the internet
        ("ftp://mail.bank.example", False),
        ("mail.bank.example", False),
    ],
)
def test_the_public_url_is_https_except_on_loopback(
    monkeypatch: pytest.MonkeyPatch, url: str, accepted: bool
) -> None:
    monkeypatch.setenv("DELIVERY_PUBLIC_URL", url)
    if accepted:
        assert load_settings().public_url == url
    else:
        with pytest.raises(ConfigError, match="DELIVERY_PUBLIC_URL: must be an https://"):
            load_settings()


def test_a_short_unsubscribe_secret_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DELIVERY_UNSUBSCRIBE_SECRET", "short")
    with pytest.raises(ConfigError, match="DELIVERY_UNSUBSCRIBE_SECRET: must be at least 32"):
        load_settings()
    monkeypatch.setenv("DELIVERY_UNSUBSCRIBE_SECRET", "k" * 32)
    assert load_settings().unsubscribe_secret is not None


def test_brake_rates_are_fractions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DELIVERY_BRAKE_BOUNCE_RATE", "5")
    with pytest.raises(ConfigError, match="DELIVERY_BRAKE_BOUNCE_RATE"):
        load_settings()

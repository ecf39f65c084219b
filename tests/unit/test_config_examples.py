"""The example configuration files under config/ load as they are."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from delivery_server.settings import ENV_PREFIX, load_settings

CONFIG = Path(__file__).resolve().parents[2] / "config"


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in os.environ:
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


def test_embedded_example() -> None:
    settings = load_settings(CONFIG / "embedded.toml")
    assert (settings.queue, settings.sender) == ("local", "outbox")
    assert settings.database_url.get_secret_value().startswith("sqlite:///")
    assert settings.shutdown_grace + settings.cancel_deadline <= settings.stop_timeout


def test_aws_example() -> None:
    settings = load_settings(CONFIG / "aws.toml")
    assert (settings.queue, settings.sender) == ("sqs", "ses")
    assert settings.database_url.get_secret_value().startswith("mysql://")
    assert settings.s3_buckets == frozenset({"bank-statements"})
    # ECS's default stopTimeout: the shutdown stages end before its SIGKILL.
    assert settings.stop_timeout == 30
    assert settings.shutdown_grace + settings.cancel_deadline <= settings.stop_timeout
    assert settings.receive_wait < settings.shutdown_grace

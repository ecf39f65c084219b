"""One settings model (DESIGN §7): environment first, then an optional TOML file.

Nothing here is read at import time; ``load_settings`` is called by the CLI, once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from delivery_server.errors import ConfigError

ENV_PREFIX = "DELIVERY_"


class Settings(BaseSettings):
    """Every setting of the server; ``DELIVERY_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", case_sensitive=False, frozen=True
    )

    database_url: SecretStr = SecretStr("sqlite:///delivery.db")
    queue: Literal["sqs", "local"] = "local"
    sqs_queue_url: str | None = None
    aws_endpoint_url: str | None = None
    # How SES and SQS calls are made: "direct" posts SendEmail and the SQS calls SigV4-signed
    # without the aiobotocore client's per-call pipeline, which costs more CPU than the call
    # itself (adapters/aws/direct.py; docs/benchmarks.md has the figures); "sdk" makes every
    # call through the client.
    aws_http: Literal["direct", "sdk"] = "direct"
    sender: Literal["ses", "smtp", "outbox"] = "outbox"
    smtp_url: SecretStr | None = None
    smtp_verify_tls: bool = True
    outbox_dir: Path = Path("outbox")
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)
    # 64 in-flight sends per process: an SES call mostly waits on the network, and a
    # receive waits for a full batch of 10 free slots (one claim transaction for ten), so
    # 64 keep 54 or more in flight: a 2-vCPU task stays busy (docs/benchmarks.md has the
    # figures for 32 and 64).
    concurrency: int = Field(default=64, ge=1, le=1000)
    max_attempts: int = Field(default=3, ge=1, le=100)
    poll_interval: float = Field(default=1.0, gt=0, le=3600)
    log_format: Literal["json", "console"] | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    attachments_dir: Path | None = None
    attachments_s3_buckets: str = ""
    retry_base_delay: float = Field(default=30.0, ge=0, le=3600)
    # Shutdown (STYLE rule 5): after SIGTERM, in-flight work may finish within the grace;
    # what is left is cancelled and gets the cancel deadline to hand its messages back.
    # Both together fit in the stop timeout, after which ECS sends SIGKILL (30 s unless
    # the task definition's stopTimeout says otherwise).
    shutdown_grace: float = Field(default=25.0, ge=0, le=3600)
    cancel_deadline: float = Field(default=5.0, gt=0, le=3600)
    stop_timeout: float = Field(default=30.0, gt=0, le=7200)
    lease_seconds: float = Field(default=120.0, gt=0, le=43200)
    send_timeout: float = Field(default=30.0, gt=0, le=600)
    # SQS long poll; a receive under way at shutdown may finish (and hand its messages
    # back) within the shutdown grace, so it must be shorter than DELIVERY_SHUTDOWN_GRACE.
    receive_wait: float = Field(default=20.0, ge=0, le=20)
    publish_page_size: int = Field(default=500, ge=10, le=10000)
    # A queued email untouched this long probably lost its message (purged queue, DLQ):
    # the reconciler republishes it. Duplicate messages are harmless (claims are conditional).
    requeue_after: float = Field(default=900.0, ge=1, le=86400)
    reconcile_interval: float = Field(default=30.0, gt=0, le=3600)
    max_rendered_bytes: int = Field(default=2_000_000, ge=1024)
    # The fleet's total (fleet.py divides it among the live sending processes); unset,
    # the sender says (SES: the account's MaxSendRate; SMTP and the outbox: no limit).
    max_send_rate: float | None = Field(default=None, gt=0)
    db_pool_size: int = Field(default=10, ge=1, le=200)
    # Tracking (DESIGN §2, §5): SES events come back on this queue; unset turns it off
    # (except in embedded mode, where the outbox reports its deliveries in-process).
    events_queue_url: str | None = None
    ses_configuration_set: str | None = None
    # The reputation brake pauses a job whose rates reach these, below SES's own review
    # thresholds (5 % bounces, 0.1 % complaints), once it has min_sends sends to judge.
    brake_bounce_rate: float = Field(default=0.05, gt=0, le=1)
    brake_complaint_rate: float = Field(default=0.001, gt=0, le=1)
    brake_min_sends: int = Field(default=200, ge=1)
    # The API listener (POST /ses/events, /unsubscribe, later the API): off without a port.
    api_host: str = "127.0.0.1"
    api_port: int | None = Field(default=None, ge=0, le=65535)
    sns_topic_arns: str = ""
    # Tests only: the origin (scheme://host:port) SNS certificates and confirmation links
    # are taken from instead of https://sns.<region>.amazonaws.com.
    sns_cert_origin: str | None = None
    public_url: str | None = None
    unsubscribe_secret: SecretStr | None = None
    # An upstream system's own job and email tables, mapped onto ours (DESIGN §11): a
    # TOML file, read and checked against the database when the store opens.
    schema_map: Path | None = None
    # Finished jobs' personal data (addresses, variables, attachment refs) is erased this
    # many days after they finished (``db purge``, and the publishers' daily pass).
    retention_days: int = Field(default=90, ge=1, le=36_500)
    # Channels (DESIGN §12): where a job's --target may point. Comma-separated; empty
    # refuses every target of that channel at ``jobs create`` and again at the send.
    drop_s3_buckets: str = ""
    drop_sftp_hosts: str = ""
    webhook_hosts: str = ""
    # Tests and laptops only: webhook hosts resolving to loopback, private, link-local
    # (cloud metadata) or other non-public addresses are refused unless this is on.
    webhook_allow_private: bool = False
    # The key each webhook job's signing secret is derived from (HMAC per job id).
    webhook_secret: SecretStr | None = None
    # SMS through SNS (adapters/aws/sns_sms.py): the sender id shown where the country
    # supports one (1-11 letters and digits, at least one letter), and the most segments
    # (billed messages) one SMS may take: a longer body fails that recipient.
    sms_sender_id: str | None = Field(
        default=None, max_length=11, pattern=r"^[A-Za-z0-9]*[A-Za-z][A-Za-z0-9]*$"
    )
    sms_max_segments: int = Field(default=4, ge=1, le=12)
    # S3 drops (adapters/aws/s3_drop.py): every object is encrypted at rest, with S3's own
    # keys (AES256) or with KMS (aws:kms; the key id, ARN or alias, else the AWS-managed one).
    drop_s3_sse: Literal["AES256", "aws:kms"] = "AES256"
    drop_s3_kms_key_id: str | None = None
    # SFTP drops (adapters/sftp_drop.py): host keys are always verified, against this
    # OpenSSH known_hosts file (unset: ~/.ssh/known_hosts); the login is the target's user
    # with the key (its text, as a secrets manager injects it) and/or the password.
    sftp_known_hosts: Path | None = None
    sftp_private_key: SecretStr | None = None
    sftp_private_key_passphrase: SecretStr | None = None
    sftp_password: SecretStr | None = None
    # Drops uploading at once per process, and at most as many open SSH connections.
    sftp_max_uploads: int = Field(default=8, ge=1, le=100)

    @model_validator(mode="after")
    def _check_combinations(self) -> Settings:
        if self.queue == "sqs" and not self.sqs_queue_url:
            raise ValueError("sqs_queue_url: required when DELIVERY_QUEUE=sqs")
        if self.sender == "smtp" and self.smtp_url is None:
            raise ValueError("smtp_url: required when DELIVERY_SENDER=smtp")
        url = self.database_url.get_secret_value()
        if not url.startswith(
            ("mysql://", "mysql+aiomysql://", "sqlite://", "sqlite+aiosqlite://")
        ):
            raise ValueError("database_url: must start with mysql:// or sqlite:///")
        if self.smtp_url is not None and not self.smtp_url.get_secret_value().startswith(
            ("smtp://", "smtps://")
        ):
            raise ValueError("smtp_url: must start with smtp:// or smtps://")
        self._check_shutdown()
        self._check_unsubscribe()
        self._check_drops()
        return self

    def _check_unsubscribe(self) -> None:
        """One-click links need a base URL that mail clients may POST to, and a key."""
        if self.public_url is not None:
            url = urlsplit(self.public_url)
            loopback = url.hostname in ("127.0.0.1", "localhost", "::1")
            if not url.hostname or not (
                url.scheme == "https" or (url.scheme == "http" and loopback)
            ):
                raise ValueError(
                    "public_url: must be an https:// URL (plain http only for a loopback host)"
                )
        secret = self.unsubscribe_secret
        if secret is not None and len(secret.get_secret_value().encode()) < 32:
            raise ValueError("unsubscribe_secret: must be at least 32 bytes (a random key)")
        hook = self.webhook_secret
        if hook is not None and len(hook.get_secret_value().encode()) < 32:
            raise ValueError("webhook_secret: must be at least 32 bytes (a random key)")

    def _check_drops(self) -> None:
        if self.drop_s3_kms_key_id is not None and self.drop_s3_sse != "aws:kms":
            raise ValueError("drop_s3_kms_key_id: only with DELIVERY_DROP_S3_SSE=aws:kms")

    @property
    def topic_arns(self) -> frozenset[str]:
        """The SNS topics ``POST /ses/events`` accepts (none: it refuses every message)."""
        return frozenset(a.strip() for a in self.sns_topic_arns.split(",") if a.strip())

    def _check_shutdown(self) -> None:
        """The shutdown stages fit in the time the orchestrator gives before SIGKILL."""
        # Only an SQS receive is let finish: an in-process one loses nothing when cut.
        if self.queue == "sqs" and self.receive_wait >= self.shutdown_grace:
            raise ValueError(
                f"receive_wait: {self.receive_wait:g} s must be shorter than"
                f" DELIVERY_SHUTDOWN_GRACE ({self.shutdown_grace:g} s), so that a receive"
                " under way at shutdown finishes within the grace"
            )
        if self.shutdown_grace + self.cancel_deadline > self.stop_timeout:
            raise ValueError(
                f"shutdown_grace: {self.shutdown_grace:g} s plus DELIVERY_CANCEL_DEADLINE"
                f" ({self.cancel_deadline:g} s) exceeds DELIVERY_STOP_TIMEOUT"
                f" ({self.stop_timeout:g} s), after which the process is killed"
            )

    @property
    def drop_s3_bucket_set(self) -> frozenset[str]:
        """Buckets an ``s3`` job's ``--target`` may name."""
        return _names(self.drop_s3_buckets)

    @property
    def drop_sftp_host_set(self) -> frozenset[str]:
        """Hosts (lower case, ``host`` or ``host:port``) an ``sftp`` job may name."""
        return frozenset(name.lower() for name in _names(self.drop_sftp_hosts))

    @property
    def webhook_host_set(self) -> frozenset[str]:
        """Hosts (lower case) a ``webhook`` job's URL may name."""
        return frozenset(name.lower() for name in _names(self.webhook_hosts))

    @property
    def s3_buckets(self) -> frozenset[str]:
        """Buckets that ``s3:`` attachments may be read from."""
        return frozenset(b.strip() for b in self.attachments_s3_buckets.split(",") if b.strip())


def _names(listed: str) -> frozenset[str]:
    """A comma-separated setting as a set of its non-empty, stripped entries."""
    return frozenset(name.strip() for name in listed.split(",") if name.strip())


def _with_file(config_file: Path) -> type[Settings]:
    """A Settings class whose lowest-priority source is the TOML file."""

    class FileSettings(Settings):
        model_config = SettingsConfigDict(toml_file=config_file)

        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    return FileSettings


def _describe(exc: ValidationError) -> str:
    """One line naming the first bad setting, as an operator would set it."""
    err = exc.errors()[0]
    msg = str(err.get("msg", "invalid"))
    name = str(err["loc"][0]) if err.get("loc") else ""
    if not name and ": " in msg:  # model-level checks say "field: why"
        name, _, msg = msg.removeprefix("Value error, ").partition(": ")
    if not name:
        return f"configuration error: {msg}"
    if err.get("type") == "extra_forbidden":
        return f"configuration error: unknown setting {name!r} in the config file"
    return f"configuration error: {ENV_PREFIX}{name.upper()}: {msg}"


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings; raise ``ConfigError`` with one line naming a bad setting."""
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    unknown = sorted(
        k for k in os.environ if k.upper().startswith(ENV_PREFIX) and k.upper() not in known
    )
    if unknown:
        raise ConfigError(f"configuration error: unknown setting {unknown[0]}")
    cls: type[Settings] = Settings
    if config_file is not None:
        if not config_file.is_file():
            raise ConfigError(f"configuration error: --config {config_file}: no such file")
        cls = _with_file(config_file)
    try:
        return cls(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from exc
    except ValueError as exc:  # malformed TOML
        raise ConfigError(f"configuration error: {config_file}: {exc}") from exc

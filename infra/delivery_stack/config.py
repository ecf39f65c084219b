"""A stage's settings (staging, production) from the CDK context ``delivery:stages``.

cdk.json holds one entry per stage; ``-c delivery:stages=...`` or a cdk.context.json may
override it. Nothing here calls AWS: an existing VPC is described by its attributes
(id, CIDR, subnets, route tables) instead of ``Vpc.from_lookup``, so a synth needs no
credentials. A bad entry fails the synth with the stage and the key in the message, as
the server's own settings do (pydantic, unknown keys refused).
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

CONTEXT_KEY = "delivery:stages"
# What CloudWatch Logs accepts as a retention.
LOG_RETENTION_DAYS = frozenset(
    {1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557}
    | {2922, 3288, 3653}
)
_ADDRESS = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class _Camel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class ExistingVpc(_Camel):
    """A VPC the stack joins instead of creating one (its private subnets host the tasks
    and the interface endpoints; its route tables get the S3 gateway endpoint)."""

    id: str = Field(pattern=r"^vpc-[0-9a-f]+$")
    cidr: str = Field(pattern=r"^\d+\.\d+\.\d+\.\d+/\d+$")
    private_subnet_ids: tuple[str, ...] = Field(min_length=2)
    private_subnet_route_table_ids: tuple[str, ...] = Field(min_length=2)


class StageConfig(_Camel):
    """What differs between staging and production; the rest is the stack's own."""

    name: str = Field(pattern=r"^[a-z][a-z0-9-]{1,20}$")
    account: str = Field(pattern=r"^\d{12}$")
    region: str = Field(pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")
    availability_zones: tuple[str, ...] = Field(min_length=2, max_length=3)
    image_repository: str = Field(min_length=2)
    database_url_secret_name: str = Field(min_length=1)
    # The SES identities (domains or addresses) the tasks may send as, and the exact From
    # addresses: the IAM condition ses:FromAddress allows these and nothing else.
    ses_identities: tuple[str, ...] = Field(min_length=1)
    senders: tuple[str, ...] = Field(min_length=1)
    attachment_buckets: tuple[str, ...] = ()
    min_tasks: int = Field(ge=0, le=100)
    max_tasks: int = Field(ge=1, le=200)
    # Visible work-queue messages one task should have ahead of it (target tracking).
    backlog_per_task: int = Field(ge=10, le=1_000_000)
    cpu: int = 1024
    memory_mib: int = Field(alias="memoryMiB", default=2048)
    log_retention_days: int = 30
    oldest_message_alarm_minutes: int = Field(ge=5, le=24 * 60)
    vpc: ExistingVpc | None = None

    @field_validator("senders")
    @classmethod
    def _addresses(cls, senders: tuple[str, ...]) -> tuple[str, ...]:
        for sender in senders:
            if not _ADDRESS.match(sender):
                raise ValueError(f"{sender!r} is not an email address")
        return senders

    @field_validator("log_retention_days")
    @classmethod
    def _retention(cls, days: int) -> int:
        if days not in LOG_RETENTION_DAYS:
            raise ValueError(f"{days} is not a CloudWatch retention: {sorted(LOG_RETENTION_DAYS)}")
        return days

    @model_validator(mode="after")
    def _task_range(self) -> StageConfig:
        if self.max_tasks < max(self.min_tasks, 1):
            raise ValueError("maxTasks must be at least minTasks and at least 1")
        return self


class StageConfigError(ValueError):
    """The context names no such stage, or the stage's entry is invalid."""


def stage_config(stages: object, name: str) -> StageConfig:
    """The named stage's settings, or ``StageConfigError`` naming the stage and the key."""
    if not isinstance(stages, dict) or name not in stages:
        known = sorted(stages) if isinstance(stages, dict) else []
        raise StageConfigError(f"{CONTEXT_KEY}: no stage {name!r} (known: {known})")
    try:
        return StageConfig.model_validate({"name": name, **stages[name]})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = "".join(f".{part}" for part in first["loc"])
        why = str(first["msg"]).removeprefix("Value error, ")
        raise StageConfigError(f"{CONTEXT_KEY}.{name}{where}: {why}") from None

"""A stage's entry in cdk.json: a bad one fails the synth naming the stage and the key."""

from __future__ import annotations

from typing import Any

import pytest

from infra.delivery_stack.budget import ShutdownBudget, default_budget
from infra.delivery_stack.config import CONTEXT_KEY, StageConfigError, stage_config
from tests.infra.conftest import cdk_context


def staging(**changes: Any) -> dict[str, Any]:
    stages: dict[str, Any] = cdk_context()[CONTEXT_KEY]
    return {"staging": {**stages["staging"], **changes}}


def test_the_shipped_stages_are_valid() -> None:
    stages = cdk_context()[CONTEXT_KEY]
    assert {stage_config(stages, name).name for name in stages} == {"staging", "production"}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"sendres": ["a@b.example"]}, "delivery:stages.staging.sendres: Extra inputs"),
        ({"senders": ["not an address"]}, "delivery:stages.staging.senders"),
        ({"logRetentionDays": 31}, "delivery:stages.staging.logRetentionDays"),
        ({"minTasks": 3, "maxTasks": 2}, "delivery:stages.staging: maxTasks must be"),
        ({"account": "12345"}, "delivery:stages.staging.account"),
    ],
)
def test_a_bad_entry_names_the_stage_and_the_key(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(StageConfigError, match="^" + message.replace(".", r"\.")):
        stage_config(staging(**changes), "staging")


def test_an_unknown_stage_is_refused_with_the_known_ones() -> None:
    with pytest.raises(StageConfigError, match=r"no stage 'prod' \(known: \['staging'\]\)"):
        stage_config(staging(), "prod")


def test_the_stop_timeout_is_whole_seconds_within_fargate_s_limit() -> None:
    assert default_budget().stop_timeout == 30
    assert ShutdownBudget(25.5, 5).stop_timeout == 31
    with pytest.raises(ValueError, match="exceed Fargate's 120 s"):
        _ = ShutdownBudget(110, 15).stop_timeout

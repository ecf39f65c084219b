"""The CDK app built in-process from infra/cdk.json, once per session (a synth starts the
jsii node runtime and takes seconds), with the cdk-nag checks that make infra-synth runs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App
from aws_cdk.assertions import Template

from infra.delivery_stack.config import CONTEXT_KEY, StageConfig, stage_config
from infra.delivery_stack.stack import DeliveryStack
from infra.delivery_stack.synth import build_app

ROOT = Path(__file__).resolve().parents[2]
CDK_JSON = ROOT / "infra" / "cdk.json"


def cdk_context() -> dict[str, Any]:
    """The context the CDK CLI gives the app (cdk.json's ``context``)."""
    context: dict[str, Any] = json.loads(CDK_JSON.read_text())["context"]
    return context


@dataclass(frozen=True)
class Synthesized:
    stage: StageConfig
    stack: DeliveryStack
    template: Template

    def resources(self, kind: str) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = self.template.find_resources(kind)
        return found


@pytest.fixture(scope="session")
def synthesized(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Synthesized]:
    """Every stage of cdk.json, synthesized with the AwsSolutions checks (a finding not
    acknowledged raises here, as it fails make infra-synth)."""
    context = cdk_context()
    app = App(context=context, outdir=str(tmp_path_factory.mktemp("cdk.out")))
    stacks = build_app(app)
    app.synth()
    stages = context[CONTEXT_KEY]
    return {
        stack.stack_name.removeprefix("delivery-"): Synthesized(
            stage_config(stages, stack.stack_name.removeprefix("delivery-")),
            stack,
            Template.from_stack(stack),
        )
        for stack in stacks
    }


@pytest.fixture(params=["staging", "production"])
def stage(request: pytest.FixtureRequest, synthesized: dict[str, Synthesized]) -> Synthesized:
    """Each stage in turn (staging: a new VPC, scale to zero; production: an existing VPC)."""
    return synthesized[str(request.param)]

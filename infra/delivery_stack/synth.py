"""Stacks from the context, with the AwsSolutions checks applied."""

from __future__ import annotations

from aws_cdk import App, Validations
from cdk_nag import AwsSolutionsChecks

from .config import CONTEXT_KEY, stage_config
from .nag import suppress_accepted_findings
from .stack import DeliveryStack


def stack_name(stage: str) -> str:
    return f"delivery-{stage}"


def build_app(app: App) -> list[DeliveryStack]:
    """One stack per stage (or only ``-c stage=NAME``), checked by cdk-nag."""
    stages = app.node.try_get_context(CONTEXT_KEY)
    wanted = app.node.try_get_context("stage")
    names = [wanted] if wanted else sorted(stages or {})
    stacks = []
    for name in names:
        stage = stage_config(stages, name)
        stack = DeliveryStack(app, stack_name(name), stage)
        suppress_accepted_findings(stack, stage)
        stacks.append(stack)
    # A finding not acknowledged (nag.py, with its reason) fails the synth; the accepted
    # ones are written into the template's metadata, where a reviewer reads them.
    Validations.of(app).add_plugins(
        AwsSolutionsChecks(app, verbose=True, write_suppressions_to_cloud_formation=True)
    )
    return stacks

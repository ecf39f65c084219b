"""Least privilege (issue 12): the policies the stack writes, and what happens when someone
widens one — both the AwsSolutions checks and these assertions refuse it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from aws_cdk import App
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk.assertions import Template

from infra.delivery_stack.config import CONTEXT_KEY, stage_config
from infra.delivery_stack.permissions import EVENTS_QUEUE_ACTIONS, WORK_QUEUE_ACTIONS
from infra.delivery_stack.stack import DeliveryStack
from infra.delivery_stack.synth import build_app
from tests.infra.conftest import Synthesized, cdk_context
from tests.infra.policies import SEND_ACTIONS, least_privilege_breaches, statements

pytestmark = pytest.mark.timeout(300)


def task_role_statements(stage: Synthesized) -> dict[str, dict[str, object]]:
    return {
        str(s["Sid"]): s
        for policy, s in statements(stage.template)
        if policy.startswith("ServerTaskTaskRole")
    }


def test_no_policy_breaches_least_privilege(stage: Synthesized) -> None:
    assert least_privilege_breaches(stage.template) == []


def test_sends_are_allowed_only_from_the_stage_senders(stage: Synthesized) -> None:
    send = task_role_statements(stage)["SendAsTheStageSendersOnly"]
    assert set(send["Action"]) == SEND_ACTIONS  # type: ignore[arg-type]
    assert send["Condition"] == {"StringEquals": {"ses:FromAddress": list(stage.stage.senders)}}
    resources = str(send["Resource"])
    for identity in stage.stage.ses_identities:
        assert f":identity/{identity}" in resources
    assert ":configuration-set/" in resources


def test_queue_actions_name_the_two_queues_only(stage: Synthesized) -> None:
    found = task_role_statements(stage)
    assert found["WorkQueue"]["Action"] == list(WORK_QUEUE_ACTIONS)
    assert found["WorkQueue"]["Resource"] == {"Fn::GetAtt": [_queue(stage, "WorkQueue"), "Arn"]}
    assert found["EventsQueue"]["Action"] == list(EVENTS_QUEUE_ACTIONS)
    assert "sqs:SendMessage" not in EVENTS_QUEUE_ACTIONS, "only SNS writes the events queue"
    assert found["EventsQueue"]["Resource"] == {"Fn::GetAtt": [_queue(stage, "EventsQueue"), "Arn"]}
    buckets = [f":s3:::{b}/*" for b in stage.stage.attachment_buckets]
    assert all(b in str(found["ReadAttachments"]["Resource"]) for b in buckets)
    assert found["ReadAttachments"]["Action"] == "s3:GetObject"


def _queue(stage: Synthesized, prefix: str) -> str:
    (name,) = [
        k for k in stage.resources("AWS::SQS::Queue") if re.match(prefix + r"[0-9A-F]{8}$", k)
    ]
    return name


def _widened_stack(tmp_path: Path, *, nag: bool) -> tuple[App, DeliveryStack]:
    context = cdk_context()
    app = App(context={**context, "stage": "staging"}, outdir=str(tmp_path))
    if nag:
        (stack,) = build_app(app)
    else:
        stack = DeliveryStack(app, "widened", stage_config(context[CONTEXT_KEY], "staging"))
    task = stack.node.find_child("ServerTask")
    assert isinstance(task, ecs.FargateTaskDefinition)
    task.task_role.add_to_principal_policy(iam.PolicyStatement(actions=["ses:*"], resources=["*"]))
    return app, stack


def test_widening_to_ses_star_breaches_least_privilege(tmp_path: Path) -> None:
    _, stack = _widened_stack(tmp_path, nag=False)
    breaches = least_privilege_breaches(Template.from_stack(stack))
    assert any("wildcard action ses:*" in b for b in breaches), breaches
    assert any("Resource * for ['ses:*']" in b for b in breaches), breaches
    assert any("without ses:FromAddress" in b for b in breaches), breaches


def test_widening_to_ses_star_fails_the_awssolutions_checks(tmp_path: Path) -> None:
    app, _ = _widened_stack(tmp_path, nag=True)
    with pytest.raises(RuntimeError, match=r"[Vv]alidation"):
        app.synth()
    report = (tmp_path / "validation-report.json").read_text()
    assert "AwsSolutions-IAM5[Action::ses:*]" in report

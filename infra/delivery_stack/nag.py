"""The cdk-nag AwsSolutions findings (and one of CDK's own template checks) accepted on
purpose, each on the construct it is about and with the reason a reviewer would ask for.
Any other AwsSolutions finding fails the synth. The reasons are written into the
template's metadata (``cdk_nag``) too.
"""

from __future__ import annotations

from aws_cdk import Acknowledgment, Stack, Validations
from constructs import IConstruct

from .config import StageConfig

# The server is configured by environment variables (DESIGN §7, 12-factor): queue URLs,
# the configuration set, ports, the shutdown budget. None is a secret; the one that is
# (DELIVERY_DATABASE_URL) comes from Secrets Manager.
PLAIN_SETTINGS = (
    "The server's settings are environment variables by design (DESIGN §7): queue URLs,"
    " the SES configuration set, ports and shutdown timing, none of them secret. The"
    " database URL, the one secret, is injected from Secrets Manager."
)
# What the stack's own resources need that IAM only grants on "*".
ECR_LOGIN = (
    "ecr:GetAuthorizationToken has no resource type: IAM accepts only Resource '*'. The"
    " image pulls themselves are limited to the one repository."
)
SES_ACCOUNT = (
    "ses:GetAccount (the account's maximum send rate, which the fleet divides among its"
    " tasks) is an account-level action with no resource type: IAM accepts only '*'."
)
ATTACHMENT_OBJECTS = (
    "Attachments are any object of the configured attachment buckets"
    " (DELIVERY_ATTACHMENTS_S3_BUCKETS): s3:GetObject only, on those buckets only."
)
# CDK's own CloudFormation validation (cfn-lint's W3010) on a new VPC's subnets.
GIVEN_ZONES = (
    "The zones come from the stage's availabilityZones so that a synth makes no AWS call"
    " (a lookup would); each subnet is placed in one of them on purpose."
)


def _acknowledge(stack: Stack, path: str, rule: str, reason: str) -> None:
    target: IConstruct = stack
    for part in path.split("/"):
        target = target.node.find_child(part)
    Validations.of(target).acknowledge(Acknowledgment(id=f"AwsSolutions-{rule}", reason=reason))


def suppress_accepted_findings(stack: Stack, stage: StageConfig) -> None:
    """Acknowledge the accepted findings of one stage's stack."""
    for task in ("ServerTask", "DbUpgradeTask"):
        _acknowledge(stack, task, "ECS2", PLAIN_SETTINGS)
        _acknowledge(stack, f"{task}/ExecutionRole", "IAM5[Resource::*]", ECR_LOGIN)
    _acknowledge(stack, "ServerTask/TaskRole", "IAM5[Resource::*]", SES_ACCOUNT)
    if stage.vpc is None:
        vpc = stack.node.find_child("Vpc")
        Validations.of(vpc).acknowledge(
            Acknowledgment(id="CloudFormation-Validate::W3010", reason=GIVEN_ZONES)
        )
    for bucket in stage.attachment_buckets:
        objects = f"Resource::arn:<AWS::Partition>:s3:::{bucket}/*"
        _acknowledge(stack, "ServerTask/TaskRole", f"IAM5[{objects}]", ATTACHMENT_OBJECTS)

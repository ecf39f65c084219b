"""CloudWatch log groups with the stage's retention."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_logs as logs
from constructs import Construct

from .config import StageConfig


def log_group(scope: Construct, construct_id: str, stage: StageConfig) -> logs.LogGroup:
    """A log group kept ``logRetentionDays`` (validated against CloudWatch's allowed values
    by the stage config); kept when the stack is deleted, as evidence outlives a stack."""
    group = logs.LogGroup(scope, construct_id, removal_policy=RemovalPolicy.RETAIN)
    # The L2 takes an enum of the allowed values; the stage gives the number itself.
    cfn = group.node.default_child
    assert isinstance(cfn, logs.CfnLogGroup)
    cfn.retention_in_days = stage.log_retention_days
    return group

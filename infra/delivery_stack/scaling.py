"""Autoscaling on backlog per task: the work queue's visible messages divided by the
service's running tasks, kept near the stage's ``backlogPerTask``.

The L2 ``scale_to_track_custom_metric`` takes a single metric, not metric math, so the
policy is the L1 ``CfnScalingPolicy`` with ``TargetTrackingMetricDataQuery`` entries
(aws-cdk#20659). The running-task count comes from Container Insights (enabled on the
cluster). A stage with ``minTasks: 0`` scales to zero when the queue is empty; target
tracking cannot divide by zero tasks, so a step policy wakes the service (one task) when
messages are visible and no task runs.
"""

from __future__ import annotations

from aws_cdk import Duration, Stack
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from . import budget
from .config import StageConfig

Policy = appscaling.CfnScalingPolicy
SCALE_OUT_COOLDOWN = 60
BACKLOG_PER_TASK_EXPRESSION = "visible / tasks"


def scale_in_cooldown() -> int:
    """Seconds between scale-ins: a task told to stop may take its stop timeout to drain,
    and the messages it hands back or leaves leased reappear within the lease, so the next
    scale-in waits until the backlog it sees counts them again."""
    return max(300, budget.lease_seconds() + budget.default_budget().stop_timeout)


def build_scaling(
    scope: Construct,
    stage: StageConfig,
    cluster: ecs.Cluster,
    service: ecs.FargateService,
    work_queue: sqs.Queue,
) -> appscaling.ScalableTarget:
    target = appscaling.ScalableTarget(
        scope,
        "ScalableTarget",
        service_namespace=appscaling.ServiceNamespace.ECS,
        scalable_dimension="ecs:service:DesiredCount",
        resource_id=f"service/{cluster.cluster_name}/{service.service_name}",
        min_capacity=stage.min_tasks,
        max_capacity=stage.max_tasks,
        # ECS's service-linked role for Application Auto Scaling (created by AWS with the
        # first scalable target of the account): a role of our own would need its policy.
        role=iam.Role.from_role_arn(
            scope,
            "AutoScalingRole",
            Stack.of(scope).format_arn(
                service="iam",
                region="",
                resource="role",
                resource_name="aws-service-role/ecs.application-autoscaling.amazonaws.com/"
                "AWSServiceRoleForApplicationAutoScaling_ECSService",
            ),
        ),
    )
    visible = Policy.TargetTrackingMetricDataQueryProperty(
        id="visible",
        label="Visible messages in the work queue",
        metric_stat=Policy.TargetTrackingMetricStatProperty(
            metric=Policy.TargetTrackingMetricProperty(
                namespace="AWS/SQS",
                metric_name="ApproximateNumberOfMessagesVisible",
                dimensions=[_dimension("QueueName", work_queue.queue_name)],
            ),
            stat="Sum",
        ),
        return_data=False,
    )
    tasks = Policy.TargetTrackingMetricDataQueryProperty(
        id="tasks",
        label="Running tasks",
        metric_stat=Policy.TargetTrackingMetricStatProperty(
            metric=Policy.TargetTrackingMetricProperty(
                namespace="ECS/ContainerInsights",
                metric_name="RunningTaskCount",
                dimensions=[
                    _dimension("ClusterName", cluster.cluster_name),
                    _dimension("ServiceName", service.service_name),
                ],
            ),
            stat="Average",
        ),
        return_data=False,
    )
    backlog_per_task = Policy.TargetTrackingMetricDataQueryProperty(
        id="backlogPerTask",
        label="Backlog per task",
        expression=BACKLOG_PER_TASK_EXPRESSION,
        return_data=True,
    )
    Policy(
        scope,
        "BacklogPerTaskPolicy",
        policy_name=f"delivery-{stage.name}-backlog-per-task",
        policy_type="TargetTrackingScaling",
        scaling_target_id=target.scalable_target_id,
        target_tracking_scaling_policy_configuration=Policy.TargetTrackingScalingPolicyConfigurationProperty(
            target_value=float(stage.backlog_per_task),
            customized_metric_specification=Policy.CustomizedMetricSpecificationProperty(
                metrics=[visible, tasks, backlog_per_task]
            ),
            scale_in_cooldown=scale_in_cooldown(),
            scale_out_cooldown=SCALE_OUT_COOLDOWN,
        ),
    )
    if stage.min_tasks == 0:
        _wake_from_zero(scope, stage, target, cluster, service, work_queue)
    return target


def _wake_from_zero(
    scope: Construct,
    stage: StageConfig,
    target: appscaling.ScalableTarget,
    cluster: ecs.Cluster,
    service: ecs.FargateService,
    work_queue: sqs.Queue,
) -> None:
    wake = Policy(
        scope,
        "WakeFromZeroPolicy",
        policy_name=f"delivery-{stage.name}-wake-from-zero",
        policy_type="StepScaling",
        scaling_target_id=target.scalable_target_id,
        step_scaling_policy_configuration=Policy.StepScalingPolicyConfigurationProperty(
            adjustment_type="ExactCapacity",
            cooldown=SCALE_OUT_COOLDOWN,
            metric_aggregation_type="Maximum",
            step_adjustments=[
                Policy.StepAdjustmentProperty(metric_interval_lower_bound=0, scaling_adjustment=1)
            ],
        ),
    )
    period = Duration.minutes(1)
    idle_with_work = cloudwatch.MathExpression(
        expression="IF(visible > 0 AND FILL(tasks, 0) == 0, 1, 0)",
        using_metrics={
            "visible": work_queue.metric_approximate_number_of_messages_visible(
                period=period, statistic="Maximum"
            ),
            "tasks": cloudwatch.Metric(
                namespace="ECS/ContainerInsights",
                metric_name="RunningTaskCount",
                dimensions_map={
                    "ClusterName": cluster.cluster_name,
                    "ServiceName": service.service_name,
                },
                period=period,
                statistic="Average",
            ),
        },
        period=period,
        label="Work waiting and no task running",
    )
    alarm = cloudwatch.Alarm(
        scope,
        "WakeFromZeroAlarm",
        alarm_description="Messages are waiting and no task runs: start one",
        metric=idle_with_work,
        threshold=1,
        evaluation_periods=1,
        comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
    )
    cfn_alarm = alarm.node.default_child
    assert isinstance(cfn_alarm, cloudwatch.CfnAlarm)
    # The L2 alarm action for scaling wants an L2 step policy; this one is L1.
    cfn_alarm.alarm_actions = [wake.ref]


def _dimension(name: str, value: str) -> Policy.TargetTrackingMetricDimensionProperty:
    return Policy.TargetTrackingMetricDimensionProperty(name=name, value=value)

"""Alarms, and the route from them to the people on call: an SNS alert topic with an email
and/or a chat (HTTPS) subscription, each a stack parameter.

Two kinds: AWS metrics (the queues, the service's tasks, SES's reputation) and keyword
alerts from the logs: CloudWatch Logs metric filters on the server's JSON log events
(``delivery_server/logging.py``: one object per line with ``event`` and ``level``).
Every alarm's description names its runbook section in docs/operations.md. CloudWatch
publishes to the topic from AWS's side, so no endpoint or firewall of the VPC is on the
alerts' path.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import ArnFormat, CfnCondition, CfnParameter, Duration, Fn
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from constructs import Construct

from .config import StageConfig
from .messaging import Messaging
from .service import Service

RUNBOOK = "docs/operations.md"
# SES reviews an account at 5 % bounces and 0.1 % complaints (and may pause it at 10 % /
# 0.5 %): the alarms go off at four fifths of the review levels, before the review.
BOUNCE_RATE_ALARM = 0.04
COMPLAINT_RATE_ALARM = 0.0008
EVENTS_BACKLOG_ALARM_MINUTES = 15


@dataclass(frozen=True)
class LogAlert:
    """A keyword alert: a metric filter on the JSON log events and an alarm on it."""

    name: str
    pattern: str
    meaning: str
    runbook: str


LOG_ALERTS = (
    LogAlert(
        "ErrorLogs",
        '{ $.level = "error" }',
        "The server logged an error",
        "error-logs",
    ),
    LogAlert(
        "UnexpectedErrors",
        '{ ($.event = "unexpected_error") || ($.event = "handler_failed") }',
        "An error outside the error tree (a bug or an unknown vendor answer)",
        "unexpected-errors",
    ),
    LogAlert(
        "SendingPaused",
        '{ $.event = "account_sending_paused" }',
        "SES refused sends account-wide (sending paused or suspended): sending is paused",
        "sending-paused",
    ),
    LogAlert(
        "JobBraked",
        '{ $.event = "job_braked" }',
        "The reputation brake paused a job (its bounce or complaint rate reached the limit)",
        "braked-job",
    ),
    LogAlert(
        "UnknownEmails",
        '{ $.event = "email_unknown" }',
        "Emails became unknown: SES may have sent them, it could not be confirmed",
        "unknown-emails",
    ),
    LogAlert(
        "FailedJobs",
        '{ ($.event = "job_finished") && ($.status = "failed") }',
        "A job finished failed (some emails failed or are unknown)",
        "failed-job",
    ),
)


def build_alarms(
    scope: Construct, stage: StageConfig, messaging: Messaging, service: Service
) -> sns.Topic:
    topic = _alert_topic(scope, stage, messaging)
    action = actions.SnsAction(topic)
    namespace = f"DeliveryServer/{stage.name}"
    alarms = [
        *_queue_alarms(scope, stage, messaging),
        _tasks_unhealthy(scope, service),
        *_reputation_alarms(scope),
        *(_log_alarm(scope, alert, service.log_group, namespace) for alert in LOG_ALERTS),
    ]
    for alarm in alarms:
        # Named after the stage: the name is the subject of the email on call gets.
        cfn_alarm = alarm.node.default_child
        assert isinstance(cfn_alarm, cloudwatch.CfnAlarm)
        cfn_alarm.alarm_name = f"delivery-{stage.name}-{alarm.node.id}"
        alarm.add_alarm_action(action)
        if alarm.node.id not in {a.name for a in LOG_ALERTS}:
            alarm.add_ok_action(action)  # the metric ones say when they clear
    return topic


def _alert_topic(scope: Construct, stage: StageConfig, messaging: Messaging) -> sns.Topic:
    topic = sns.Topic(
        scope,
        "AlertTopic",
        display_name=f"delivery-server {stage.name} alerts",
        master_key=messaging.key,
        enforce_ssl=True,
    )
    # CloudWatch publishes alarms to the encrypted topic as itself.
    messaging.key.add_to_resource_policy(
        iam.PolicyStatement(
            sid="CloudWatchPublishesAlarms",
            principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
            actions=["kms:GenerateDataKey*", "kms:Decrypt"],
            resources=["*"],  # in a key policy "*" is this key itself
            conditions={
                "StringEquals": {"aws:SourceAccount": topic.stack.account},
                "ArnLike": {
                    "aws:SourceArn": topic.stack.format_arn(
                        service="cloudwatch",
                        resource="alarm",
                        resource_name="*",
                        arn_format=ArnFormat.COLON_RESOURCE_NAME,
                    )
                },
            },
        )
    )
    email = CfnParameter(
        scope,
        "AlertEmail",
        description="Where alarms are mailed (empty: no email subscription)",
        default="",
        allowed_pattern=r"^$|^[^@\s]+@[^@\s]+\.[^@\s]+$",
    )
    chat = CfnParameter(
        scope,
        "AlertChatWebhook",
        description="An HTTPS endpoint that receives alarms, e.g. a chat integration (empty: none)",
        default="",
        allowed_pattern=r"^$|^https://\S+$",
    )
    for name, parameter, protocol in (
        ("Email", email, "email"),
        ("Chat", chat, "https"),
    ):
        wanted = CfnCondition(
            scope,
            f"Alert{name}Given",
            expression=Fn.condition_not(Fn.condition_equals(parameter.value_as_string, "")),
        )
        subscription = sns.CfnSubscription(
            scope,
            f"Alert{name}Subscription",
            topic_arn=topic.topic_arn,
            protocol=protocol,
            endpoint=parameter.value_as_string,
        )
        subscription.cfn_options.condition = wanted
    return topic


def _queue_alarms(
    scope: Construct, stage: StageConfig, messaging: Messaging
) -> list[cloudwatch.Alarm]:
    five_minutes = Duration.minutes(5)
    alarms = []
    for name, dlq in (
        ("WorkDeadLetters", messaging.work_dlq),
        ("EventDeadLetters", messaging.events_dlq),
    ):
        alarms.append(
            dlq.metric_approximate_number_of_messages_visible(
                period=five_minutes, statistic="Maximum"
            ).create_alarm(
                scope,
                name,
                alarm_description="A dead-letter queue is not empty."
                f" Runbook: {RUNBOOK}#dead-letter-queue",
                threshold=1,
                evaluation_periods=1,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            )
        )
    for name, queue, minutes in (
        ("WorkOldestMessage", messaging.work_queue, stage.oldest_message_alarm_minutes),
        ("EventsOldestMessage", messaging.events_queue, EVENTS_BACKLOG_ALARM_MINUTES),
    ):
        alarms.append(
            queue.metric_approximate_age_of_oldest_message(
                period=five_minutes, statistic="Maximum"
            ).create_alarm(
                scope,
                name,
                alarm_description=f"A message has waited over {minutes} minutes in the queue."
                f" Runbook: {RUNBOOK}#stuck-job",
                threshold=minutes * 60,
                evaluation_periods=3,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            )
        )
    return alarms


def _tasks_unhealthy(scope: Construct, service: Service) -> cloudwatch.Alarm:
    dimensions = {
        "ClusterName": service.cluster.cluster_name,
        "ServiceName": service.service.service_name,
    }

    def task_count(metric_name: str) -> cloudwatch.Metric:
        return cloudwatch.Metric(
            namespace="ECS/ContainerInsights",
            metric_name=metric_name,
            dimensions_map=dimensions,
            period=Duration.minutes(5),
            statistic="Average",
        )

    missing = cloudwatch.MathExpression(
        expression="desired - running",
        using_metrics={
            "desired": task_count("DesiredTaskCount"),
            "running": task_count("RunningTaskCount"),
        },
        label="Tasks wanted but not running",
        period=Duration.minutes(5),
    )
    return missing.create_alarm(
        scope,
        "TasksUnhealthy",
        alarm_description="Fewer tasks run than the service wants for 15 minutes (failing"
        f" health checks, crashes, no image). Runbook: {RUNBOOK}#tasks-unhealthy",
        threshold=1,
        evaluation_periods=3,
        comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
    )


def _reputation_alarms(scope: Construct) -> list[cloudwatch.Alarm]:
    alarms = []
    for name, metric_name, threshold in (
        ("BounceRate", "Reputation.BounceRate", BOUNCE_RATE_ALARM),
        ("ComplaintRate", "Reputation.ComplaintRate", COMPLAINT_RATE_ALARM),
    ):
        metric = cloudwatch.Metric(
            namespace="AWS/SES",
            metric_name=metric_name,
            period=Duration.minutes(15),
            statistic="Maximum",
        )
        alarms.append(
            metric.create_alarm(
                scope,
                name,
                alarm_description=f"The account's {metric_name} reached {threshold:g}, near"
                f" SES's review level. Runbook: {RUNBOOK}#bounce-and-complaint-rates",
                threshold=threshold,
                evaluation_periods=1,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            )
        )
    return alarms


def _log_alarm(
    scope: Construct, alert: LogAlert, group: logs.LogGroup, namespace: str
) -> cloudwatch.Alarm:
    metric_filter = group.add_metric_filter(
        f"{alert.name}Filter",
        filter_pattern=logs.FilterPattern.literal(alert.pattern),
        metric_namespace=namespace,
        metric_name=alert.name,
        metric_value="1",
        # Every log line not matching counts 0: the metric has data, the alarm no gaps.
        default_value=0,
    )
    return metric_filter.metric(period=Duration.minutes(5), statistic="Sum").create_alarm(
        scope,
        alert.name,
        alarm_description=f"{alert.meaning}. Runbook: {RUNBOOK}#{alert.runbook}",
        threshold=1,
        evaluation_periods=1,
        comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
    )

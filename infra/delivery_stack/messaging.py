"""The work queue, the events queue, their dead-letter queues, and SES's way into the
events queue (configuration set → SNS topic → SQS, raw delivery; DESIGN §5).

All of it is encrypted with one customer-managed key (rotated yearly), because SES and
SNS can only publish to an encrypted topic or queue whose key policy lets them: an
AWS-managed key's policy cannot be changed.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_ses as ses
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from . import budget
from .config import StageConfig

# The SES events the tracker records (DESIGN §3: delivery_event.event_type).
TRACKED_EVENTS = (
    ses.EmailSendingEvent.SEND,
    ses.EmailSendingEvent.DELIVERY,
    ses.EmailSendingEvent.BOUNCE,
    ses.EmailSendingEvent.COMPLAINT,
    ses.EmailSendingEvent.DELIVERY_DELAY,
    ses.EmailSendingEvent.REJECT,
)


@dataclass(frozen=True)
class Messaging:
    key: kms.Key
    work_queue: sqs.Queue
    work_dlq: sqs.Queue
    events_queue: sqs.Queue
    events_dlq: sqs.Queue
    events_topic: sns.Topic
    configuration_set: ses.ConfigurationSet


def build_messaging(scope: Construct, stage: StageConfig) -> Messaging:
    key = kms.Key(
        scope,
        "MessagingKey",
        description=f"delivery-server {stage.name}: queues and topics",
        enable_key_rotation=True,
        removal_policy=RemovalPolicy.RETAIN,
    )
    work_queue, work_dlq = _queue_pair(
        scope,
        "Work",
        key,
        visibility=budget.lease_seconds(),
        max_receive_count=budget.work_max_receive_count(),
    )
    events_queue, events_dlq = _queue_pair(
        scope,
        "Events",
        key,
        visibility=budget.EVENTS_VISIBILITY_SECONDS,
        max_receive_count=budget.EVENTS_MAX_RECEIVE_COUNT,
    )
    topic = sns.Topic(
        scope,
        "SesEventsTopic",
        display_name=f"delivery-server {stage.name} SES events",
        master_key=key,
        enforce_ssl=True,
    )
    # Raw delivery: the queue carries the SES event JSON itself, one of the forms the
    # tracker reads (DESIGN §5); the subscription also grants SNS the queue and the key.
    topic.add_subscription(subscriptions.SqsSubscription(events_queue, raw_message_delivery=True))
    configuration_set = ses.ConfigurationSet(
        scope,
        "ConfigurationSet",
        configuration_set_name=f"delivery-{stage.name}",
        reputation_metrics=True,
    )
    configuration_set.add_event_destination(
        "ToEventsTopic",
        destination=ses.EventDestination.sns_topic(topic),
        events=list(TRACKED_EVENTS),
    )
    _let_ses_publish(key, topic, configuration_set)
    return Messaging(key, work_queue, work_dlq, events_queue, events_dlq, topic, configuration_set)


def _queue_pair(
    scope: Construct, name: str, key: kms.Key, *, visibility: int, max_receive_count: int
) -> tuple[sqs.Queue, sqs.Queue]:
    retention = Duration.seconds(budget.retention_seconds())
    dlq = sqs.Queue(
        scope,
        f"{name}DeadLetterQueue",
        encryption=sqs.QueueEncryption.KMS,
        encryption_master_key=key,
        data_key_reuse=Duration.hours(1),
        enforce_ssl=True,
        # Longer than the source queue's, so a dead-lettered message outlives its age.
        retention_period=Duration.days(14),
    )
    queue = sqs.Queue(
        scope,
        f"{name}Queue",
        encryption=sqs.QueueEncryption.KMS,
        encryption_master_key=key,
        # One data key per hour instead of per 5 minutes: a 500k job's sends and
        # receives would otherwise be a KMS call every few hundred messages per task.
        data_key_reuse=Duration.hours(1),
        enforce_ssl=True,
        visibility_timeout=Duration.seconds(visibility),
        retention_period=retention,
        receive_message_wait_time=Duration.seconds(20),
        dead_letter_queue=sqs.DeadLetterQueue(queue=dlq, max_receive_count=max_receive_count),
    )
    return queue, dlq


def _let_ses_publish(
    key: kms.Key, topic: sns.Topic, configuration_set: ses.ConfigurationSet
) -> None:
    """SES publishes the events to the encrypted topic as itself, so it needs the key (the
    topic's own policy for it comes with the event destination), for this configuration
    set only."""
    source = topic.stack.format_arn(
        service="ses",
        resource="configuration-set",
        resource_name=configuration_set.configuration_set_name,
    )
    key.add_to_resource_policy(
        iam.PolicyStatement(
            sid="SesPublishesEvents",
            principals=[iam.ServicePrincipal("ses.amazonaws.com")],
            actions=["kms:GenerateDataKey*", "kms:Decrypt"],
            resources=["*"],  # in a key policy "*" is this key itself
            conditions={
                "StringEquals": {"aws:SourceAccount": topic.stack.account},
                "ArnEquals": {"aws:SourceArn": source},
            },
        )
    )

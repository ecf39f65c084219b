"""Least privilege for the tasks' own role (the execution role, which pulls the image,
writes the logs and reads the secret, is CDK's, scoped to those resources).

The server calls, and so may call, exactly:

* SESv2 ``SendEmail`` (``ses:SendEmail``, ``ses:SendRawEmail`` for raw MIME) as the stage's
  identities through its configuration set, only From the stage's senders
  (``ses:FromAddress``);
* SESv2 ``GetAccount`` (the account's send rate): an account-level action with no resource
  type, so IAM requires ``Resource: "*"`` — the one ``*`` here;
* on the work queue: send (the publisher, the reconciler), receive, delete, change
  visibility, read the attributes (the backlog gauge); on the events queue: the same but
  send; the queues' key to encrypt and decrypt their messages;
* ``s3:GetObject`` in the attachment buckets (DELIVERY_ATTACHMENTS_S3_BUCKETS).
"""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_iam as iam

from .config import StageConfig
from .messaging import Messaging

SEND_ACTIONS = ("ses:SendEmail", "ses:SendRawEmail")
WORK_QUEUE_ACTIONS = (
    "sqs:SendMessage",
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibility",
    "sqs:GetQueueAttributes",
)
EVENTS_QUEUE_ACTIONS = (
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibility",
    "sqs:GetQueueAttributes",
)


def grant_server(role: iam.IRole, stage: StageConfig, messaging: Messaging) -> None:
    """What ``delivery-server run`` needs, and nothing more."""
    stack = Stack.of(role)
    identities = [
        stack.format_arn(service="ses", resource="identity", resource_name=identity)
        for identity in stage.ses_identities
    ]
    configuration_set = stack.format_arn(
        service="ses",
        resource="configuration-set",
        resource_name=messaging.configuration_set.configuration_set_name,
    )
    role.add_to_principal_policy(
        iam.PolicyStatement(
            sid="SendAsTheStageSendersOnly",
            actions=list(SEND_ACTIONS),
            resources=[*identities, configuration_set],
            conditions={"StringEquals": {"ses:FromAddress": list(stage.senders)}},
        )
    )
    role.add_to_principal_policy(
        iam.PolicyStatement(
            sid="ReadTheAccountSendRate",
            actions=["ses:GetAccount"],
            resources=["*"],  # GetAccount has no resource type: IAM takes "*" only
        )
    )
    role.add_to_principal_policy(
        iam.PolicyStatement(
            sid="WorkQueue",
            actions=list(WORK_QUEUE_ACTIONS),
            resources=[messaging.work_queue.queue_arn],
        )
    )
    role.add_to_principal_policy(
        iam.PolicyStatement(
            sid="EventsQueue",
            actions=list(EVENTS_QUEUE_ACTIONS),
            resources=[messaging.events_queue.queue_arn],
        )
    )
    role.add_to_principal_policy(
        iam.PolicyStatement(
            sid="QueueMessagesKey",
            actions=["kms:Decrypt", "kms:GenerateDataKey"],
            resources=[messaging.key.key_arn],
        )
    )
    if stage.attachment_buckets:
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="ReadAttachments",
                actions=["s3:GetObject"],
                resources=[f"arn:{stack.partition}:s3:::{b}/*" for b in stage.attachment_buckets],
            )
        )

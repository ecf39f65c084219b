"""The one stack: a stage of delivery-server (staging, production) on ECS/Fargate."""

from __future__ import annotations

from aws_cdk import CfnOutput, Environment, Fn, Stack, Tags
from aws_cdk import aws_sns as sns
from constructs import Construct

from .alarms import build_alarms
from .config import StageConfig
from .messaging import Messaging, build_messaging
from .network import Network, build_network
from .scaling import build_scaling
from .service import Service, build_service


class DeliveryStack(Stack):
    """The network, queues, SES events, service, scaling and alarms of one stage."""

    def __init__(self, scope: Construct, construct_id: str, stage: StageConfig) -> None:
        super().__init__(
            scope,
            construct_id,
            env=Environment(account=stage.account, region=stage.region),
            description=f"delivery-server {stage.name}: ECS/Fargate, SQS, SES events, alarms",
        )
        self._availability_zones = list(stage.availability_zones)
        Tags.of(self).add("application", "delivery-server")
        Tags.of(self).add("stage", stage.name)
        network = build_network(self, stage)
        messaging = build_messaging(self, stage)
        service = build_service(self, stage, network, messaging)
        build_scaling(self, stage, service.cluster, service.service, messaging.work_queue)
        alerts = build_alarms(self, stage, messaging, service)

        self._outputs(network, messaging, service, alerts)

    @property
    def availability_zones(self) -> list[str]:
        """The stage's zones, from the context: the default would look them up in the
        account at synth time, and a synth here calls no AWS."""
        return self._availability_zones

    def _outputs(
        self, network: Network, messaging: Messaging, service: Service, alerts: sns.Topic
    ) -> None:
        CfnOutput(self, "WorkQueueUrl", value=messaging.work_queue.queue_url)
        CfnOutput(self, "EventsQueueUrl", value=messaging.events_queue.queue_url)
        CfnOutput(
            self,
            "ConfigurationSetName",
            value=messaging.configuration_set.configuration_set_name,
        )
        CfnOutput(self, "AlertTopicArn", value=alerts.topic_arn)
        # The per-release `db upgrade` (docs/operations.md): this command, run once the new
        # image is pushed and before the service is updated to it.
        subnets = network.vpc.select_subnets(subnet_type=network.subnets.subnet_type).subnet_ids
        CfnOutput(
            self,
            "DbUpgradeCommand",
            value=Fn.join(
                "",
                [
                    "aws ecs run-task --launch-type FARGATE --cluster ",
                    service.cluster.cluster_name,
                    " --task-definition ",
                    service.upgrade_task_definition.task_definition_arn,
                    " --network-configuration awsvpcConfiguration={subnets=[",
                    Fn.join(",", subnets),
                    "],securityGroups=[",
                    network.task_security_group.security_group_id,
                    "],assignPublicIp=DISABLED}",
                ],
            ),
        )

"""The ECS cluster, the server's Fargate service, and the one-off ``db upgrade`` task.

The task definition carries what the image alone cannot give ECS: the stop timeout that
holds the shutdown grace and the cancel deadline (ECS ignores the image's STOPSIGNAL
timing and its HEALTHCHECK), the health check on /healthz, JSON logs to CloudWatch, the
database URL from Secrets Manager (never in the plain environment), a read-only root file
system and the image's non-root user.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import CfnParameter, Duration
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from . import budget
from .config import StageConfig
from .log_groups import log_group
from .messaging import Messaging
from .network import Network
from .permissions import grant_server

# The image's user (Dockerfile: USER 10001:10001), named again so ECS enforces it.
IMAGE_USER = "10001:10001"
CONTAINER_NAME = "server"
# The same check as the image's HEALTHCHECK (tests compare the two): the port comes from
# DELIVERY_HTTP_PORT, as the server's own listener takes it.
HEALTH_CHECK_COMMAND = [
    "CMD",
    "python",
    "-c",
    "import os, urllib.request; urllib.request.urlopen("
    "'http://127.0.0.1:' + os.environ.get('DELIVERY_HTTP_PORT', '8080') + '/healthz',"
    " timeout=2)",
]


@dataclass(frozen=True)
class Service:
    cluster: ecs.Cluster
    service: ecs.FargateService
    task_definition: ecs.FargateTaskDefinition
    upgrade_task_definition: ecs.FargateTaskDefinition
    log_group: logs.LogGroup


def build_service(
    scope: Construct, stage: StageConfig, network: Network, messaging: Messaging
) -> Service:
    shutdown = budget.default_budget()
    image_tag = CfnParameter(
        scope,
        "ImageTag",
        description="The release to run: a tag of the image in the ECR repository"
        f" {stage.image_repository} (never latest)",
        allowed_pattern=r"^(?!latest$)[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$",
    )
    repository = ecr.Repository.from_repository_name(scope, "Repository", stage.image_repository)
    image = ecs.ContainerImage.from_ecr_repository(repository, image_tag.value_as_string)
    database_url = secretsmanager.Secret.from_secret_name_v2(
        scope, "DatabaseUrl", stage.database_url_secret_name
    )
    logs_group = log_group(scope, "ServerLogs", stage)
    cluster = ecs.Cluster(
        scope,
        "Cluster",
        vpc=network.vpc,
        container_insights_v2=ecs.ContainerInsights.ENABLED,
    )
    environment = {
        "DELIVERY_QUEUE": "sqs",
        "DELIVERY_SQS_QUEUE_URL": messaging.work_queue.queue_url,
        "DELIVERY_EVENTS_QUEUE_URL": messaging.events_queue.queue_url,
        "DELIVERY_SENDER": "ses",
        "DELIVERY_SES_CONFIGURATION_SET": messaging.configuration_set.configuration_set_name,
        "DELIVERY_ATTACHMENTS_S3_BUCKETS": ",".join(stage.attachment_buckets),
        "DELIVERY_HTTP_PORT": str(budget.http_port()),
        "DELIVERY_LEASE_SECONDS": str(budget.lease_seconds()),
        "DELIVERY_LOG_FORMAT": "json",
        "AWS_DEFAULT_REGION": stage.region,
        **shutdown.environment(),
    }
    secrets = {"DELIVERY_DATABASE_URL": ecs.Secret.from_secrets_manager(database_url)}

    task_definition = _task_definition(scope, "ServerTask", stage)
    task_definition.add_container(
        CONTAINER_NAME,
        image=image,
        command=["run"],
        environment=environment,
        secrets=secrets,
        logging=ecs.LogDrivers.aws_logs(stream_prefix="server", log_group=logs_group),
        readonly_root_filesystem=True,
        user=IMAGE_USER,
        stop_timeout=Duration.seconds(shutdown.stop_timeout),
        port_mappings=[ecs.PortMapping(container_port=budget.http_port())],
        health_check=ecs.HealthCheck(
            command=HEALTH_CHECK_COMMAND,
            interval=Duration.seconds(15),
            timeout=Duration.seconds(5),
            retries=3,
            start_period=Duration.seconds(30),
        ),
    ).add_mount_points(_scratch_mount())
    grant_server(task_definition.task_role, stage, messaging)

    service = ecs.FargateService(
        scope,
        "Service",
        cluster=cluster,
        task_definition=task_definition,
        # No desired count in the template (cdk.json: removeDefaultDesiredCount): the
        # autoscaling owns it, and a deploy must not reset it to a number of ours.
        assign_public_ip=False,
        vpc_subnets=network.subnets,
        security_groups=[network.task_security_group],
        circuit_breaker=ecs.DeploymentCircuitBreaker(enable=True, rollback=True),
        min_healthy_percent=100,
        max_healthy_percent=200,
        platform_version=ecs.FargatePlatformVersion.VERSION1_4,
    )

    upgrade = _task_definition(scope, "DbUpgradeTask", stage)
    upgrade.add_container(
        "db-upgrade",
        image=image,
        command=["db", "upgrade"],
        environment={"DELIVERY_LOG_FORMAT": "json", "AWS_DEFAULT_REGION": stage.region},
        secrets=secrets,
        logging=ecs.LogDrivers.aws_logs(stream_prefix="db-upgrade", log_group=logs_group),
        readonly_root_filesystem=True,
        user=IMAGE_USER,
        essential=True,
    ).add_mount_points(_scratch_mount())
    # db upgrade talks to the database only: its task role is granted nothing (its
    # execution role reads the database secret).
    return Service(cluster, service, task_definition, upgrade, logs_group)


def _task_definition(
    scope: Construct, construct_id: str, stage: StageConfig
) -> ecs.FargateTaskDefinition:
    task_definition = ecs.FargateTaskDefinition(
        scope,
        construct_id,
        cpu=stage.cpu,
        memory_limit_mib=stage.memory_mib,
        runtime_platform=ecs.RuntimePlatform(
            cpu_architecture=ecs.CpuArchitecture.X86_64,
            operating_system_family=ecs.OperatingSystemFamily.LINUX,
        ),
    )
    # The root file system is read-only; /tmp is the one writable place (task storage,
    # gone with the task) for what a library spools.
    task_definition.add_volume(name="tmp")
    return task_definition


def _scratch_mount() -> ecs.MountPoint:
    return ecs.MountPoint(container_path="/tmp", source_volume="tmp", read_only=False)

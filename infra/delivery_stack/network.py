"""The network: private subnets with no route to the internet, and the VPC endpoints
through which the tasks reach every AWS service they use.

A new VPC has isolated subnets only (no NAT gateway, no internet gateway); an existing one
is joined by its attributes. Either way the tasks reach SQS, SES, CloudWatch Logs, ECR
and Secrets Manager through interface endpoints with private DNS (the SDK's default
hostnames resolve to them, so DELIVERY_AWS_ENDPOINT_URL stays unset), and S3 (ECR's image
layers, attachments) through the gateway endpoint. A firewall change on the public
internet cannot cut them off.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import aws_ec2 as ec2
from constructs import Construct

from .config import StageConfig, StageConfigError
from .log_groups import log_group

NEW_VPC_CIDR = "10.40.0.0/16"
# What the tasks call (adapters/aws: SQS, SESv2; Fargate itself: ECR, Logs, Secrets).
INTERFACE_ENDPOINTS = {
    "Sqs": ec2.InterfaceVpcEndpointAwsService.SQS,
    "Email": ec2.InterfaceVpcEndpointAwsService.EMAIL,
    "Logs": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS,
    "EcrApi": ec2.InterfaceVpcEndpointAwsService.ECR,
    "EcrDocker": ec2.InterfaceVpcEndpointAwsService.ECR_DOCKER,
    "SecretsManager": ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
}


@dataclass(frozen=True)
class Network:
    vpc: ec2.IVpc
    subnets: ec2.SubnetSelection
    task_security_group: ec2.SecurityGroup


def build_network(scope: Construct, stage: StageConfig) -> Network:
    """The VPC, its endpoints and the tasks' security group."""
    vpc, subnets, cidr = (
        _new_vpc(scope, stage) if stage.vpc is None else _existing_vpc(scope, stage)
    )
    endpoint_group = ec2.SecurityGroup(
        scope,
        "EndpointSecurityGroup",
        vpc=vpc,
        description="VPC interface endpoints: HTTPS from inside the VPC only",
        allow_all_outbound=False,
    )
    endpoint_group.add_ingress_rule(ec2.Peer.ipv4(cidr), ec2.Port.tcp(443), "HTTPS from the VPC")
    for name, service in INTERFACE_ENDPOINTS.items():
        vpc.add_interface_endpoint(
            f"{name}Endpoint",
            service=service,
            subnets=subnets,
            private_dns_enabled=True,
            security_groups=[endpoint_group],
            open=False,
        )
    vpc.add_gateway_endpoint(
        "S3Endpoint", service=ec2.GatewayVpcEndpointAwsService.S3, subnets=[subnets]
    )
    tasks = ec2.SecurityGroup(
        scope,
        "TaskSecurityGroup",
        vpc=vpc,
        description="delivery-server tasks: no inbound; HTTPS to the endpoints, MySQL in the VPC",
        allow_all_outbound=False,
    )
    # 443 anywhere: the subnets have no route out, so this reaches the interface endpoints
    # and S3 through the gateway endpoint (whose prefix list cannot be named without a
    # lookup at synth time) and nothing else.
    tasks.add_egress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(443), "AWS APIs via the endpoints")
    tasks.add_egress_rule(ec2.Peer.ipv4(cidr), ec2.Port.tcp(3306), "the MySQL database")
    return Network(vpc, subnets, tasks)


def _new_vpc(scope: Construct, stage: StageConfig) -> tuple[ec2.IVpc, ec2.SubnetSelection, str]:
    vpc = ec2.Vpc(
        scope,
        "Vpc",
        ip_addresses=ec2.IpAddresses.cidr(NEW_VPC_CIDR),
        availability_zones=list(stage.availability_zones),
        nat_gateways=0,
        subnet_configuration=[
            ec2.SubnetConfiguration(
                name="private", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=22
            )
        ],
        # Restricting the default security group takes a Lambda-backed custom resource;
        # nothing is ever placed in it (every resource here names its own group).
        restrict_default_security_group=False,
    )
    vpc.add_flow_log(
        "FlowLog",
        destination=ec2.FlowLogDestination.to_cloud_watch_logs(
            log_group(scope, "FlowLogGroup", stage)
        ),
        traffic_type=ec2.FlowLogTrafficType.ALL,
    )
    subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)
    return vpc, subnets, NEW_VPC_CIDR


def _existing_vpc(
    scope: Construct, stage: StageConfig
) -> tuple[ec2.IVpc, ec2.SubnetSelection, str]:
    existing = stage.vpc
    assert existing is not None
    if len(existing.private_subnet_ids) != len(stage.availability_zones) or len(
        existing.private_subnet_route_table_ids
    ) != len(existing.private_subnet_ids):
        raise StageConfigError(
            f"delivery:stages.{stage.name}.vpc: one private subnet and route table per"
            " availability zone"
        )
    vpc = ec2.Vpc.from_vpc_attributes(
        scope,
        "Vpc",
        vpc_id=existing.id,
        vpc_cidr_block=existing.cidr,
        availability_zones=list(stage.availability_zones),
        isolated_subnet_ids=list(existing.private_subnet_ids),
        isolated_subnet_route_table_ids=list(existing.private_subnet_route_table_ids),
    )
    subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)
    return vpc, subnets, existing.cidr

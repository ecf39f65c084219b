"""The synthesized stack (issue 12): what a platform reviewer checks, asserted on the
CloudFormation template, so that dropping a DLQ, the scaling math, the stop timeout, an
endpoint or an alarm fails here."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk.assertions import Match

from delivery_server.settings import load_settings
from infra.delivery_stack import budget
from infra.delivery_stack.scaling import BACKLOG_PER_TASK_EXPRESSION
from tests.infra.conftest import Synthesized
from tests.unit.test_dockerfile import ROOT, final_stage, parse_dockerfile

pytestmark = pytest.mark.timeout(300)


def only(found: dict[str, dict[str, Any]], what: str) -> dict[str, Any]:
    assert len(found) == 1, f"{what}: {len(found)} in the template"
    (resource,) = found.values()
    return resource


def server_container(stage: Synthesized) -> dict[str, Any]:
    definitions = stage.resources("AWS::ECS::TaskDefinition")
    containers = [c for d in definitions.values() for c in d["Properties"]["ContainerDefinitions"]]
    (server,) = [c for c in containers if c["Command"] == ["run"]]
    return server


def environment(container: dict[str, Any]) -> dict[str, Any]:
    return {e["Name"]: e["Value"] for e in container.get("Environment", [])}


def test_every_queue_has_a_dead_letter_queue_and_encryption(stage: Synthesized) -> None:
    queues = stage.resources("AWS::SQS::Queue")
    sources = {k: q for k, q in queues.items() if "RedrivePolicy" in q["Properties"]}
    assert len(sources) == 2, f"work and events queues with a redrive: {sorted(sources)}"
    targets = set()
    for name, queue in sources.items():
        redrive = queue["Properties"]["RedrivePolicy"]
        assert redrive["maxReceiveCount"] >= budget.EVENTS_MAX_RECEIVE_COUNT, name
        targets.add(redrive["deadLetterTargetArn"]["Fn::GetAtt"][0])
    assert targets == set(queues) - set(sources), "each DLQ serves one queue"
    for name, queue in queues.items():
        assert "KmsMasterKeyId" in queue["Properties"], f"{name} is not encrypted"


def test_the_work_queue_holds_a_lease_and_a_large_job(stage: Synthesized) -> None:
    queues = stage.resources("AWS::SQS::Queue")
    (work,) = [q for k, q in queues.items() if k.startswith("WorkQueue")]
    properties = work["Properties"]
    assert properties["VisibilityTimeout"] == budget.lease_seconds() == 120
    # 500,000 emails at the sandbox's 1/s is ~5.8 days, and a paused weekend on top.
    assert properties["MessageRetentionPeriod"] >= budget.LARGEST_JOB_EMAILS
    assert properties["RedrivePolicy"]["maxReceiveCount"] == 15
    env = environment(server_container(stage))
    assert env["DELIVERY_LEASE_SECONDS"] == str(properties["VisibilityTimeout"])


def test_the_stop_timeout_holds_the_grace_and_the_cancel_deadline(
    stage: Synthesized, monkeypatch: pytest.MonkeyPatch
) -> None:
    container = server_container(stage)
    env = environment(container)
    grace = float(env["DELIVERY_SHUTDOWN_GRACE"])
    deadline = float(env["DELIVERY_CANCEL_DEADLINE"])
    assert container["StopTimeout"] >= grace + deadline
    assert (grace, deadline) == (25, 5), "the server's defaults (DESIGN §7)"
    assert int(env["DELIVERY_STOP_TIMEOUT"]) == container["StopTimeout"]
    # The server itself accepts the environment the task definition gives it.
    for name, value in env.items():
        if isinstance(value, str):
            monkeypatch.setenv(name, value)
        else:  # a CloudFormation reference: any URL of the right shape
            monkeypatch.setenv(name, "https://sqs.eu-west-1.amazonaws.com/1/q")
    monkeypatch.setenv("DELIVERY_DATABASE_URL", "mysql://delivery@db:3306/delivery")
    settings = load_settings()
    assert settings.stop_timeout == container["StopTimeout"]


def test_the_database_url_comes_from_secrets_manager_only(stage: Synthesized) -> None:
    for definition in stage.resources("AWS::ECS::TaskDefinition").values():
        for container in definition["Properties"]["ContainerDefinitions"]:
            assert "DELIVERY_DATABASE_URL" not in environment(container)
            secrets = {s["Name"]: s["ValueFrom"] for s in container["Secrets"]}
            assert ":secretsmanager:" in json.dumps(secrets["DELIVERY_DATABASE_URL"])
            assert stage.stage.database_url_secret_name in json.dumps(secrets)


def test_containers_run_read_only_as_the_image_s_non_root_user(stage: Synthesized) -> None:
    users = [
        ins.arguments
        for ins in final_stage(parse_dockerfile((ROOT / "Dockerfile").read_text()))
        if ins.keyword == "USER"
    ]
    for definition in stage.resources("AWS::ECS::TaskDefinition").values():
        for container in definition["Properties"]["ContainerDefinitions"]:
            assert container["ReadonlyRootFilesystem"] is True
            assert container["User"] == users[-1] != "0"
            assert container["LogConfiguration"]["LogDriver"] == "awslogs"
            assert environment(container)["DELIVERY_LOG_FORMAT"] == "json"


def test_the_health_check_is_the_image_s_on_healthz(stage: Synthesized) -> None:
    (healthcheck,) = [
        ins.arguments
        for ins in final_stage(parse_dockerfile((ROOT / "Dockerfile").read_text()))
        if ins.keyword == "HEALTHCHECK"
    ]
    image_command = json.loads(healthcheck.partition("CMD ")[2])
    container = server_container(stage)
    assert container["HealthCheck"]["Command"] == ["CMD", *image_command]
    assert "/healthz" in " ".join(image_command)
    assert container["PortMappings"] == [{"ContainerPort": budget.http_port(), "Protocol": "tcp"}]


def test_db_upgrade_is_a_one_off_task_with_no_aws_permission(stage: Synthesized) -> None:
    definitions = stage.resources("AWS::ECS::TaskDefinition")
    (upgrade_id,) = [
        k
        for k, d in definitions.items()
        if d["Properties"]["ContainerDefinitions"][0]["Command"] == ["db", "upgrade"]
    ]
    upgrade = definitions[upgrade_id]
    role = upgrade["Properties"]["TaskRoleArn"]["Fn::GetAtt"][0]
    attached = [
        p
        for p in stage.resources("AWS::IAM::Policy").values()
        if {"Ref": role} in p["Properties"]["Roles"]
    ]
    assert attached == [], "db upgrade talks to the database only"
    service = only(stage.resources("AWS::ECS::Service"), "services")
    assert service["Properties"]["TaskDefinition"] != {"Ref": upgrade_id}, "not a service"
    outputs = stage.template.find_outputs("DbUpgradeCommand")
    assert "aws ecs run-task" in json.dumps(outputs)


def test_the_tasks_reach_aws_through_vpc_endpoints(stage: Synthesized) -> None:
    endpoints = list(stage.resources("AWS::EC2::VPCEndpoint").values())
    names = " ".join(json.dumps(e["Properties"]["ServiceName"]) for e in endpoints)
    for service in ("sqs", "email", "logs", "ecr.api", "ecr.dkr", "secretsmanager", "s3"):
        assert f".{service}" in names, f"no {service} endpoint"
    for endpoint in endpoints:
        properties = endpoint["Properties"]
        if properties.get("VpcEndpointType") == "Interface":
            assert properties["PrivateDnsEnabled"] is True
        else:
            assert ".s3" in json.dumps(properties["ServiceName"])
    assert len(endpoints) == 7


def test_the_tasks_have_no_public_address_and_no_inbound_rule(stage: Synthesized) -> None:
    service = only(stage.resources("AWS::ECS::Service"), "services")
    network = service["Properties"]["NetworkConfiguration"]["AwsvpcConfiguration"]
    assert network["AssignPublicIp"] == "DISABLED"
    (group_ref,) = network["SecurityGroups"]
    group = stage.resources("AWS::EC2::SecurityGroup")[group_ref["Fn::GetAtt"][0]]
    assert "SecurityGroupIngress" not in group["Properties"]
    assert service["Properties"]["DeploymentConfiguration"]["DeploymentCircuitBreaker"] == {
        "Enable": True,
        "Rollback": True,
    }


def test_a_new_vpc_has_no_route_out(synthesized: dict[str, Synthesized]) -> None:
    staging = synthesized["staging"]
    assert staging.stage.vpc is None
    only(staging.resources("AWS::EC2::VPC"), "VPCs")
    for kind in ("AWS::EC2::InternetGateway", "AWS::EC2::NatGateway"):
        assert staging.resources(kind) == {}, kind
    only(staging.resources("AWS::EC2::FlowLog"), "flow logs")


def test_an_existing_vpc_is_joined_by_its_attributes(synthesized: dict[str, Synthesized]) -> None:
    production = synthesized["production"]
    vpc = production.stage.vpc
    assert vpc is not None
    assert production.resources("AWS::EC2::VPC") == {}
    for endpoint in production.resources("AWS::EC2::VPCEndpoint").values():
        properties = endpoint["Properties"]
        assert properties["VpcId"] == vpc.id
        if properties.get("VpcEndpointType") == "Interface":
            assert properties["SubnetIds"] == list(vpc.private_subnet_ids)
        else:
            assert properties["RouteTableIds"] == list(vpc.private_subnet_route_table_ids)


def test_ses_events_reach_the_events_queue_raw(stage: Synthesized) -> None:
    destination = only(
        stage.resources("AWS::SES::ConfigurationSetEventDestination"), "event destinations"
    )["Properties"]["EventDestination"]
    assert set(destination["MatchingEventTypes"]) == {
        "send",
        "delivery",
        "bounce",
        "complaint",
        "deliveryDelay",
        "reject",
    }
    topic = destination["SnsDestination"]["TopicARN"]["Ref"]
    stage.template.has_resource_properties(
        "AWS::SNS::Subscription",
        {
            "Protocol": "sqs",
            "TopicArn": {"Ref": topic},
            "RawMessageDelivery": True,
            "Endpoint": {"Fn::GetAtt": [Match.string_like_regexp("^EventsQueue"), "Arn"]},
        },
    )
    env = environment(server_container(stage))
    assert env["DELIVERY_SES_CONFIGURATION_SET"]["Ref"].startswith("ConfigurationSet")
    assert env["DELIVERY_EVENTS_QUEUE_URL"]["Ref"].startswith("EventsQueue")


def test_scaling_tracks_backlog_per_task_by_metric_math(stage: Synthesized) -> None:
    policies = stage.resources("AWS::ApplicationAutoScaling::ScalingPolicy")
    (tracking,) = [
        p for p in policies.values() if p["Properties"]["PolicyType"] == "TargetTrackingScaling"
    ]
    configuration = tracking["Properties"]["TargetTrackingScalingPolicyConfiguration"]
    assert configuration["TargetValue"] == stage.stage.backlog_per_task
    metrics = {m["Id"]: m for m in configuration["CustomizedMetricSpecification"]["Metrics"]}
    assert metrics["backlogPerTask"]["Expression"] == BACKLOG_PER_TASK_EXPRESSION
    assert metrics["backlogPerTask"]["ReturnData"] is True
    visible = metrics["visible"]["MetricStat"]["Metric"]
    assert (visible["Namespace"], visible["MetricName"]) == (
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
    )
    assert visible["Dimensions"][0]["Value"]["Fn::GetAtt"][0].startswith("WorkQueue")
    tasks = metrics["tasks"]["MetricStat"]["Metric"]
    assert (tasks["Namespace"], tasks["MetricName"]) == (
        "ECS/ContainerInsights",
        "RunningTaskCount",
    )
    assert configuration["ScaleInCooldown"] >= budget.lease_seconds() + 30
    target = only(stage.resources("AWS::ApplicationAutoScaling::ScalableTarget"), "targets")
    assert target["Properties"]["MinCapacity"] == stage.stage.min_tasks
    assert target["Properties"]["MaxCapacity"] == stage.stage.max_tasks
    assert "AWSServiceRoleForApplicationAutoScaling_ECSService" in json.dumps(
        target["Properties"]["RoleARN"]
    )
    cluster = only(stage.resources("AWS::ECS::Cluster"), "clusters")
    assert {"Name": "containerInsights", "Value": "enabled"} in cluster["Properties"][
        "ClusterSettings"
    ]


def test_a_stage_that_scales_to_zero_wakes_on_visible_messages(
    synthesized: dict[str, Synthesized],
) -> None:
    staging = synthesized["staging"]
    assert staging.stage.min_tasks == 0
    policies = staging.resources("AWS::ApplicationAutoScaling::ScalingPolicy")
    (wake,) = [k for k, p in policies.items() if p["Properties"]["PolicyType"] == "StepScaling"]
    alarms = [
        a
        for a in staging.resources("AWS::CloudWatch::Alarm").values()
        if a["Properties"].get("AlarmActions") == [{"Ref": wake}]
    ]
    assert len(alarms) == 1
    expressions = [m.get("Expression", "") for m in alarms[0]["Properties"]["Metrics"]]
    assert any("visible > 0" in e and "tasks" in e for e in expressions)
    production = synthesized["production"]
    assert production.stage.min_tasks >= 1
    kinds = [
        p["Properties"]["PolicyType"]
        for p in production.resources("AWS::ApplicationAutoScaling::ScalingPolicy").values()
    ]
    assert kinds == ["TargetTrackingScaling"]

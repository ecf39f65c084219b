"""Alarms and keyword alerts (issue 12): each alarm exists and reaches the alert topic,
and every log metric filter names events the server really logs, in the fields its JSON
log lines really have."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
import structlog

from delivery_server.logging import configure_logging
from delivery_server.settings import load_settings
from infra.delivery_stack.alarms import LOG_ALERTS
from tests.infra.conftest import ROOT, Synthesized

pytestmark = pytest.mark.timeout(300)

EXPECTED_ALARMS = {
    "WorkDeadLetters",
    "EventDeadLetters",
    "WorkOldestMessage",
    "EventsOldestMessage",
    "TasksUnhealthy",
    "BounceRate",
    "ComplaintRate",
    *(alert.name for alert in LOG_ALERTS),
}
# The keyword alerts the issue asks for, by what they catch.
REQUIRED_LOG_ALERTS = {"ErrorLogs", "SendingPaused", "JobBraked", "UnexpectedErrors"}


def alarms_by_name(stage: Synthesized) -> dict[str, dict[str, object]]:
    found = {}
    for alarm in stage.resources("AWS::CloudWatch::Alarm").values():
        name = str(alarm["Properties"].get("AlarmName", ""))
        if name:
            found[name.removeprefix(f"delivery-{stage.stage.name}-")] = alarm["Properties"]
    return found


def test_every_alarm_exists_and_notifies_the_alert_topic(stage: Synthesized) -> None:
    alarms = alarms_by_name(stage)
    assert set(alarms) == EXPECTED_ALARMS
    (topic,) = [k for k in stage.resources("AWS::SNS::Topic") if k.startswith("AlertTopic")]
    for name, alarm in alarms.items():
        assert alarm["AlarmActions"] == [{"Ref": topic}], name
        assert "Runbook: docs/operations.md#" in str(alarm["AlarmDescription"]), name


def test_the_runbook_has_every_section_the_alarms_name(stage: Synthesized) -> None:
    runbook = (ROOT / "docs" / "operations.md").read_text()
    anchors = {_anchor(h) for h in re.findall(r"^#+ (.+)$", runbook, re.M)}
    for name, alarm in alarms_by_name(stage).items():
        anchor = str(alarm["AlarmDescription"]).rpartition("#")[2]
        assert anchor in anchors, f"{name}: docs/operations.md has no section #{anchor}"


def _anchor(heading: str) -> str:
    return re.sub(r"[^a-z0-9 -]", "", heading.strip().lower()).replace(" ", "-")


def test_the_alert_topic_subscriptions_are_parameters(stage: Synthesized) -> None:
    subscriptions = stage.resources("AWS::SNS::Subscription")
    by_protocol = {s["Properties"]["Protocol"]: s for s in subscriptions.values()}
    for protocol, parameter in (("email", "AlertEmail"), ("https", "AlertChatWebhook")):
        assert by_protocol[protocol]["Properties"]["Endpoint"] == {"Ref": parameter}
        assert "Condition" in by_protocol[protocol], f"{protocol}: subscribed when empty"


def test_log_filters_cover_the_keyword_alerts(stage: Synthesized) -> None:
    filters = stage.resources("AWS::Logs::MetricFilter")
    patterns = {
        f["Properties"]["MetricTransformations"][0]["MetricName"]: f["Properties"]["FilterPattern"]
        for f in filters.values()
    }
    assert set(patterns) >= REQUIRED_LOG_ALERTS
    assert patterns["ErrorLogs"] == '{ $.level = "error" }'
    assert "job_braked" in patterns["JobBraked"]
    assert "account_sending_paused" in patterns["SendingPaused"]
    assert "unexpected_error" in patterns["UnexpectedErrors"]
    (server_logs,) = [k for k in stage.resources("AWS::Logs::LogGroup") if "ServerLogs" in k]
    assert all(f["Properties"]["LogGroupName"] == {"Ref": server_logs} for f in filters.values())


def _logged_events() -> set[str]:
    """Event names the server passes to a logger (``log.warning("job_braked", ...)``)."""
    call = re.compile(r"\.(?:debug|info|warning|error|exception)\(\s*\"([a-z_.]+)\"")
    found: set[str] = set()
    for path in Path(ROOT / "delivery_server").rglob("*.py"):
        found.update(call.findall(path.read_text()))
    return found


def test_every_filtered_event_is_one_the_server_logs() -> None:
    logged = _logged_events()
    assert "job_braked" in logged, "the scan finds the server's log calls"
    for alert in LOG_ALERTS:
        for event in re.findall(r'\$\.event = "([^"]+)"', alert.pattern):
            assert event in logged, f"{alert.name}: the server never logs {event!r}"


def test_the_json_log_lines_have_the_fields_the_filters_read(tmp_path: Path) -> None:
    stream = io.StringIO()
    configure_logging(load_settings(log_format="json", database_url="sqlite:///x.db"), stream)
    structlog.get_logger().error("account_sending_paused", error="Sending paused")
    structlog.get_logger().info("job_finished", job_id=1, status="failed")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert (first["event"], first["level"]) == ("account_sending_paused", "error")
    assert (second["event"], second["status"]) == ("job_finished", "failed")

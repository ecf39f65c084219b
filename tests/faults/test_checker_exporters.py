"""The checker's verdict on which processes export the database gauges (issue 14): the
fleet's leader alone while a fleet is live, every process without one."""

from __future__ import annotations

import pytest

from tests.faults.checker import exporters_mismatch, gauge_mismatches

pytestmark = pytest.mark.faults

LEADER = "# TYPE delivery_emails gauge\n" + "".join(
    f'delivery_emails{{status="{status}"}} {count}\n'
    for status, count in {"sent": 3, "pending": 0}.items()
)
DEFERRING = "# TYPE delivery_queue_backlog gauge\ndelivery_queue_backlog 0\n"


def test_one_exporter_while_a_fleet_is_live_else_every_process() -> None:
    assert exporters_mismatch([LEADER, DEFERRING], fleet=2) == []
    assert exporters_mismatch([LEADER, LEADER], fleet=2) != []
    assert exporters_mismatch([DEFERRING, DEFERRING], fleet=2) != []
    assert exporters_mismatch([LEADER, LEADER], fleet=0) == []
    assert exporters_mismatch([LEADER, DEFERRING], fleet=0) != []


def test_a_deferring_process_has_no_gauge_to_disagree_with() -> None:
    assert gauge_mismatches(DEFERRING, {"sent": 3}) == []
    assert gauge_mismatches(LEADER, {"sent": 4}) != []

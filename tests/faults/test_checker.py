"""The checker's verdicts on made-up outcomes (no database, no moto)."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.faults.checker import (
    EmailRow,
    JobMismatch,
    Outcome,
    UnknownNotInFlight,
    _compare,
    _job_mismatches,
    gauge_mismatches,
)

pytestmark = pytest.mark.faults


def _rows(**statuses: str) -> dict[str, EmailRow]:
    return {
        f"{name}@x.example": EmailRow(n, f"{name}@x.example", status)
        for n, (name, status) in enumerate(statuses.items())
    }


def test_every_kind_of_problem_is_told_apart() -> None:
    rows = _rows(
        ok="sent",
        lost="sent",  # recorded as sent, never received
        silent="queued",  # never received, not flagged
        flagged="failed",  # never received, but flagged: not lost
        twice="sent",
        resent="sent",  # unknown, resent on the operator's word
        wrong="failed",  # received but failed in the database
    )
    received = Counter(
        {
            "ok@x.example": 1,
            "twice@x.example": 2,
            "resent@x.example": 2,
            "wrong@x.example": 1,
            "stranger@x.example": 1,
        }
    )
    problems = _compare(rows, received, {"resent@x.example"})
    assert problems["lost"] == ["lost@x.example", "silent@x.example"]
    assert problems["duplicated"] == ["twice@x.example"]
    assert problems["resent_unknown"] == ["resent@x.example"]
    assert problems["unexpected"] == ["stranger@x.example"]
    assert problems["sent_not_received"] == ["lost@x.example"]
    assert problems["received_not_sent"] == ["wrong@x.example (failed)"]
    assert set(problems["unserved"]) == {"lost@x.example", "silent@x.example", "flagged@x.example"}


def test_a_third_copy_of_a_resent_email_is_a_duplicate() -> None:
    problems = _compare(_rows(a="sent"), Counter({"a@x.example": 3}), {"a@x.example"})
    assert problems["duplicated"] == ["a@x.example"]
    assert problems["resent_unknown"] == ["a@x.example", "a@x.example"]


def test_job_status_must_follow_its_emails() -> None:
    statuses = Counter({"sent": 3})
    job = {"status": "failed", "sent_count": 2, "failed_count": 0}
    assert len(_job_mismatches(job, statuses)) == 2
    assert _job_mismatches({**job, "status": "completed", "sent_count": 3}, statuses) == []
    unknown = Counter({"sent": 2, "unknown": 1})
    assert _job_mismatches({**job, "sent_count": 2}, unknown) == []


def test_metrics_gauges_are_compared_with_the_database() -> None:
    text = "\n".join(
        f'delivery_emails{{status="{status}"}} {value}'
        for status, value in (
            ("pending", 0),
            ("queued", 0),
            ("sending", 0),
            ("sent", 5),
            ("failed", 1),
            ("suppressed", 0),
            ("cancelled", 0),
            ("expired", 0),
            ("unknown", 0),
        )
    )
    text = "# TYPE delivery_emails gauge\n" + text + "\n"
    assert gauge_mismatches(text, {"sent": 5, "failed": 1}) == []
    assert len(gauge_mismatches(text, {"sent": 6})) == 2


def test_the_most_serious_problem_decides_the_assertion_class() -> None:
    outcome = Outcome("s", emails=1, faults=1, fault_kind="k", unknown=2, in_flight=1)
    with pytest.raises(UnknownNotInFlight):
        outcome.assert_clean()
    outcome.job_mismatches = ["job is failed"]
    with pytest.raises(UnknownNotInFlight):
        outcome.assert_clean()
    outcome.unknown = 1
    with pytest.raises(JobMismatch):
        outcome.assert_clean()
    outcome.lost = 1
    with pytest.raises(AssertionError) as raised:
        outcome.assert_clean()
    assert type(raised.value) is AssertionError

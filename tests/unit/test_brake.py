"""The reputation brake's judgement: rates over a job's sends, after a minimum of sends."""

from __future__ import annotations

from typing import Any

import pytest

from delivery_server.brake import BrakeThresholds, judge

DEFAULTS = BrakeThresholds()


def test_the_defaults_sit_at_ses_review_thresholds() -> None:
    assert (DEFAULTS.bounce_rate, DEFAULTS.complaint_rate, DEFAULTS.min_sends) == (
        0.05,
        0.001,
        200,
    )


def test_fifteen_percent_bounces_pull_the_brake_and_say_why() -> None:
    verdict = judge(200, 30, 0, DEFAULTS)

    assert verdict is not None
    assert verdict.reason == "reputation brake: bounce rate 15.0% (30 of 200 sent) reached 5.0%"
    assert (verdict.sent, verdict.bounced, verdict.complained) == (200, 30, 0)
    assert verdict.bounce_rate == pytest.approx(0.15)
    assert verdict.complaint_rate == 0.0


def test_nothing_is_judged_before_min_sends() -> None:
    assert judge(199, 199, 199, DEFAULTS) is None
    assert judge(0, 0, 0, DEFAULTS) is None


def test_below_both_rates_the_job_goes_on() -> None:
    assert judge(1000, 49, 0, DEFAULTS) is None  # 4.9 % bounces, no complaints


def test_reaching_a_threshold_is_enough() -> None:
    bounce = judge(1000, 50, 0, DEFAULTS)
    complaint = judge(1000, 0, 1, DEFAULTS)

    assert bounce is not None
    assert bounce.reason == "reputation brake: bounce rate 5.0% (50 of 1000 sent) reached 5.0%"
    assert complaint is not None
    assert complaint.reason == (
        "reputation brake: complaint rate 0.10% (1 of 1000 sent) reached 0.10%"
    )


def test_both_rates_are_named_when_both_are_reached() -> None:
    verdict = judge(400, 40, 2, DEFAULTS)

    assert verdict is not None
    assert verdict.reason == (
        "reputation brake: bounce rate 10.0% (40 of 400 sent) reached 5.0%; "
        "complaint rate 0.50% (2 of 400 sent) reached 0.10%"
    )


def test_thresholds_come_from_the_settings() -> None:
    strict = BrakeThresholds(bounce_rate=0.02, complaint_rate=0.0005, min_sends=10)

    assert judge(10, 0, 0, strict) is None
    assert judge(100, 2, 0, strict) is not None
    assert judge(9, 9, 0, strict) is None


@pytest.mark.parametrize(
    "kwargs",
    [{"bounce_rate": 0.0}, {"bounce_rate": 1.5}, {"complaint_rate": -0.1}, {"min_sends": 0}],
)
def test_nonsense_thresholds_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="brake"):
        BrakeThresholds(**kwargs)


def test_negative_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        judge(200, -1, 0, DEFAULTS)

"""The reputation brake (issue 10): a job whose bounce or complaint rate threatens the
sending account pauses by itself. A pure judgement, no I/O.

SES puts an account under review at a 5 % bounce rate or a 0.1 % complaint rate; the
defaults stop a job there, before one bad recipient list costs the bank all its sending.

Only **permanent** bounces count: SES's reputation bounce rate is about hard bounces
(addresses that do not exist); a full mailbox or a greylisting server (transient) says
nothing about the list's quality. Callers pass permanent bounces in ``bounced``
(``tracking.is_permanent_bounce``). The rates are over the job's sends, judged only after
``min_sends`` of them so the first few bounces of a run do not stop it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BrakeThresholds:
    """When the brake pulls (``DELIVERY_BRAKE_*``): a rate that *reaches* its threshold."""

    bounce_rate: float = 0.05
    complaint_rate: float = 0.001
    min_sends: int = 200

    def __post_init__(self) -> None:
        rates = {"bounce_rate": self.bounce_rate, "complaint_rate": self.complaint_rate}
        for name, rate in rates.items():
            if not 0.0 < rate <= 1.0:
                raise ValueError(f"brake {name} must be above 0 and at most 1")
        if self.min_sends < 1:
            raise ValueError("brake min_sends must be at least 1")


@dataclass(frozen=True, slots=True)
class BrakeVerdict:
    """The brake pulled: what was measured, and the text for ``delivery_job.paused_reason``."""

    sent: int
    bounced: int  # permanent bounces
    complained: int
    bounce_rate: float
    complaint_rate: float
    reason: str


def judge(
    sent: int, bounced: int, complained: int, thresholds: BrakeThresholds
) -> BrakeVerdict | None:
    """A verdict when a job with ``sent`` sends, ``bounced`` permanent bounces and
    ``complained`` complaints must pause; None below ``min_sends`` or below both rates."""
    if min(sent, bounced, complained) < 0:
        raise ValueError("brake counts cannot be negative")
    if sent < thresholds.min_sends:
        return None
    bounce_rate, complaint_rate = bounced / sent, complained / sent
    reasons = []
    if bounce_rate >= thresholds.bounce_rate:
        reasons.append(_reached("bounce", bounce_rate, bounced, sent, thresholds.bounce_rate))
    if complaint_rate >= thresholds.complaint_rate:
        reasons.append(
            _reached("complaint", complaint_rate, complained, sent, thresholds.complaint_rate)
        )
    if not reasons:
        return None
    return BrakeVerdict(
        sent=sent,
        bounced=bounced,
        complained=complained,
        bounce_rate=bounce_rate,
        complaint_rate=complaint_rate,
        reason="reputation brake: " + "; ".join(reasons),
    )


def _reached(what: str, rate: float, count: int, sent: int, threshold: float) -> str:
    return f"{what} rate {_percent(rate)} ({count} of {sent} sent) reached {_percent(threshold)}"


def _percent(rate: float) -> str:
    # 0.1 % thresholds need a second decimal to be told apart from their neighbours.
    decimals = 2 if rate < 0.01 else 1
    return f"{rate * 100:.{decimals}f}%"

"""The numbers the stack derives from the server's own settings (DESIGN §7).

The task definition's stopTimeout, the environment it sets and the queues' visibility
timeouts come from one place, the server's ``Settings`` defaults, so that raising the
shutdown grace in the server cannot leave ECS killing tasks before they have handed their
messages back. Queue retention is sized for the largest job the product is built for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from delivery_server.settings import Settings

# The largest job the product is sized for (DESIGN §1): 500,000 statements.
LARGEST_JOB_EMAILS = 500_000
# The slowest sending rate a job may be held to: the SES sandbox's 1 email/s. A job at
# that rate takes ~5.8 days; a weekend's pause (a braked job, a paused account) comes on
# top. SQS keeps a message 14 days at most.
SLOWEST_SEND_RATE = 1.0
PAUSE_MARGIN_SECONDS = 3 * 24 * 3600
SQS_MAX_RETENTION_SECONDS = 14 * 24 * 3600
# ECS allows a Fargate container 120 s between SIGTERM and SIGKILL at most.
FARGATE_MAX_STOP_TIMEOUT = 120
# Receives before a message is dead-lettered. An email gets max_attempts attempts, but a
# receive is not always an attempt: a throttled send, a hand-back at shutdown and a
# duplicate message are receives too, so the redrive leaves room for them; the
# reconciler republishes an email whose message was dead-lettered (DESIGN §4).
WORK_RECEIVES_PER_ATTEMPT = 5
# The tracker deletes a malformed event itself after 5 receives (tracker.max_receives);
# an early event comes back a few times before its send is recorded. The redrive is the
# net under both.
EVENTS_MAX_RECEIVE_COUNT = 10
# The tracker's own receive visibility (Tracker's visibility_timeout default).
EVENTS_VISIBILITY_SECONDS = 60


def _default(name: str) -> float:
    value = Settings.model_fields[name].default
    assert isinstance(value, int | float), name
    return float(value)


@dataclass(frozen=True)
class ShutdownBudget:
    """SIGTERM → in-flight sends finish within the grace → the rest are cancelled and hand
    their messages back within the cancel deadline → SIGKILL at the stop timeout."""

    shutdown_grace: float
    cancel_deadline: float

    @property
    def stop_timeout(self) -> int:
        """Whole seconds (ECS's unit) that hold the grace and the cancel deadline."""
        seconds = math.ceil(self.shutdown_grace + self.cancel_deadline)
        if seconds > FARGATE_MAX_STOP_TIMEOUT:
            raise ValueError(
                f"shutdown grace {self.shutdown_grace:g} s + cancel deadline"
                f" {self.cancel_deadline:g} s exceed Fargate's {FARGATE_MAX_STOP_TIMEOUT} s"
                " stop timeout"
            )
        return seconds

    def environment(self) -> dict[str, str]:
        """The server's settings for the same numbers (its start-up check compares them)."""
        return {
            "DELIVERY_SHUTDOWN_GRACE": f"{self.shutdown_grace:g}",
            "DELIVERY_CANCEL_DEADLINE": f"{self.cancel_deadline:g}",
            "DELIVERY_STOP_TIMEOUT": str(self.stop_timeout),
        }


def default_budget() -> ShutdownBudget:
    """The server's defaults (DELIVERY_SHUTDOWN_GRACE 25 s, DELIVERY_CANCEL_DEADLINE 5 s)."""
    return ShutdownBudget(_default("shutdown_grace"), _default("cancel_deadline"))


def lease_seconds() -> int:
    """DELIVERY_LEASE_SECONDS: the work queue's visibility timeout is the claim's lease,
    as the consumer's own receives ask (a message reappears when its lease ends)."""
    return math.ceil(_default("lease_seconds"))


def work_max_receive_count() -> int:
    """Receives of one work message before SQS dead-letters it."""
    return int(_default("max_attempts")) * WORK_RECEIVES_PER_ATTEMPT


def retention_seconds() -> int:
    """How long the queues keep a message: the largest job at the slowest rate, plus a
    weekend's pause, within SQS's 14 days."""
    needed = math.ceil(LARGEST_JOB_EMAILS / SLOWEST_SEND_RATE) + PAUSE_MARGIN_SECONDS
    return min(needed, SQS_MAX_RETENTION_SECONDS)


def http_port() -> int:
    """DELIVERY_HTTP_PORT: /metrics and /healthz."""
    return int(_default("http_port"))

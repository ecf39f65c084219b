"""Prometheus metrics (DESIGN §8), registered on an explicit registry at start-up.

Labels carry states and outcomes only, never recipient data.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from delivery_server.models import DeliveryStatus, EmailStatus, JobStatus

# SES event types counted by name; anything else is counted as "other" so that a new or
# odd eventType cannot grow the label set without bound.
EVENT_TYPES = frozenset(
    {"Send", "Delivery", "Bounce", "Complaint", "DeliveryDelay", "Reject", "Open", "Click"}
)


class Metrics:
    """Every metric this process exports."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.emails_sent = Counter(
            "delivery_emails_sent", "Emails the provider accepted.", registry=r
        )
        self.emails_failed = Counter(
            "delivery_emails_failed", "Emails that ended failed.", registry=r
        )
        self.emails_unknown = Counter(
            "delivery_emails_unknown",
            "Emails whose send may have happened but could not be confirmed.",
            registry=r,
        )
        self.send_attempts = Counter(
            "delivery_send_attempts",
            "Send attempts by outcome (sent, retry, failed, unknown, throttled, paused, "
            "unreachable).",
            ["outcome"],
            registry=r,
        )
        # The same outcomes by channel (email, sms, s3, sftp, webhook; "none" when the job's
        # channel is off on this server). A counter of its own: the channel-blind series
        # above stay as dashboards and alert rules read them.
        self.channel_attempts = Counter(
            "delivery_channel_attempts",
            "Send attempts by channel and outcome (the outcomes of delivery_send_attempts).",
            ["channel", "outcome"],
            registry=r,
        )
        self._channel_children: dict[tuple[str, str], Any] = {}
        self.send_duration = Histogram(
            "delivery_send_duration_seconds",
            "Time of one provider send call.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.emails_published = Counter(
            "delivery_emails_published", "Queue messages published.", registry=r
        )
        self.queue_backlog = Gauge(
            "delivery_queue_backlog", "Approximate visible messages in the queue.", registry=r
        )
        self.sending_paused = Gauge(
            "delivery_sending_paused",
            "1 while sending is paused account-wide (suspended/paused account, provider "
            "unreachable): alert on it.",
            registry=r,
        )
        self.inflight = Gauge("delivery_inflight", "Emails being handled now.", registry=r)
        self.jobs = Gauge("delivery_jobs", "Jobs by status (database).", ["status"], registry=r)
        self.emails = Gauge(
            "delivery_emails",
            "Emails of the jobs in flight or finished within a day, by status (database).",
            ["status"],
            registry=r,
        )
        for job_status in JobStatus:
            self.jobs.labels(status=job_status.value)
        for email_status in EmailStatus:
            self.emails.labels(status=email_status.value)
        self._tracking_metrics(r)

    def _tracking_metrics(self, r: CollectorRegistry) -> None:
        self.events = Counter(
            "delivery_events",
            "SES events accepted by the tracker, by type (Send, Delivery, Bounce, ...).",
            ["type"],
            registry=r,
        )
        self.event_outcomes = Counter(
            "delivery_event_outcomes",
            "What became of each events-queue receive or SNS POST (recorded, duplicate, "
            "unmatched, early, malformed, forged, ...); an early or malformed message counts "
            "once per receive.",
            ["outcome"],
            registry=r,
        )
        self.emails_delivery = Gauge(
            "delivery_emails_delivery",
            "Emails of active jobs by delivery status (database).",
            ["status"],
            registry=r,
        )
        self.jobs_braked = Counter(
            "delivery_jobs_braked",
            "Jobs the reputation brake paused (bounce or complaint rate reached): alert on it.",
            registry=r,
        )
        for delivery_status in DeliveryStatus:
            self.emails_delivery.labels(status=delivery_status.value)

    def count_channel(self, channel: str, outcome: str) -> None:
        """Count one send attempt's outcome under its channel (children cached: this is
        on every send's path)."""
        child = self._channel_children.get((channel, outcome))
        if child is None:
            child = self.channel_attempts.labels(channel=channel, outcome=outcome)
            self._channel_children[(channel, outcome)] = child
        child.inc()

    def count_event(self, event_type: str) -> None:
        """Count one accepted SES event under its type (or "other")."""
        self.events.labels(type=event_type if event_type in EVENT_TYPES else "other").inc()

    def set_delivery_counts(self, counts: dict[DeliveryStatus, int]) -> None:
        """Refresh the delivery-status gauge (every status, zero when absent)."""
        for delivery_status in DeliveryStatus:
            self.emails_delivery.labels(status=delivery_status.value).set(
                counts.get(delivery_status, 0)
            )

    def set_counts(self, jobs: dict[JobStatus, int], emails: dict[EmailStatus, int]) -> None:
        """Refresh the database gauges (every status, zero when absent)."""
        for job_status in JobStatus:
            self.jobs.labels(status=job_status.value).set(jobs.get(job_status, 0))
        for email_status in EmailStatus:
            self.emails.labels(status=email_status.value).set(emails.get(email_status, 0))

    def clear_database_counts(self) -> None:
        """Export no database gauges: another process of the fleet counts them, and a
        stale or zero sample here would stand beside its counts."""
        self.jobs.clear()
        self.emails.clear()
        self.emails_delivery.clear()

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)

"""The fault rig with the AWS stand-in (``python -m stand_in``) in moto's place.

One stand-in process serves SQS and SES v2 on one endpoint, behind the rig's fault proxy
as moto would be, and plays SES event publishing: for every email it accepts, a ``Send``
and a ``Delivery`` event (SNS envelopes, tagged with the email's ``job_id`` and
``email_id``) arrive on its own SQS queue ``EVENTS_QUEUE``. Scenarios run the servers with
tracking on (``events_env``); the checker compares the stand-in's log of accepted emails
with the database. A server may get a fault proxy of its own (``add_proxy``), so that
its SES sends are told apart from the others'.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path

from bench.stand_in import SimulatorProcess
from tests.faults.rig import FaultRig
from tests.integration.harness import create_sqs_queue
from tests.support.fault_proxy import FaultProxy, SesSend
from tests.support.simulator import accepted_emails, accepted_recipients

EVENTS_QUEUE = "ses-events"


class StandInRig(FaultRig):
    """A ``FaultRig`` whose AWS is ``stand_in`` (started with ``events_queue=EVENTS_QUEUE``).
    The caller owns the stand-in: close it after the rig, whose proxies wait for the SES
    sends still under way."""

    def __init__(
        self,
        scenario: str,
        database_url: str,
        stand_in: SimulatorProcess,
        tmp_path: Path,
        results: Path,
    ) -> None:
        assert stand_in.events_queue_url is not None, "the stand-in must publish SES events"
        self.stand_in = stand_in
        self.events_queue_url = stand_in.events_queue_url
        super().__init__(scenario, database_url, stand_in.endpoint_url, tmp_path, results)
        self.proxies = [self.proxy]

    def set_up_aws(self) -> str:
        # The stand-in accepts any sender: there is no identity to verify.
        return create_sqs_queue(self.stand_in.endpoint_url)

    def add_proxy(self) -> FaultProxy:
        """Another fault proxy in front of the stand-in (closed with the rig)."""
        proxy = FaultProxy(self.stand_in.endpoint_url).start()
        self.proxies.append(proxy)
        return proxy

    def events_env(self, proxy: FaultProxy | None = None, **extra: str) -> dict[str, str]:
        """Server settings with tracking on: the trackers consume the events queue. Every
        AWS call goes through ``proxy`` (the rig's own when None)."""
        return {
            **self.env(),
            **extra,
            "DELIVERY_EVENTS_QUEUE_URL": self.events_queue_url,
            "DELIVERY_AWS_ENDPOINT_URL": (proxy or self.proxy).endpoint,
        }

    def ses_in_flight_anywhere(self) -> list[SesSend]:
        """SES sends under way now at any of the rig's proxies."""
        return [send for proxy in self.proxies for send in proxy.ses_in_flight()]

    def message_ids(self) -> dict[str, str]:
        """The SES message id the stand-in gave each recipient's (latest) accepted email."""
        emails = accepted_emails(self.stand_in.endpoint_url)
        return {rcpt: sent["message_id"] for sent in emails for rcpt in sent["to"]}

    def accepted(self) -> Counter[str]:
        return accepted_recipients(self.stand_in.endpoint_url)

    def events_published(self) -> dict[str, int]:
        """SES events the stand-in published so far, by type (and ``emails``)."""
        stats: dict[str, dict[str, int]] = self.stand_in.control("/_sim/stats")
        return stats.get("events", {})

    def close(self) -> None:
        try:
            super().close()
        finally:
            for number, proxy in enumerate(self.proxies[1:], start=1):
                proxy.close()
                with (self.tmp_path / f"ses-sends-{number}.jsonl").open("w") as out:
                    for send in list(proxy.ses_log):
                        out.write(json.dumps(dataclasses.asdict(send)) + "\n")

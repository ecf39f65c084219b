"""The test rig of the fault scenarios: real server processes, MariaDB (directly or through a
TCP proxy), moto behind the HTTP fault proxy, a job, and condition waits over the database.

Everything here drives the product from outside (processes, signals, proxies, the CLI);
nothing patches product code.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import secrets
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest

from delivery_server.app import open_store, upgrade_database
from delivery_server.settings import load_settings
from tests.conftest import MARIADB_HOST, MARIADB_PORT, wait_for
from tests.faults.checker import (
    Outcome,
    check,
    connect,
    exporters_mismatch,
    gauge_mismatches,
    live_fleet,
)
from tests.integration.harness import create_job, create_sqs_queue, customer, verify_sender
from tests.support.fault_proxy import FaultProxy
from tests.support.servers import ServerProcess, server_env
from tests.support.tcp_proxy import TcpProxy

ACTIVE = ("pending", "queued", "sending")
METRICS_SETTLE_SECONDS = 20.0  # the gauges are refreshed every 5 s


def faults_emails(default: int = 100) -> int:
    """How many emails each scenario sends (``FAULTS_EMAILS``)."""
    return int(os.environ.get("FAULTS_EMAILS", default))


class FaultRig:
    """One scenario's world. ``close()`` stops every process and proxy it started."""

    def __init__(
        self, scenario: str, database_url: str, moto: str, tmp_path: Path, results: Path
    ) -> None:
        self.scenario = scenario
        self.database_url = database_url  # direct; servers may go through ``tcp``
        self.moto = moto
        self.tmp_path = tmp_path
        self.results = results
        self.started = time.monotonic()
        # Addresses of their own: anything an earlier test left on its way to moto shows
        # up as "unexpected", never as a duplicate of this test's emails.
        self.domain = f"{secrets.token_hex(3)}.customers.example"
        self.tcp: TcpProxy | None = None
        self.servers: list[ServerProcess] = []
        self.queue_url = self.set_up_aws()
        asyncio.run(upgrade_database(load_settings(database_url=database_url)))
        self.proxy = FaultProxy(moto).start()  # last: nothing to clean up if set-up fails

    # -- set-up ----------------------------------------------------------------------

    def set_up_aws(self) -> str:
        """The sender identity verified and the servers' SQS queue created, at ``moto``
        (the AWS the fault proxy fronts); returns the queue's URL."""
        verify_sender(self.moto)
        return create_sqs_queue(self.moto)

    def database_proxy(self) -> TcpProxy:
        """A TCP proxy in front of MariaDB (started on first use)."""
        if self.tcp is None:
            self.tcp = TcpProxy(MARIADB_HOST, MARIADB_PORT).start()
        return self.tcp

    def env(self, *, through_tcp_proxy: bool = False, **extra: str) -> dict[str, str]:
        """Server settings: SQS and SES through the fault proxy, MariaDB directly or
        through the TCP proxy; fast loops for tests."""
        url = self.database_url
        if through_tcp_proxy:
            url = self.database_proxy().url_for(url)
        values = {
            "DELIVERY_RECONCILE_INTERVAL": "0.5",
            "DELIVERY_LOG_LEVEL": os.environ.get("FAULTS_LOG_LEVEL", "info"),
            **extra,
        }
        return server_env(url, self.proxy.endpoint, self.queue_url, **values)

    def start(
        self, env: dict[str, str], args: Sequence[str] = (), *, wait: bool = True
    ) -> ServerProcess:
        server = ServerProcess(env, self.tmp_path / f"server-{len(self.servers)}.log", args)
        self.servers.append(server)
        if wait:
            wait_for(server.healthy, timeout=60, what=f"server {len(self.servers) - 1} health")
        return server

    def create_job(self, emails: int, *, start: bool = True) -> int:
        """A job of ``emails`` statements to c0@<domain>, c1@<domain>, ..."""
        recipients = [customer(n, domain=self.domain) for n in range(emails)]

        async def create() -> int:
            async with open_store(load_settings(database_url=self.database_url)) as store:
                job = await create_job(store, recipients, start=start)
                return job.id

        return asyncio.run(create())

    def address(self, n: int) -> str:
        return customer(n, domain=self.domain).to_address

    def close(self) -> None:
        for server in self.servers:
            if server.alive():
                server.kill()
        self.proxy.close()
        # Beside the server logs, for the post-mortem of a failed scenario.
        with (self.tmp_path / "ses-sends.jsonl").open("w") as out:
            for send in list(self.proxy.ses_log):
                out.write(json.dumps(dataclasses.asdict(send)) + "\n")
        if self.tcp is not None:
            self.tcp.close()

    # -- the database, read directly -------------------------------------------------

    def query(self, sql: str, args: Iterable[object] = ()) -> list[tuple[object, ...]]:
        conn = connect(self.database_url)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, tuple(args))
                return list(cur.fetchall())
        finally:
            conn.close()

    def counts(self, job_id: int) -> dict[str, int]:
        rows = self.query(
            "SELECT status, COUNT(*) FROM delivery_email WHERE job_id = %s GROUP BY status",
            (job_id,),
        )
        return {str(status): int(str(count)) for status, count in rows}

    def addresses(self, job_id: int, *statuses: str) -> set[str]:
        marks = ", ".join(["%s"] * len(statuses))
        rows = self.query(
            f"SELECT to_address FROM delivery_email WHERE job_id = %s AND status IN ({marks})",  # noqa: S608
            (job_id, *statuses),
        )
        return {str(row[0]) for row in rows}

    def unhanded(self, job_id: int) -> int:
        """Emails not yet claimed by any consumer (``pending`` or ``queued``)."""
        counts = self.counts(job_id)
        return counts.get("pending", 0) + counts.get("queued", 0)

    def job_status(self, job_id: int) -> str:
        return str(self.query("SELECT status FROM delivery_job WHERE id = %s", (job_id,))[0][0])

    def received(self) -> int:
        """SES sends that reached moto so far (as the proxy saw them)."""
        return sum(1 for send in list(self.proxy.ses_log) if send.outcome in ("sent", "dropped"))

    # -- condition waits -------------------------------------------------------------

    def wait_settled(self, job_id: int, timeout: float, *, confirmed_sent: bool = False) -> str:
        """Wait until the job is finished, no email is in flight in the database and no
        SES send is under way at the proxy. ``confirmed_sent``: also until every email
        whose send SES answered is ``sent`` (only when no process died holding one)."""

        def settled() -> bool:
            if self.job_status(job_id) == "processing" or self.proxy.ses_in_flight():
                return False
            counts = self.counts(job_id)
            if any(counts.get(status, 0) for status in ACTIVE):
                return False
            if confirmed_sent:
                answered = {
                    rcpt
                    for send in list(self.proxy.ses_log)
                    if send.outcome == "sent"
                    for rcpt in send.recipients
                }
                return not answered & self.addresses(job_id, "unknown", "sending")
            return True

        deadline = time.monotonic() + timeout
        while not settled():
            if time.monotonic() > deadline:
                stuck = self.query(
                    "SELECT id, to_address, status, attempts, last_error, updated_at "
                    "FROM delivery_email WHERE job_id = %s AND status IN %s LIMIT 10",
                    (job_id, ACTIVE),
                )
                pytest.fail(
                    f"timed out after {timeout}s waiting for job {job_id} to settle: job "
                    f"{self.job_status(job_id)}, emails {self.counts(job_id)}, SES sends "
                    f"in flight {len(self.proxy.ses_in_flight())}, stuck: {stuck}"
                )
            time.sleep(0.1)
        return self.job_status(job_id)

    def wait_received(self, count: int, timeout: float = 60) -> None:
        wait_for(lambda: self.received() >= count, timeout=timeout, what=f"{count} SES sends")

    def settled_metrics(self, servers: Sequence[ServerProcess], job_id: int) -> list[str]:
        """The servers' /metrics, once the database gauges of those that export them
        caught up with the database (they refresh every few seconds) and as many export
        them as should (the fleet's leader alone, see ``checker``); the last scrapes if
        they never do."""

        def scrape() -> tuple[list[str], bool]:
            texts = [server.metrics() for server in servers]
            counts = self.counts(job_id)
            settled = not exporters_mismatch(texts, live_fleet(self.database_url)) and not any(
                gauge_mismatches(text, counts) for text in texts
            )
            return texts, settled

        deadline = time.monotonic() + METRICS_SETTLE_SECONDS
        texts, settled = scrape()
        while not settled and time.monotonic() < deadline:
            time.sleep(0.2)
            texts, settled = scrape()
        return texts

    # -- the command line ------------------------------------------------------------

    def cli(self, *args: str) -> subprocess.Popen[str]:
        """Start ``python -m delivery_server ARGS`` on the test database."""
        env = {**os.environ, "DELIVERY_DATABASE_URL": self.database_url}
        return subprocess.Popen(
            [sys.executable, "-m", "delivery_server", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def restart_failed(self, job_id: int, *, include_unknown: bool = False) -> int:
        """``jobs restart-failed JOB [--include-unknown] --json``; how many it restarted."""
        args = ["jobs", "restart-failed", str(job_id), "--json"]
        if include_unknown:
            args.append("--include-unknown")
        out, err = self.cli(*args).communicate(timeout=60)
        assert out.strip(), err
        restarted: int = json.loads(out)["restarted"]
        return restarted

    def resend_unknown(self, job_id: int, timeout: float) -> set[str]:
        """The operator's word: resend the unknown emails and wait until the job is done.
        Returns the addresses that were unknown."""
        unknown = self.addresses(job_id, "unknown")
        failed = self.addresses(job_id, "failed")
        if unknown or failed:
            restarted = self.restart_failed(job_id, include_unknown=True)
            assert restarted == len(unknown | failed)
            self.wait_settled(job_id, timeout)
        return unknown

    # -- the verdict -----------------------------------------------------------------

    def accepted(self) -> Counter[str] | None:
        """Copies per recipient that SES accepted; None: the checker asks moto."""
        return None

    def check_after_resending_unknown(
        self,
        job_id: int,
        servers: Sequence[ServerProcess],
        timeout: float,
        *,
        faults: int,
        fault_kind: str,
        in_flight: Iterable[str] | int | None,
        compare_sent_counter: bool = False,
    ) -> Outcome:
        """The verdict of a scenario whose faults may have cut sends short: the operator
        resends the unknown emails first (``resend_unknown``), then the servers' metrics
        are read and the job is checked."""
        unknown = self.resend_unknown(job_id, timeout)
        return self.check(
            job_id,
            faults=faults,
            fault_kind=fault_kind,
            unknown_seen=unknown,
            resent_unknown=unknown,
            in_flight=in_flight,
            metrics=self.settled_metrics(servers, job_id),
            compare_sent_counter=compare_sent_counter,
        )

    def check(
        self,
        job_id: int,
        *,
        faults: int,
        fault_kind: str,
        unknown_seen: Iterable[str] = (),
        resent_unknown: Iterable[str] = (),
        in_flight: Iterable[str] | int | None = None,
        metrics: Sequence[str] = (),
        compare_sent_counter: bool = False,
    ) -> Outcome:
        return check(
            scenario=self.scenario,
            database_url=self.database_url,
            job_id=job_id,
            moto_endpoint=self.moto,
            faults=faults,
            fault_kind=fault_kind,
            started=self.started,
            results=self.results,
            unknown_seen=unknown_seen,
            resent_unknown=set(resent_unknown),
            in_flight=in_flight if isinstance(in_flight, int | None) else set(in_flight),
            metrics=metrics,
            compare_sent_counter=compare_sent_counter,
            received=self.accepted(),
        )

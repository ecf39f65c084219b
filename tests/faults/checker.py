"""Compares what SES received (moto) with what the database says, after a fault scenario.

Every test email has its own recipient address, so "received" is counted per address:

* ``lost``: not received, and the database does not flag it (neither ``failed``,
  ``unknown``, ``suppressed``, ``cancelled`` nor ``expired``): an email that should have
  gone out and silently did not. Must be 0.
* ``duplicated``: received more than once, except where an ``unknown`` email was resent on
  an operator's word (``restart-failed --include-unknown``): those extra copies are
  ``resent_unknown``, the price of the uncertain window, counted apart. Must be 0.
* ``unexpected``: received, but no email of the job has that address.
* status mismatches: ``sent`` in the database but never received; received but the
  database says ``failed``/``pending``/``queued``/``sending``/``cancelled``/``expired``
  (an email is never sent after its job's send_by); and the job's
  own status and counts against its emails.
* ``unknown``: emails that became ``unknown`` during the scenario; never more than the
  sends in flight at the faults (``in_flight``), and each one of them when the scenario
  knows which emails were in flight; ``resolved``: those of them that ended ``sent``
  without an operator's resend (a late confirmation, or SES's own ``Send`` events).
* metrics: the database gauges (``delivery_emails{status}``) of the scraped processes
  that export them against the database; while a fleet is live in the database
  (``delivery_instance``) exactly one scraped process exports them (its leader: the others
  defer to it), else every one does (each is its own leader). And, when asked, the summed
  ``delivery_emails_sent_total``.

Each check appends one JSON row to the results file (see ``tests/faults/conftest.py``).
"""

from __future__ import annotations

import json
import time
import urllib.parse
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pymysql
from prometheus_client.parser import text_string_to_metric_families

from delivery_server.fleet import BEAT_SECONDS, EXPIRE_BEATS
from tests.integration.harness import moto_sent

FLAGGED = frozenset({"failed", "unknown", "suppressed", "cancelled", "expired"})
NOT_SENT = frozenset(
    {"failed", "pending", "queued", "sending", "cancelled", "suppressed", "expired"}
)
EMAIL_STATUSES = (
    "pending",
    "queued",
    "sending",
    "sent",
    "failed",
    "suppressed",
    "cancelled",
    "expired",
    "unknown",
)
_SHOWN = 10  # addresses listed per problem in a failure message


def connect(database_url: str) -> pymysql.connections.Connection:
    """A direct autocommit connection (never through a fault proxy) to a ``mysql://`` URL."""
    url = urllib.parse.urlsplit(database_url)
    return pymysql.connect(
        host=url.hostname or "127.0.0.1",
        port=url.port or 3306,
        user=urllib.parse.unquote(url.username or "root"),
        password=urllib.parse.unquote(url.password or ""),
        database=url.path.lstrip("/"),
        autocommit=True,
    )


@dataclass(frozen=True)
class EmailRow:
    id: int
    to_address: str
    status: str


def email_rows(database_url: str, job_id: int) -> list[EmailRow]:
    conn = connect(database_url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT id, to_address, status FROM delivery_email WHERE job_id = %s", (job_id,)
            )
            return [EmailRow(int(i), str(a), str(s)) for i, a, s in cur.fetchall()]
    finally:
        conn.close()


def live_fleet(database_url: str, expire_seconds: float = BEAT_SECONDS * EXPIRE_BEATS) -> int:
    """Processes of the fleet (``delivery_instance``) seen within the expiry, by the
    database's clock (the servers write their own UTC clock, the same machine's)."""
    conn = connect(database_url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT COUNT(*) FROM delivery_instance "
                "WHERE last_seen >= UTC_TIMESTAMP(6) - INTERVAL %s MICROSECOND",
                (int(expire_seconds * 1_000_000),),
            )
            row = cur.fetchone()
    finally:
        conn.close()
    return int(row[0]) if row else 0


def exporters_mismatch(texts: Sequence[str], fleet: int) -> list[str]:
    """How many of the scraped processes export the database gauges, against how many
    should: one while a fleet is live (``fleet`` > 0), every one otherwise. A handover
    could overlap for one refresh (a new leader counts before the old one's next
    refresh clears its gauges); the processes are scraped once settled, after that."""
    exporting = sum(exports_database_gauges(text) for text in texts)
    expected = 1 if fleet else len(texts)
    if not texts or exporting == expected:
        return []
    return [
        f"{exporting} of {len(texts)} processes export the database gauges, expected "
        f"{expected} ({fleet} live in the fleet)"
    ]


def job_row(database_url: str, job_id: int) -> dict[str, object]:
    conn = connect(database_url)
    try:
        with conn.cursor(pymysql.cursors.DictCursor) as cur:
            cur.execute(
                "SELECT status, total_count, sent_count, failed_count FROM delivery_job "
                "WHERE id = %s",
                (job_id,),
            )
            row = cur.fetchone()
    finally:
        conn.close()
    assert row is not None, f"job {job_id} does not exist"
    return dict(row)


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``{(sample name, sorted labels): value}`` from a Prometheus text exposition."""
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def exports_database_gauges(text: str) -> bool:
    """Whether a process exports the database gauges (the fleet's leader, or a process
    without a fleet): any ``delivery_emails`` sample."""
    return any(name == "delivery_emails" for name, _labels in metric_samples(text))


def gauge_mismatches(text: str, db_counts: dict[str, int]) -> list[str]:
    """Where a process's ``delivery_emails{status}`` gauges disagree with the database;
    none for a process that exports no database gauges (it leaves them to the leader)."""
    samples = metric_samples(text)
    if not exports_database_gauges(text):
        return []
    problems = []
    for status in EMAIL_STATUSES:
        value = samples.get(("delivery_emails", (("status", status),)))
        expected = db_counts.get(status, 0)
        if value is None or int(value) != expected:
            problems.append(f"delivery_emails{{status={status!r}}} = {value}, database {expected}")
    return problems


class UnknownNotInFlight(AssertionError):
    """An email became ``unknown`` although no send of it was in flight at a fault."""


class JobMismatch(AssertionError):
    """A job's status or counts disagree with its emails."""


class MetricsMismatch(AssertionError):
    """A process's metrics disagree with the database."""


@dataclass
class Outcome:
    """The figures of one scenario run."""

    scenario: str
    emails: int
    faults: int  # faults injected (kills, cuts, dropped answers, ...)
    fault_kind: str
    lost: int = 0
    duplicated: int = 0
    resent_unknown: int = 0
    unknown: int = 0
    resolved: int = 0
    in_flight: int | None = None
    unknown_not_in_flight: int = 0
    unexpected: int = 0
    sent_not_received: int = 0
    received_not_sent: int = 0
    unserved: int = 0
    job_status: str = ""
    job_mismatches: list[str] = field(default_factory=list)
    metrics_mismatches: list[str] = field(default_factory=list)
    seconds: float = 0.0
    details: dict[str, list[str]] = field(default_factory=dict)

    def problems(self, *, allowed_unserved: int = 0) -> dict[type[AssertionError], list[str]]:
        """Every problem found, by the class of assertion it fails."""
        found: dict[type[AssertionError], list[str]] = {
            AssertionError: [],
            UnknownNotInFlight: [],
            JobMismatch: self.job_mismatches,
            MetricsMismatch: self.metrics_mismatches,
        }
        for name in ("lost", "duplicated", "unexpected", "sent_not_received", "received_not_sent"):
            if getattr(self, name):
                found[AssertionError].append(self._describe(name))
        if self.unserved > allowed_unserved:
            found[AssertionError].append(self._describe("unserved"))
        if self.unknown_not_in_flight:
            found[UnknownNotInFlight].append(self._describe("unknown_not_in_flight"))
        if self.in_flight is not None and self.unknown > self.in_flight:
            found[UnknownNotInFlight].append(
                f"unknown = {self.unknown} > {self.in_flight} sends in flight at the faults"
            )
        return found

    def _describe(self, name: str) -> str:
        shown = ", ".join(self.details.get(name, [])[:_SHOWN])
        return f"{name} = {getattr(self, name)} ({shown})"

    def assert_clean(self, *, allowed_unserved: int = 0) -> None:
        """Fail with every problem at once and the figures, if there is any. The class
        raised is that of the most serious problem: lost, duplicated or mismatched emails
        (``AssertionError``), then ``UnknownNotInFlight``, ``JobMismatch``,
        ``MetricsMismatch`` (so that an xfail for a lesser bug cannot hide a worse one)."""
        found = self.problems(allowed_unserved=allowed_unserved)
        every = [problem for problems in found.values() for problem in problems]
        for kind, problems in found.items():
            if problems:
                raise kind(f"{self.scenario}: " + "; ".join(every) + f"\n{self.figures()}")

    def figures(self) -> dict[str, object]:
        return {
            "scenario": self.scenario,
            "emails": self.emails,
            "faults": self.faults,
            "fault_kind": self.fault_kind,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "unknown": self.unknown,
            "resolved": self.resolved,
            "in_flight": self.in_flight,
            "resent_unknown": self.resent_unknown,
            "unexpected": self.unexpected,
            "mismatches": self.sent_not_received
            + self.received_not_sent
            + len(self.job_mismatches)
            + len(self.metrics_mismatches),
            "seconds": round(self.seconds, 1),
        }

    def write(self, results: Path) -> None:
        results.parent.mkdir(parents=True, exist_ok=True)
        row = {**self.figures(), "details": {k: v[:_SHOWN] for k, v in self.details.items()}}
        with results.open("a", encoding="utf-8") as out:
            out.write(json.dumps(row) + "\n")


def _job_mismatches(job: dict[str, object], statuses: Counter[str]) -> list[str]:
    problems = []
    active = statuses["pending"] + statuses["queued"] + statuses["sending"]
    if active:
        expected = "processing"
    elif statuses["failed"] or statuses["unknown"]:
        expected = "failed"
    else:
        expected = "completed"
    if job["status"] not in (expected, "cancelled", "paused"):
        problems.append(f"job is {job['status']} but its emails say {expected} ({dict(statuses)})")
    for column, status in (("sent_count", "sent"), ("failed_count", "failed")):
        if not active and job[column] != statuses[status]:
            problems.append(f"job {column} = {job[column]}, emails {status} = {statuses[status]}")
    return problems


def _compare(
    by_address: dict[str, EmailRow], received: Counter[str], resent: set[str]
) -> dict[str, list[str]]:
    """Addresses per problem, from the database rows and moto's receipts."""
    problems: dict[str, list[str]] = {
        "lost": [],
        "duplicated": [],
        "resent_unknown": [],
        "unexpected": sorted(set(received) - set(by_address)),
        "sent_not_received": [],
        "received_not_sent": [],
        "unserved": [],
    }
    for address, row in sorted(by_address.items()):
        copies = received.get(address, 0)
        if copies == 0:
            problems["unserved"].append(address)
            if row.status not in FLAGGED:
                problems["lost"].append(address)
            if row.status == "sent":
                problems["sent_not_received"].append(address)
        elif row.status in NOT_SENT:
            problems["received_not_sent"].append(f"{address} ({row.status})")
        if copies > 1:
            if address in resent:
                problems["resent_unknown"].extend([address] * (copies - 1))
                if copies > 2:
                    problems["duplicated"].append(address)
            else:
                problems["duplicated"].append(address)

    return problems


def check(
    *,
    scenario: str,
    database_url: str,
    job_id: int,
    moto_endpoint: str,
    faults: int,
    fault_kind: str,
    started: float,
    results: Path,
    unknown_seen: Iterable[str] = (),
    resent_unknown: Collection[str] = (),
    in_flight: Collection[str] | int | None = None,
    metrics: Sequence[str] = (),
    compare_sent_counter: bool = False,
    received: Counter[str] | None = None,
) -> Outcome:
    """Compare moto's SES with the database for one job and record the figures.

    ``unknown_seen``: addresses that were ``unknown`` at some point (e.g. before a
    ``restart-failed --include-unknown``); ``resent_unknown``: the addresses resent on that
    word, whose second copy is not a duplicate; ``in_flight``: the addresses in flight at
    the faults (or just their number); ``metrics``: the ``/metrics`` texts of the processes
    that are still running; ``received``: copies per recipient that SES accepted, when
    the SES is not moto (the stand-in's log).
    """
    rows = email_rows(database_url, job_id)
    if received is None:
        received = Counter(rcpt for mail in moto_sent(moto_endpoint) for rcpt in mail.to)
    by_address = {row.to_address: row for row in rows}
    assert len(by_address) == len(rows), "test emails must have distinct addresses"
    statuses = Counter(row.status for row in rows)
    unknown = set(unknown_seen) | {row.to_address for row in rows if row.status == "unknown"}
    resent = set(resent_unknown)

    problems = _compare(by_address, received, resent)
    outcome = Outcome(
        scenario=scenario,
        emails=len(rows),
        faults=faults,
        fault_kind=fault_kind,
        lost=len(problems["lost"]),
        duplicated=len(problems["duplicated"]),
        resent_unknown=len(problems["resent_unknown"]),
        unknown=len(unknown),
        resolved=sum(by_address[a].status == "sent" for a in unknown - resent if a in by_address),
        unexpected=len(problems["unexpected"]),
        sent_not_received=len(problems["sent_not_received"]),
        received_not_sent=len(problems["received_not_sent"]),
        unserved=len(problems["unserved"]),
        seconds=time.monotonic() - started,
    )
    if isinstance(in_flight, int):
        outcome.in_flight = in_flight
    elif in_flight is not None:
        outcome.in_flight = len(in_flight)
        outside = sorted(unknown - set(in_flight))
        problems["unknown_not_in_flight"] = outside
        outcome.unknown_not_in_flight = len(outside)
    job = job_row(database_url, job_id)
    outcome.job_status = str(job["status"])
    outcome.job_mismatches = _job_mismatches(job, statuses)
    if metrics:
        outcome.metrics_mismatches += exporters_mismatch(metrics, live_fleet(database_url))
    for text in metrics:
        outcome.metrics_mismatches += gauge_mismatches(text, dict(statuses))
    if compare_sent_counter and metrics:
        sent_total = sum(
            metric_samples(text).get(("delivery_emails_sent_total", ()), 0.0) for text in metrics
        )
        if int(sent_total) != statuses["sent"]:
            outcome.metrics_mismatches.append(
                f"delivery_emails_sent_total summed = {sent_total}, database sent = "
                f"{statuses['sent']}"
            )
    outcome.details = {name: found for name, found in problems.items() if found}
    outcome.write(results)
    return outcome

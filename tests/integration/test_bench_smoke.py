"""The benchmark still runs end to end (``bench.run``, as ``make bench-smoke`` runs it).

No timing is asserted: CI machines are noisy. What is asserted is what the benchmark
itself promises: every email of our job was sent exactly once, with tracking on and off;
with tracking on, every SES event the stand-in published (``Send`` and ``Delivery`` or
``Bounce`` per email) was recorded once before the servers stopped; the floor and both
peers finished, and the last line is a well-formed RESULT line. Needs MariaDB and Redis (the
Celery peer's broker) on this machine, and the ``bench`` extra (celery, psutil).
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.mariadb, pytest.mark.timeout(240)]

REPO = Path(__file__).resolve().parents[2]
RESULT = re.compile(
    r"RESULT emails_per_s=(?P<rate>\d+\.\d) ratio_to_floor=(?P<floor>\d+\.\d\d) "
    r"ratio_to_celery=(?P<celery>\d+\.\d\d) peak_rss_mb=(?P<rss>\d+\.\d) "
    r"first_send_s=(?P<first>\d+\.\d\d) "
    r"events_per_s=(?P<events>\d+\.\d) emails_per_s_tracking_off=(?P<off>\d+\.\d) "
    r"db_ms_per_email=(?P<db_ms>\d+\.\d{3}) "
    r"db_round_trips_per_email=(?P<db_trips>\d+\.\d{3})"
)
EMAILS, PEER_EMAILS = 200, 60


def test_bench_smoke_sends_every_email_exactly_once(mariadb_server: str, tmp_path: Path) -> None:
    suffix = secrets.token_hex(4)
    report = tmp_path / "report.json"
    command = [
        sys.executable, "-m", "bench.run",
        "--emails", str(EMAILS),
        "--peer-emails", str(PEER_EMAILS),
        "--floor-calls", "300",
        "--database", f"delivery_bench_smoke_{suffix}",
        "--peer-database", f"delivery_bench_smoke_peers_{suffix}",
        "--redis-db", "12",
        "--attachments-dir", str(tmp_path / "attachments"),
        "--timeout", "120",
        "--json-out", str(report),
    ]  # fmt: skip

    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=220)

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    assert RESULT.fullmatch(last), last
    figures = json.loads(report.read_text())
    ours = figures["ours"]
    assert ours["exactly_once"]
    assert ours["sent"] == ours["simulator_accepted"] == ours["db_distinct_message_ids"] == EMAILS
    assert ours["simulator_duplicates"] == 0
    assert ours["db_attempts"] == EMAILS  # one attempt each: nothing was retried or resent
    # MariaDB counted our servers' statements (their own user), not the bench's polling.
    assert ours["db_statements"]["statements"] > 0
    assert ours["db_round_trips_per_email"] > 0
    assert ours["tracking"]
    assert ours["tracking_complete"], ours
    # Two events per email (the bench's addresses are ordinary ones: no simulator outcomes).
    assert ours["events_recorded"] == ours["events_published"] == 2 * EMAILS
    assert ours["events_by_type"]["Send"] == EMAILS
    bounced = ours["bounced_by_rate"]
    expected = {"delivered": EMAILS - bounced, "bounced": bounced}
    assert ours["delivery_counts"] == {status: n for status, n in expected.items() if n}
    off = figures["ours_tracking_off"]
    assert not off["tracking"]
    assert off["exactly_once"]
    assert off["sent"] == off["simulator_accepted"] == off["db_distinct_message_ids"] == EMAILS
    assert off["db_attempts"] == EMAILS
    assert figures["floor"]["failures"] == 0
    for peer in ("celery", "eed"):
        assert figures["peers"][peer]["sent"] == PEER_EMAILS, figures["peers"][peer]

"""The Grafana dashboard and the Prometheus alert rules (deploy/, issue 12) query only
metrics a running server exports: a server sends a small job through the outbox (so the
labelled counters have samples too), its /metrics is scraped, and every metric name and
grouping label in every query must be there."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from delivery_server.models import JobStatus
from delivery_server.settings import load_settings
from tests.integration.harness import (
    RunningServer,
    create_job,
    customer,
    http_get,
    prepared_store,
    wait_for_job,
)

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "delivery.json"
RULES = sorted((ROOT / "deploy" / "prometheus").glob("*.rules.yml"))
METRIC = re.compile(r"\b(delivery_[a-z_]+)\b")
GROUPING = re.compile(r"\bby\s*\(([^)]*)\)")
MATCHER = re.compile(r"(delivery_[a-z_]+)\{([^}]*)\}")
# Suffixes the exposition adds to a family's name, by type.
SAMPLE_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gauge": ("",),
}


def dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (f"dashboard panel {panel['title']!r}", target["expr"])
        for panel in dashboard["panels"]
        for target in panel["targets"]
    ]


def rule_queries() -> list[tuple[str, str]]:
    return [
        (f"{path.name} alert {rule['alert']}", str(rule["expr"]))
        for path in RULES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    ]


class Exported:
    """The sample names and their label names of one /metrics scrape."""

    def __init__(self, text: str) -> None:
        self.labels: dict[str, set[str]] = {}
        for family in text_string_to_metric_families(text):
            for suffix in SAMPLE_SUFFIXES.get(family.type, ("",)):
                self.labels.setdefault(family.name + suffix, set())
            for sample in family.samples:
                names = self.labels.setdefault(sample.name, set())
                names.update(sample.labels)

    def check(self, where: str, expr: str) -> list[str]:
        problems = []
        metrics = set(METRIC.findall(expr))
        # Prometheus's own `up` (the scrape failed) is the one other series a rule may read.
        if not metrics and not re.search(r"\bup\b", expr):
            problems.append(f"{where}: names no delivery_ metric")
        for metric in metrics - set(self.labels):
            problems.append(f"{where}: {metric} is not exported")
        used = {label.strip() for group in GROUPING.findall(expr) for label in group.split(",")}
        for _metric, matchers in MATCHER.findall(expr):
            used |= {m.split("=")[0].strip() for m in matchers.split(",") if m.strip()}
        known = set().union(*(self.labels.get(m, set()) for m in metrics)) | {"le", "instance"}
        problems += [f"{where}: no metric has the label {label!r}" for label in used - known]
        return problems


async def scrape(server: RunningServer) -> str:
    status, text = await http_get(server.http_port, "/metrics")
    assert status == 200
    return text


async def test_every_dashboard_and_alert_query_names_exported_metrics(tmp_path: Path) -> None:
    settings = load_settings(
        database_url=f"sqlite:///{tmp_path / 'd.db'}",
        outbox_dir=tmp_path / "outbox",
        http_port=0,
        log_level="warning",
        poll_interval=0.1,
    )
    async with prepared_store(settings) as store, RunningServer(settings) as server:
        job = await create_job(store, [customer(n) for n in range(3)])
        assert (await wait_for_job(store, job.id)).status is JobStatus.COMPLETED
        # The outbox reports each delivery to the tracker, which counts it a little later.
        deadline = time.monotonic() + 30
        while 'delivery_events_total{type="Delivery"}' not in (text := await scrape(server)):
            assert time.monotonic() < deadline, "the tracker counted no delivery event"
            await asyncio.sleep(0.05)
    exported = Exported(text)
    assert "outcome" in exported.labels["delivery_send_attempts_total"], "the job was sent"
    queries = dashboard_queries() + rule_queries()
    assert len(queries) > 20
    assert RULES
    problems = [problem for where, expr in queries for problem in exported.check(where, expr)]
    assert problems == []


def test_the_check_refuses_a_metric_or_label_the_server_does_not_export() -> None:
    exported = Exported(
        '# TYPE delivery_jobs gauge\ndelivery_jobs{status="failed"} 1\n'
        "# TYPE delivery_send_attempts counter\n"
    )
    assert exported.check("q", 'max by (status) (delivery_jobs{status="failed"})') == []
    assert exported.check("q", "sum(rate(delivery_send_attempts_total[5m]))") == []
    assert exported.check("q", "delivery_jobs_total") == ["q: delivery_jobs_total is not exported"]
    assert exported.check("q", "sum by (queue) (delivery_jobs)") == [
        "q: no metric has the label 'queue'"
    ]
    assert exported.check("q", "vector(1)") == ["q: names no delivery_ metric"]

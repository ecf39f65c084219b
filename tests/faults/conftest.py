"""Fixtures of the fault-injection suite, its ``faults`` marker and the figures it prints.

Each scenario appends one JSON row of figures to ``FAULTS_RESULTS`` (default: a file in
pytest's base temporary directory); the rows of this session are printed as a table at
the end of the run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.stand_in import SimulatorProcess
from tests.faults.rig import FaultRig, faults_emails
from tests.faults.stand_in_rig import EVENTS_QUEUE, StandInRig

RESULTS_KEY = pytest.StashKey[tuple[Path, int]]()
COLUMNS = (
    "scenario",
    "emails",
    "faults",
    "lost",
    "duplicated",
    "unknown",
    "resolved",
    "in_flight",
    "resent_unknown",
    "seconds",
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "faults: fault-injection scenarios (real processes, proxies, MariaDB, moto)"
    )


@pytest.fixture(scope="session")
def faults_results(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Where the figures go: ``FAULTS_RESULTS``, else pytest's base temporary directory."""
    configured = os.environ.get("FAULTS_RESULTS")
    path = Path(configured) if configured else tmp_path_factory.getbasetemp() / "faults.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    offset = path.stat().st_size if path.exists() else 0
    request.config.stash[RESULTS_KEY] = (path, offset)
    return path


@pytest.fixture
def rig(
    request: pytest.FixtureRequest,
    mariadb_url: str,
    moto: str,
    tmp_path: Path,
    faults_results: Path,
) -> Iterator[FaultRig]:
    scenario = request.node.name.removeprefix("test_")
    fault_rig = FaultRig(scenario, mariadb_url, moto, tmp_path, faults_results)
    try:
        yield fault_rig
    finally:
        fault_rig.close()


@pytest.fixture
def stand_in_rig(
    request: pytest.FixtureRequest,
    mariadb_url: str,
    aws_env: None,
    tmp_path: Path,
    faults_results: Path,
) -> Iterator[StandInRig]:
    """A rig on a stand-in process of its own that publishes SES events (no SES latency:
    the fault proxy delays the sends), keeping every accepted email for the checker."""
    scenario = request.node.name.removeprefix("test_")
    keep = str(max(10_000, 3 * faults_emails()))
    stand_in = SimulatorProcess(
        ses_latency=0.0, events_queue=EVENTS_QUEUE, extra_args=("--keep-sent", keep)
    )
    with stand_in:
        fault_rig = StandInRig(scenario, mariadb_url, stand_in, tmp_path, faults_results)
        try:
            yield fault_rig
        finally:
            fault_rig.close()  # first: its proxy waits for the sends the stand-in answers


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    stored = terminalreporter.config.stash.get(RESULTS_KEY, None)
    if stored is None or not stored[0].exists():
        return
    path, offset = stored
    with path.open(encoding="utf-8") as results:
        results.seek(offset)
        rows = [json.loads(line) for line in results if line.strip()]
    if not rows:
        return
    terminalreporter.section("fault scenarios")
    widths = [max(len(c), *(len(str(row.get(c))) for row in rows)) for c in COLUMNS]
    terminalreporter.write_line("  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True)))
    for row in rows:
        cells = (str(row.get(c)).ljust(w) for c, w in zip(COLUMNS, widths, strict=True))
        terminalreporter.write_line("  ".join(cells))
    terminalreporter.write_line(f"(rows appended to {path})")

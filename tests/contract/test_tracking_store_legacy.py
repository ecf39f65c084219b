"""The ``ports.TrackingStore`` contract on an upstream system's own tables (DESIGN §11):
the suite of ``test_tracking_store.py`` again, with the stores and upgrades of
``test_store_legacy.py`` (the old job manager's tables, ``config/schema-map.toml``)."""

from __future__ import annotations

import pytest

from tests.contract import test_store as store_suite
from tests.contract import test_tracking_store as suite
from tests.contract.test_store_legacy import database_url, other_store, run_suite_mapped, store

__all__ = ["database_url", "other_store", "store"]  # fixtures, used by name

pytestmark = pytest.mark.timeout(60)

# Our own migration history, not the mapping: it stays in test_tracking_store.py.
NOT_ABOUT_THE_MAP = {"test_a_database_at_0002_gets_the_tracking_schema_and_keeps_its_rows"}
globals().update(
    {
        name: test
        for name, test in vars(suite).items()
        if name.startswith("test_") and name not in NOT_ABOUT_THE_MAP
    }
)


@pytest.fixture(autouse=True)
def _mapped(monkeypatch: pytest.MonkeyPatch) -> None:
    run_suite_mapped(monkeypatch, suite)
    run_suite_mapped(monkeypatch, store_suite)

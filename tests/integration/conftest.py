from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.fault_proxy import FaultProxy


@pytest.fixture
def proxy(moto: str) -> Iterator[FaultProxy]:
    """A fault-injecting proxy in front of a freshly reset moto server."""
    fault_proxy = FaultProxy(moto).start()
    yield fault_proxy
    fault_proxy.close()

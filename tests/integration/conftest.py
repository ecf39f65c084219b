from __future__ import annotations

from collections.abc import Iterator

import pytest

from delivery_server.cli import main
from tests.support.cli_runner import Cli, Result
from tests.support.fault_proxy import FaultProxy
from tests.support.servers import ServerProcess


@pytest.fixture
def proxy(moto: str) -> Iterator[FaultProxy]:
    """A fault-injecting proxy in front of a freshly reset moto server."""
    fault_proxy = FaultProxy(moto).start()
    yield fault_proxy
    fault_proxy.close()


@pytest.fixture
def servers() -> Iterator[list[ServerProcess]]:
    """Server processes a test starts; whatever is still running is stopped after it."""
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.stop()


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    """Run one command in-process; return its exit code and output."""

    def run(*args: str) -> Result:
        capsys.readouterr()
        code = main(list(args))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run

"""Canary tests over captured logs (issue 4, item 5; DESIGN §9): recipient addresses,
variables, subjects and bodies never appear in a log line, nor do the database or SMTP
passwords.

Each personal field of a job carries its own random canary string; the job is sent with
failing emails on purpose (missing variable, invalid addresses, provider errors that quote
the address, dropped answers), at debug level, through a server process (stdout and stderr
captured) and through in-process ``serve()`` (structlog and standard logging captured).
"""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import structlog

from delivery_server.logging import configure_logging
from delivery_server.models import JobStatus, NewEmail, Template
from delivery_server.settings import load_settings
from tests.conftest import free_port, wait_for
from tests.integration.harness import (
    RunningServer,
    aws_settings,
    create_job,
    create_sqs_queue,
    prepared_store,
    verify_sender,
    wait_for_job,
)
from tests.support.fault_proxy import FaultProxy
from tests.support.servers import ServerProcess, server_env
from tests.support.smtp_sink import SinkHandler, smtp_sink

pytestmark = pytest.mark.timeout(180)


class Canaries:
    """One random marker per personal field, and a job that carries them everywhere."""

    def __init__(self) -> None:
        token = secrets.token_hex(4)
        self.fields = {
            name: f"cnry{name}{token}"
            for name in ("addr", "bad", "name", "balance", "account", "subject", "body")
        }
        self.template = Template(
            name="canary",
            locale="en",
            version=0,
            subject="Statement " + self.fields["subject"] + " for {{ name }}",
            text_body="Dear {{ name }}, " + self.fields["body"] + " {{ balance }} {{ account }}\n",
            html_body="<p>{{ name }} " + self.fields["body"] + " {{ balance }}</p>",
        )

    def address(self, n: int) -> str:
        return f"{self.fields['addr']}-{n}@customers.example"

    def emails(self, count: int) -> list[NewEmail]:
        """``count`` good emails, then one missing a variable, then invalid addresses."""
        good = [
            NewEmail(
                to_address=self.address(n),
                variables={
                    "name": f"{self.fields['name']} {n}",
                    "balance": f"{self.fields['balance']}-{n}",
                    "account": f"{self.fields['account']}{n:04d}",
                },
            )
            for n in range(count)
        ]
        missing_variable = NewEmail(
            to_address=self.address(count),
            variables={"name": self.fields["name"], "account": self.fields["account"]},
        )
        bad = self.fields["bad"]
        invalid = [
            NewEmail(to_address=address, variables=good[0].variables)
            for address in (
                f"{bad}@@customers.example",
                f"{bad}x@customers..example",
                f"{bad} y@customers.example",
                f"{bad}z@customers.example\r\nBcc: {bad}@evil.example",
            )
        ]
        return [*good, missing_variable, *invalid]

    def found_in(self, text: str) -> list[str]:
        """The canary fields that appear in ``text`` (case-insensitively)."""
        lowered = text.lower()
        return [name for name, marker in self.fields.items() if marker.lower() in lowered]


@pytest.fixture
def canaries() -> Canaries:
    return Canaries()


def _provider_faults(proxy: FaultProxy, canaries: Canaries) -> None:
    """500s (retried, then failed), a rejection, a throttle, a dropped answer (unknown)."""
    proxy.faults[canaries.address(0)] = 500
    proxy.faults[canaries.address(1)] = 400
    proxy.faults[canaries.address(2)] = 429
    proxy.fault_budget[canaries.address(2)] = 1
    proxy.drop_responses.add(canaries.address(3))


async def test_server_process_logs_carry_no_personal_data(
    mariadb_url: str,
    proxy: FaultProxy,
    tmp_path: Path,
    canaries: Canaries,
    servers: list[ServerProcess],
) -> None:
    verify_sender(proxy.upstream)
    queue_url = create_sqs_queue(proxy.upstream)
    settings = aws_settings(mariadb_url, proxy.endpoint, queue_url, tmp_path)
    env = server_env(
        mariadb_url,
        proxy.endpoint,
        queue_url,
        DELIVERY_LOG_LEVEL="debug",
        DELIVERY_RECONCILE_INTERVAL="0.5",
    )
    _provider_faults(proxy, canaries)
    async with prepared_store(settings) as store:
        server = ServerProcess(env, tmp_path / "server.log")
        servers.append(server)
        wait_for(server.healthy, timeout=60, what="server health")
        job = await create_job(store, canaries.emails(12), template=canaries.template)
        done = await wait_for_job(store, job.id, timeout=120)
        summary = await store.job_summary(job.id)
    assert server.stop() == 0
    # The job really went through every failure path.
    assert done.status == JobStatus.FAILED
    assert summary.counts["sent"] == 9, summary.counts  # 12 good - 500 - 400 - dropped
    assert summary.counts["failed"] == 7, summary.counts  # 500, 400, variable, 4 addresses
    assert summary.counts["unknown"] == 1, summary.counts
    logs = server.log_path.read_text()
    for event in ("email_failed", "email_retry", "email_unknown", "job_finished"):
        assert event in logs, f"no {event} line: the scenario did not log what it should"
    assert canaries.found_in(logs) == [], _lines_with(logs, canaries)


@pytest.mark.parametrize("sender", ["ses", "smtp"])
async def test_in_process_structlog_output_carries_no_personal_data(
    sender: str,
    mariadb_url: str,
    proxy: FaultProxy,
    tmp_path: Path,
    canaries: Canaries,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    verify_sender(proxy.upstream)
    queue_url = create_sqs_queue(proxy.upstream)
    sink_handler = SinkHandler()
    # SMTP servers quote the address in their replies: the product must not repeat them.
    sink_handler.rcpt_replies[canaries.address(0)] = (
        f"550 5.1.1 <{canaries.address(0)}>: no such user here"
    )
    sink_handler.rcpt_replies[canaries.address(1)] = (
        f"451 4.3.0 <{canaries.address(1)}>: try again later"
    )
    with smtp_sink(sink_handler) as sink:
        overrides: dict[str, object] = {
            "log_level": "debug",
            "log_format": "json",
            "reconcile_interval": 0.5,
        }
        if sender == "smtp":
            overrides.update(sender="smtp", smtp_url=f"smtp://127.0.0.1:{sink.port}")
        else:
            _provider_faults(proxy, canaries)
        settings = aws_settings(mariadb_url, proxy.endpoint, queue_url, tmp_path, **overrides)
        caplog.set_level(logging.WARNING)  # what configure_logging sets for libraries
        configure_logging(settings)
        try:
            async with prepared_store(settings) as store, RunningServer(settings):
                job = await create_job(store, canaries.emails(8), template=canaries.template)
                done = await wait_for_job(store, job.id, timeout=120)
        finally:
            structlog.reset_defaults()
    assert done.status == JobStatus.FAILED
    captured = capsys.readouterr()
    logs = captured.out + captured.err + "\n".join(r.getMessage() for r in caplog.records)
    assert "email_failed" in logs
    assert canaries.found_in(logs) == [], _lines_with(logs, canaries)


# -- secrets ----------------------------------------------------------------------------


def _closed_port() -> int:
    return free_port()  # nothing listens there


def _db_url_with(password: str, host: str) -> str:
    return f"mysql://root:{password}@{host}/delivery_canary"


def _run_cli(args: list[str], env: dict[str, str], tmp_path: Path) -> tuple[int, str]:
    env = {"DELIVERY_HTTP_PORT": str(free_port()), "DELIVERY_LOG_FORMAT": "json", **env}
    result = subprocess.run(
        [sys.executable, "-m", "delivery_server", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize(
    "host",
    [pytest.param("closed", id="nothing-listening"), pytest.param("mariadb", id="wrong-password")],
)
def test_database_password_never_logged(
    host: str, mariadb_server: str, proxy: FaultProxy, tmp_path: Path
) -> None:
    """A server (SQS queue, so it keeps running and retrying) and the admin commands on a
    database URL whose password is refused or whose host does not answer."""
    password = "cnrypw" + secrets.token_hex(6)
    address = f"127.0.0.1:{_closed_port()}" if host == "closed" else mariadb_server
    url = _db_url_with(password, address)
    queue_url = create_sqs_queue(proxy.upstream)
    env = server_env(url, proxy.endpoint, queue_url, DELIVERY_LOG_LEVEL="debug")
    server = ServerProcess(env, tmp_path / "server.log")
    try:
        wait_for(
            lambda: "publisher_poll_failed" in server.log_path.read_text(),
            timeout=60,
            what="the publisher to fail on the database",
        )
    finally:
        server.stop()
    outputs = {"run (sqs)": server.log_path.read_text()}
    for args in (["run"], ["db", "upgrade"], ["jobs", "list"], ["jobs", "show", "1"]):
        code, output = _run_cli(args, {"DELIVERY_DATABASE_URL": url}, tmp_path)
        assert code == 1, output  # a failure, explained on one line
        outputs[" ".join(args)] = output
    leaks = [name for name, text in outputs.items() if password in text]
    assert leaks == [], f"the database password appears in the output of {leaks}"


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("mysql://root:{pw}@127.0.0.1:notaport/db", id="bad-port"),
        pytest.param("postgres://root:{pw}@127.0.0.1/db", id="bad-scheme"),
        pytest.param("mysql://root:{pw}@[127.0.0.1/db", id="bad-host"),
    ],
)
def test_malformed_database_url_password_never_printed(url: str, tmp_path: Path) -> None:
    password = "cnrypw" + secrets.token_hex(6)
    code, output = _run_cli(["run"], {"DELIVERY_DATABASE_URL": url.format(pw=password)}, tmp_path)
    assert code != 0, output
    assert password not in output, output


def test_malformed_database_url_is_a_configuration_error(tmp_path: Path) -> None:
    """Exit 2 and a line naming the setting (DESIGN §6), not a driver's ValueError."""
    url = "mysql://root:secret@127.0.0.1:notaport/db"
    code, output = _run_cli(["run"], {"DELIVERY_DATABASE_URL": url}, tmp_path)
    assert code == 2, output
    assert "DELIVERY_DATABASE_URL" in output, output


@pytest.mark.parametrize("smtp", ["closed", "no-auth-server"])
async def test_smtp_password_never_logged(
    smtp: str, mariadb_url: str, tmp_path: Path, servers: list[ServerProcess]
) -> None:
    """A server whose SMTP login cannot happen (nothing listens; the server offers no AUTH)
    keeps failing its sends: its logs never show the SMTP password."""
    password = "cnrysmtp" + secrets.token_hex(6)
    canaries = Canaries()
    with smtp_sink() as sink:
        port = _closed_port() if smtp == "closed" else sink.port
        smtp_url = f"smtp://mailer:{password}@127.0.0.1:{port}"
        env = {
            "DELIVERY_DATABASE_URL": mariadb_url,
            "DELIVERY_SENDER": "smtp",
            "DELIVERY_SMTP_URL": smtp_url,
            "DELIVERY_LOG_FORMAT": "json",
            "DELIVERY_LOG_LEVEL": "debug",
            "DELIVERY_POLL_INTERVAL": "0.1",
            "DELIVERY_RETRY_BASE_DELAY": "0.2",
        }
        async with prepared_store(load_settings(database_url=mariadb_url)) as store:
            await create_job(store, canaries.emails(2)[:2], template=canaries.template)
            server = ServerProcess(env, tmp_path / "server.log")
            servers.append(server)
            # Any line about one email (retry, failure, pause, unreachable) follows a send
            # that failed at the connection or at the login.
            wait_for(
                lambda: '"email_id"' in server.log_path.read_text(),
                timeout=60,
                what="a failed SMTP send",
            )
            server.stop()
    logs = server.log_path.read_text()
    assert password not in logs, _lines_with(logs, None, password)
    assert canaries.found_in(logs) == [], _lines_with(logs, canaries)


def _lines_with(logs: str, canaries: Canaries | None, secret: str = "") -> str:
    markers = [secret] if secret else []
    if canaries is not None:
        markers += list(canaries.fields.values())
    shown = [line for line in logs.splitlines() if any(m.lower() in line.lower() for m in markers)]
    return "leaking lines:\n" + "\n".join(shown[:20])

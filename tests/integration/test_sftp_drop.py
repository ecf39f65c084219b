"""The sftp drop sender against a real asyncssh SFTP server on loopback: host keys
verified, files renamed into place, idempotent retries, failures mapped."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncssh
import pytest

from delivery_server.adapters.sftp_drop import (
    SftpCredentials,
    SftpDropSender,
    open_sftp_drop_sender,
)
from delivery_server.drop_targets import SftpTarget, parse_sftp_target
from delivery_server.drops import DropForm, drop_files
from delivery_server.errors import PermanentError, RetryableError
from delivery_server.models import Attachment, EmailStatus, JobStatus, NewEmail
from tests.conftest import free_port
from tests.integration.harness import (
    FROM_ADDRESS,
    STATEMENT,
    RunningServer,
    aws_settings,
    create_sqs_queue,
    customer,
    prepared_store,
    wait_for_job,
)
from tests.support.sftp_server import PASSWORD, SftpServer, running_sftp_server

pytestmark = pytest.mark.timeout(90)

PDF = b"%PDF-1.4\n" + bytes(range(256)) * 64 + b"\n%%EOF\n"
KEY = "customers/jane roe"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[SftpServer]:
    with running_sftp_server(tmp_path / "served") as running:
        yield running


@pytest.fixture
def known_hosts(tmp_path: Path, server: SftpServer) -> Path:
    path = tmp_path / "known_hosts"
    path.write_text(server.known_hosts_line())
    return path


def target_of(server: SftpServer, directory: str = "/drops") -> SftpTarget:
    return parse_sftp_target(server.target(directory), frozenset({server.host}))


def drop(target: SftpTarget, key: str = KEY, pdf: bytes = PDF) -> DropForm[SftpTarget]:
    files = drop_files(
        key, [Attachment("statement.pdf", "application/pdf", pdf)], "Dear Jane,", None
    )
    return DropForm("sftp", job_id=3, email_id=7, target=target, files=files)


@pytest.fixture
async def sender(known_hosts: Path) -> AsyncIterator[SftpDropSender]:
    credentials = SftpCredentials(password=PASSWORD)
    async with open_sftp_drop_sender(credentials, known_hosts=known_hosts, timeout=5) as opened:
        yield opened


def served_files(server: SftpServer) -> dict[str, bytes]:
    return {
        p.relative_to(server.root).as_posix(): p.read_bytes()
        for p in server.root.rglob("*")
        if p.is_file()
    }


async def test_a_drop_is_uploaded_under_dir_and_key(
    sender: SftpDropSender, server: SftpServer
) -> None:
    provider_id = await sender.send(drop(target_of(server)))

    assert served_files(server) == {
        f"drops/{KEY}/statement.pdf": PDF,
        f"drops/{KEY}/body.txt": b"Dear Jane,",
    }
    assert provider_id.startswith("sftp-")
    assert "jane" not in provider_id


async def test_files_are_written_under_a_temporary_name_then_renamed(
    sender: SftpDropSender, server: SftpServer
) -> None:
    await sender.send(drop(target_of(server)))

    opened = [op[1] for op in server.state.ops if op[0] == "open"]
    renamed = [op for op in server.state.ops if op[0] == "posix_rename"]
    # The final names are never opened for writing: they appear whole, by a rename.
    assert all(Path(name).name.startswith(".part-") for name in opened)
    assert sorted(op[2] for op in renamed) == [
        f"drops/{KEY}/body.txt",
        f"drops/{KEY}/statement.pdf",
    ]
    assert sorted(op[1] for op in renamed) == sorted(opened)


async def test_a_retried_drop_replaces_the_same_files_and_leaves_no_temporary(
    sender: SftpDropSender, server: SftpServer
) -> None:
    first = await sender.send(drop(target_of(server)))
    second = await sender.send(drop(target_of(server)))

    assert second == first
    assert sorted(served_files(server)) == [f"drops/{KEY}/body.txt", f"drops/{KEY}/statement.pdf"]
    # One login, one connection, shared by both drops.
    assert server.state.connections == 1


async def test_a_key_login_works_and_the_login_directory_is_the_default(
    known_hosts: Path, server: SftpServer
) -> None:
    credentials = SftpCredentials(private_key=server.client_key)
    async with open_sftp_drop_sender(credentials, known_hosts=known_hosts, timeout=5) as sender:
        await sender.send(drop(target_of(server, "")))

    assert f"{KEY}/statement.pdf" in served_files(server)


async def test_a_changed_host_key_is_refused_and_nothing_is_written(
    tmp_path: Path, server: SftpServer
) -> None:
    changed = tmp_path / "changed_known_hosts"
    changed.write_text(server.known_hosts_line(asyncssh.generate_private_key("ssh-ed25519")))
    credentials = SftpCredentials(password=PASSWORD)
    async with open_sftp_drop_sender(credentials, known_hosts=changed, timeout=5) as sender:
        with pytest.raises(PermanentError, match="host key not verified"):
            await sender.send(drop(target_of(server)))

    assert served_files(server) == {}
    assert server.state.ops == []


async def test_an_unknown_host_is_refused(tmp_path: Path, server: SftpServer) -> None:
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    credentials = SftpCredentials(password=PASSWORD)
    async with open_sftp_drop_sender(credentials, known_hosts=empty, timeout=5) as sender:
        with pytest.raises(PermanentError, match="host key not verified"):
            await sender.send(drop(target_of(server)))


async def test_a_refused_login_is_permanent_and_quotes_nothing(
    known_hosts: Path, server: SftpServer
) -> None:
    credentials = SftpCredentials(password="wrong password")
    async with open_sftp_drop_sender(credentials, known_hosts=known_hosts, timeout=5) as sender:
        with pytest.raises(PermanentError, match="login refused") as caught:
            await sender.send(drop(target_of(server)))

    assert "wrong" not in str(caught.value)
    assert "partner" not in str(caught.value)


async def test_an_unreachable_host_is_retryable(known_hosts: Path) -> None:
    port = free_port()
    target = parse_sftp_target(f"sftp://partner@127.0.0.1:{port}/drops", frozenset({"127.0.0.1"}))
    credentials = SftpCredentials(password=PASSWORD)
    async with open_sftp_drop_sender(credentials, known_hosts=known_hosts, timeout=5) as sender:
        with pytest.raises(RetryableError, match="unreachable"):
            await sender.send(drop(target))


async def test_a_cut_connection_is_replaced_by_a_new_one(
    sender: SftpDropSender, server: SftpServer
) -> None:
    await sender.send(drop(target_of(server)))
    server.cut_connections()

    # The pooled connection is gone: the next drop either notices before it starts and
    # reconnects, or fails retryably and the one after reconnects. Never permanently.
    try:
        await sender.send(drop(target_of(server), pdf=PDF + b"v2"))
    except RetryableError:
        await sender.send(drop(target_of(server), pdf=PDF + b"v2"))

    assert served_files(server)[f"drops/{KEY}/statement.pdf"] == PDF + b"v2"
    assert server.state.connections == 2


async def test_a_path_the_server_refuses_is_permanent(
    sender: SftpDropSender, server: SftpServer
) -> None:
    server.state.read_only.add("drops")

    with pytest.raises(PermanentError, match="sftp upload refused"):
        await sender.send(drop(target_of(server)))
    assert served_files(server) == {}


@pytest.mark.parametrize(("max_uploads", "connections"), [(1, 3), (2, 2)])
async def test_the_pool_keeps_no_more_connections_than_uploads(
    known_hosts: Path, server: SftpServer, max_uploads: int, connections: int
) -> None:
    # Two logins to one server: by address, and by name (known_hosts matches either).
    by_address = target_of(server)
    by_name = parse_sftp_target(
        f"sftp://partner@localhost:{server.port}/drops", frozenset({"localhost"})
    )
    credentials = SftpCredentials(password=PASSWORD)
    async with open_sftp_drop_sender(
        credentials, known_hosts=known_hosts, max_uploads=max_uploads, timeout=5
    ) as sender:
        for target in (by_address, by_name, by_address):
            await sender.send(drop(target))

    # With room for one, the first login's connection was closed for the second one,
    # so the third drop logged in again; with room for two, both stayed open.
    assert server.state.connections == connections


@pytest.mark.moto
async def test_a_server_uploads_a_jobs_drops_and_a_bad_path_fails_alone(
    moto: str, mariadb_url: str, tmp_path: Path, server: SftpServer, known_hosts: Path
) -> None:
    settings = aws_settings(
        mariadb_url,
        moto,
        create_sqs_queue(moto),
        tmp_path,
        drop_sftp_hosts=server.host,
        sftp_known_hosts=known_hosts,
        sftp_password=PASSWORD,
    )
    async with prepared_store(settings) as store:
        await store.add_template(STATEMENT)
        job = await store.create_job(
            "drops", STATEMENT.name, FROM_ADDRESS, channel="sftp", target=server.target("/in")
        )
        variables = customer(1).variables
        await store.add_emails(
            job.id,
            [NewEmail(f"customers/{n}", variables) for n in (1, 2)]
            # Inserted past the import's checks, as an upstream system might.
            + [NewEmail("/etc/cron.d/x", variables)],
        )
        await store.set_job_status(job.id, JobStatus.PROCESSING)
        async with RunningServer(settings):
            finished = await wait_for_job(store, job.id)
        summary = await store.job_summary(job.id)

    assert finished.status is JobStatus.FAILED
    assert summary.counts[EmailStatus.SENT] == 2
    assert summary.counts[EmailStatus.FAILED] == 1
    assert sorted(served_files(server)) == [
        f"in/customers/{n}/{name}" for n in (1, 2) for name in ("body.html", "body.txt")
    ]


async def test_without_a_known_hosts_setting_the_users_known_hosts_is_checked(
    tmp_path: Path, server: SftpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    credentials = SftpCredentials(password=PASSWORD)
    async with open_sftp_drop_sender(credentials, timeout=5) as sender:
        # No ~/.ssh/known_hosts: verification stays on and the host is refused.
        with pytest.raises(PermanentError, match="host key not verified"):
            await sender.send(drop(target_of(server)))
        (home / ".ssh" / "known_hosts").write_text(server.known_hosts_line())
        assert (await sender.send(drop(target_of(server)))).startswith("sftp-")

"""Settings into adapters: every adapter the server and the commands use is opened here."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from delivery_server.adapters.sender_outbox import EventSink
from delivery_server.ports import AttachmentLoader, Queue, Sender, Store
from delivery_server.schema_map import SchemaMap, load_schema_map
from delivery_server.settings import Settings


def database_url(settings: Settings) -> str:
    return settings.database_url.get_secret_value()


def schema_map(settings: Settings) -> SchemaMap | None:
    """The upstream tables to run on (``DELIVERY_SCHEMA_MAP``), read and checked."""
    return None if settings.schema_map is None else load_schema_map(settings.schema_map)


@contextlib.asynccontextmanager
async def open_store(settings: Settings) -> AsyncIterator[Store]:
    """A connected store (the schema is not touched: see ``upgrade_database``); on an
    upstream system's tables when ``DELIVERY_SCHEMA_MAP`` says so."""
    from delivery_server.adapters.store_sql import SqlStore
    from delivery_server.adapters.store_sql.legacy_store import MappedSqlStore

    mapped = schema_map(settings)
    url, pool_size = database_url(settings), settings.db_pool_size
    store = (
        await SqlStore.connect(url, pool_size=pool_size)
        if mapped is None
        else await MappedSqlStore.connect_mapped(url, mapped, pool_size=pool_size)
    )
    try:
        yield store
    finally:
        await store.close()


async def upgrade_database(settings: Settings) -> None:
    """Create or upgrade the schema (idempotent), beside the upstream tables of
    ``DELIVERY_SCHEMA_MAP`` when set."""
    from delivery_server.adapters.store_sql import upgrade_schema

    await upgrade_schema(database_url(settings), schema_map(settings))


@contextlib.asynccontextmanager
async def open_queue(settings: Settings, *, max_connections: int) -> AsyncIterator[Queue]:
    if settings.queue == "local":
        from delivery_server.adapters.queue_local import LocalQueue

        yield LocalQueue()
        return
    from delivery_server.adapters.aws.sqs import open_sqs_queue

    assert settings.sqs_queue_url is not None  # checked by Settings
    async with open_sqs_queue(
        settings.sqs_queue_url,
        endpoint_url=settings.aws_endpoint_url,
        max_connections=max_connections,
        http=settings.aws_http,
    ) as queue:
        yield queue


@contextlib.asynccontextmanager
async def open_sender(
    settings: Settings, *, events: EventSink | None = None
) -> AsyncIterator[Sender]:
    """The sender; the outbox publishes the SES events of what it writes to ``events``."""
    if settings.sender == "ses":
        from delivery_server.adapters.aws.ses import open_ses_sender

        # One pooled connection per in-flight send, on a client of its own, so that the
        # queue's 20-second long polls can never take the connections sends need.
        async with open_ses_sender(
            endpoint_url=settings.aws_endpoint_url,
            max_connections=settings.concurrency,
            timeout=settings.send_timeout,
            http=settings.aws_http,
            configuration_set=settings.ses_configuration_set,
        ) as ses:
            yield ses
    elif settings.sender == "smtp":
        from delivery_server.adapters.sender_smtp import SmtpSender

        assert settings.smtp_url is not None  # checked by Settings
        smtp = SmtpSender(
            settings.smtp_url.get_secret_value(),
            verify_tls=settings.smtp_verify_tls,
            timeout=settings.send_timeout,
            pool_size=min(settings.concurrency, 8),
        )
        try:
            yield smtp
        finally:
            await smtp.close()
    else:
        from delivery_server.adapters.sender_outbox import OutboxSender

        yield OutboxSender(settings.outbox_dir, events=events)


@contextlib.asynccontextmanager
async def open_attachments(settings: Settings) -> AsyncIterator[AttachmentLoader]:
    from delivery_server.adapters.attachments import AttachmentRouter, FileAttachmentLoader
    from delivery_server.adapters.aws.s3 import open_s3_loader

    files = FileAttachmentLoader(settings.attachments_dir)
    if not settings.s3_buckets:
        yield AttachmentRouter(files, None)
        return
    async with open_s3_loader(
        settings.s3_buckets,
        endpoint_url=settings.aws_endpoint_url,
        max_connections=settings.concurrency,
    ) as s3:
        yield AttachmentRouter(files, s3)

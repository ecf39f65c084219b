"""The ``s3`` and ``sftp`` drop channels, built from the settings (DESIGN §12).

Both render with ``drops.DropRenderer`` (the recipient's key checked again, the job's
target checked against its allow-list, attachments loaded, the body rendered) and send
through their drop sender (``adapters.aws.s3_drop``, ``adapters.sftp_drop``), or, with
``DELIVERY_SENDER=outbox``, write each drop into the outbox (``<job>-<email>.<channel>.json``
and one file per drop file). Opening connects nothing: an S3 client is made, SSH
connections are made by the first upload to each login.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from pydantic import SecretStr

from delivery_server.adapters.aws.s3_drop import open_s3_drop_sender
from delivery_server.adapters.channel_outbox import ChannelOutbox
from delivery_server.adapters.sftp_drop import load_credentials, open_sftp_drop_sender
from delivery_server.channels import Channel
from delivery_server.drop_targets import (
    S3Target,
    SftpTarget,
    s3_rules,
    s3_target_parser,
    sftp_rules,
    sftp_target_parser,
)
from delivery_server.drops import DropForm, DropRenderer
from delivery_server.errors import ConfigError
from delivery_server.ports import AttachmentLoader
from delivery_server.renderer import Renderer
from delivery_server.settings import Settings


@contextlib.asynccontextmanager
async def open_s3_channel(
    settings: Settings, renderer: Renderer, attachments: AttachmentLoader
) -> AsyncIterator[Channel[DropForm[S3Target]]]:
    """The s3 channel: ``PutObject`` per drop file, or the outbox."""
    rules = s3_rules(settings)
    parse = s3_target_parser(settings.drop_s3_bucket_set)
    drop_renderer = DropRenderer("s3", "key", parse, renderer, attachments)
    if settings.sender == "outbox":
        yield Channel(rules, drop_renderer, ChannelOutbox(settings.outbox_dir))
        return
    async with open_s3_drop_sender(
        sse=settings.drop_s3_sse,
        kms_key_id=settings.drop_s3_kms_key_id,
        endpoint_url=settings.aws_endpoint_url,
        max_connections=settings.concurrency,
        timeout=settings.send_timeout,
    ) as sender:
        yield Channel(rules, drop_renderer, sender)


@contextlib.asynccontextmanager
async def open_sftp_channel(
    settings: Settings, renderer: Renderer, attachments: AttachmentLoader
) -> AsyncIterator[Channel[DropForm[SftpTarget]]]:
    """The sftp channel: uploads renamed into place, or the outbox."""
    rules = sftp_rules(settings)
    parse = sftp_target_parser(settings.drop_sftp_host_set)
    drop_renderer = DropRenderer("sftp", "path", parse, renderer, attachments)
    if settings.sender == "outbox":
        yield Channel(rules, drop_renderer, ChannelOutbox(settings.outbox_dir))
        return
    known_hosts = settings.sftp_known_hosts
    if known_hosts is not None and not known_hosts.is_file():
        raise ConfigError("configuration error: DELIVERY_SFTP_KNOWN_HOSTS: no such file")
    credentials = load_credentials(
        _secret(settings.sftp_private_key),
        _secret(settings.sftp_private_key_passphrase),
        _secret(settings.sftp_password),
    )
    if settings.drop_sftp_host_set and not (credentials.private_key or credentials.password):
        raise ConfigError(
            "configuration error: DELIVERY_DROP_SFTP_HOSTS is set but neither "
            "DELIVERY_SFTP_PRIVATE_KEY nor DELIVERY_SFTP_PASSWORD is"
        )
    async with open_sftp_drop_sender(
        credentials,
        known_hosts=known_hosts,
        max_uploads=settings.sftp_max_uploads,
        timeout=settings.send_timeout,
    ) as sender:
        yield Channel(rules, drop_renderer, sender)


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None

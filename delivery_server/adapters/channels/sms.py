"""The SMS channel: each recipient's ``phone`` (E.164) gets the template's ``sms_body``.

Rules: the recipient field is ``phone``, checked by ``sms.normalize_phone`` at the import
and again here at the claim (rows may come from upstream systems); an sms job takes no
``--target``. The renderer renders ``sms_body``, counts its GSM-7 or UCS-2 segments and
refuses (permanently, for that recipient only) an empty body, one over SNS's 1600 bytes or
one over the job's cap (``jobs create --max-segments``, else ``DELIVERY_SMS_MAX_SEGMENTS``).
The segments of each SMS sent are recorded with its send (``delivery_email.segments``).
The sender is SNS (``adapters/aws/sns_sms.py``), or with ``DELIVERY_SENDER=outbox`` a
``<job>-<email>.sms.json`` file in the outbox.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from delivery_server.channels import Channel, ChannelRules, no_target
from delivery_server.models import ClaimedEmail, Template
from delivery_server.renderer import Renderer
from delivery_server.settings import Settings
from delivery_server.sms import OutgoingSms, check_sms_body, job_segment_cap, normalize_phone

SMS_RULES = ChannelRules(
    name="sms",
    recipient_field="phone",
    check_recipient=normalize_phone,
    check_target=no_target("an sms job takes no target (its recipients are phone numbers)"),
)


class SmsRenderer:
    """``ChannelRenderer[OutgoingSms]``: the number checked, the body rendered and counted."""

    def __init__(self, renderer: Renderer, max_segments: int) -> None:
        self._renderer = renderer
        self._max_segments = max_segments  # DELIVERY_SMS_MAX_SEGMENTS: a job without a cap

    async def render(self, claimed: ClaimedEmail, template: Template) -> OutgoingSms:
        email = claimed.email
        phone = normalize_phone(email.to_address)
        body = self._renderer.render_sms_body(template, email.variables)
        cap = job_segment_cap(claimed.job.max_segments, self._max_segments)
        segments = check_sms_body(body, cap)
        return OutgoingSms(
            job_id=claimed.job.id, email_id=email.id, phone=phone, body=body, segments=segments
        )


def billed_segments(outgoing: OutgoingSms) -> int:
    """``Channel.segments_of``: what SNS bills the SMS as, recorded with its send."""
    return outgoing.segments.segments


@asynccontextmanager
async def open_sms_channel(
    settings: Settings, renderer: Renderer
) -> AsyncIterator[Channel[OutgoingSms]]:
    """The SMS channel: SNS, or with ``DELIVERY_SENDER=outbox`` ``.sms.json`` files."""
    sms_renderer = SmsRenderer(renderer, settings.sms_max_segments)
    if settings.sender == "outbox":
        from delivery_server.adapters.channel_outbox import ChannelOutbox

        yield Channel(
            SMS_RULES, sms_renderer, ChannelOutbox(settings.outbox_dir), segments_of=billed_segments
        )
        return
    from delivery_server.adapters.aws.sns_sms import open_sns_sms_sender

    async with open_sns_sms_sender(
        endpoint_url=settings.aws_endpoint_url,
        sender_id=settings.sms_sender_id,
        max_connections=settings.concurrency,
        timeout=settings.send_timeout,
    ) as sender:
        yield Channel(SMS_RULES, sms_renderer, sender, segments_of=billed_segments)

"""The email channel: what the pipeline did before there were channels, as a channel.

The renderer is Jinja2 (``renderer.Renderer``) plus the attachments and, for jobs that opt
in, the one-click unsubscribe headers; its outgoing form is ``mime.CheckedEmail`` (every
header checked once, here), which the senders — SES, SMTP, the ``.eml`` outbox — take as
they always did (``ports.Sender`` is a ``ChannelSender[CheckedEmail]``).
"""

from __future__ import annotations

import asyncio

from delivery_server.channels import Channel, ChannelRules, no_target
from delivery_server.errors import PermanentError
from delivery_server.mime import CheckedEmail, validate_address
from delivery_server.models import ClaimedEmail, OutgoingEmail, Template
from delivery_server.ports import AttachmentLoader, Sender
from delivery_server.renderer import Renderer
from delivery_server.sendgate import SendGate
from delivery_server.suppression import UnsubscribeLinks

EMAIL_RULES = ChannelRules(
    name="email",
    recipient_field="email",
    check_recipient=validate_address,
    check_target=no_target("an email job takes no target (its recipients are addresses)"),
)


class EmailRenderer:
    """``ChannelRenderer[CheckedEmail]``: the template, the attachments, the headers."""

    def __init__(
        self,
        renderer: Renderer,
        attachments: AttachmentLoader,
        unsubscribe: UnsubscribeLinks | None,
    ) -> None:
        self._renderer = renderer
        self._attachments = attachments
        self._unsubscribe = unsubscribe

    async def render(self, claimed: ClaimedEmail, template: Template) -> CheckedEmail:
        email, job = claimed.email, claimed.job
        content = self._renderer.render(template, email.variables)
        attachments = tuple(
            await asyncio.gather(*(self._attachments.load(ref) for ref in email.attachments))
        )
        # Every header (the recipient's address among them) is checked here, once; the
        # sender trusts the CheckedEmail it gets.
        outgoing = OutgoingEmail(
            from_address=job.from_address,
            to_address=email.to_address,
            subject=content.subject,
            text_body=content.text_body,
            html_body=content.html_body,
            reply_to=job.reply_to,
            attachments=attachments,
            email_id=email.id,
            job_id=job.id,
            headers=self._list_headers(claimed),
        )
        return CheckedEmail(outgoing)

    def _list_headers(self, claimed: ClaimedEmail) -> tuple[tuple[str, str], ...]:
        if not claimed.job.unsubscribe:
            return ()
        if self._unsubscribe is None:
            # The job was promised links (jobs create checks the settings); sending
            # without them would break that promise on every email.
            raise PermanentError(
                "the job asks for unsubscribe links but this server has no "
                "DELIVERY_PUBLIC_URL and DELIVERY_UNSUBSCRIBE_SECRET"
            )
        return self._unsubscribe.headers(claimed.email.id)


def email_channel(
    sender: Sender,
    renderer: Renderer,
    attachments: AttachmentLoader,
    unsubscribe: UnsubscribeLinks | None,
    gate: SendGate,
) -> Channel[CheckedEmail]:
    """The email channel over one of the email senders, paced by ``gate`` (the one the
    fleet shares out the account's send rate on)."""
    return Channel(EMAIL_RULES, EmailRenderer(renderer, attachments, unsubscribe), sender, gate)

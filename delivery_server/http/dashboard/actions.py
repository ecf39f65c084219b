"""The dashboard's actions: pause, resume, cancel, restart-failed, and suppression changes.

Each runs the API's own handler (``http.api.jobs``, ``http.api.admin``) with the same
rules, and is audited as the API audits it: the same action name, who is the token's
name, from where is the client's address, and the outcome, refused ones included. Cancel
and restart first show a confirmation page (no script needed); the posted confirmation
carries ``confirmed=yes``. A read token's buttons are disabled, and its posts get 403.
After an action the browser is sent back to the page (303), with the outcome as a
one-time message in the session rather than in the URL.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web
from pydantic import BaseModel, ValidationError

from delivery_server.api_tokens import AuditEntry
from delivery_server.errors import ConflictError, DeliveryError, NotFoundError, RetryableError
from delivery_server.http.api.admin import add_suppressions, remove_suppressions
from delivery_server.http.api.admin_models import SuppressionAdd, SuppressionRemove
from delivery_server.http.api.auth import client_address
from delivery_server.http.api.endpoints import Call
from delivery_server.http.api.jobs import cancel, pause, restart_failed, resume
from delivery_server.http.api.models import RestartRequest
from delivery_server.http.dashboard.console import JOB_ID_PATTERN, Console, View
from delivery_server.http.dashboard.progress import job_progress

log = structlog.get_logger(__name__)

Handler = Callable[[Call], Awaitable[Any]]
JOB_ACTIONS: dict[str, Handler] = {
    "pause": pause,
    "resume": resume,
    "cancel": cancel,
    "restart-failed": restart_failed,
}
CONFIRMED = {"cancel", "restart-failed"}


class Refused(Exception):
    """An action that did not happen, with the page that says why."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


class Actions:
    def __init__(self, console: Console) -> None:
        self._console = console

    async def _perform(
        self,
        view: View,
        action: str,
        handler: Handler,
        job_id: int | None = None,
        body: BaseModel | None = None,
    ) -> str:
        """Run an API handler as ``view``'s principal; audit it; return what it did (or
        raise ``Refused``; a conflict is no refusal: its message says what the job is)."""
        call = Call(view.request, view.principal, self._console.store, job_id=job_id, body=body)
        if not view.can_operate:
            await self._audit(call, action, "forbidden")
            raise Refused(
                self._console.problem(
                    view,
                    403,
                    "Not allowed",
                    f"Your token's scope is {view.principal.scope}: this needs an operate "
                    "token. Nothing was changed.",
                )
            )
        try:
            await handler(call)
        except NotFoundError as exc:
            await self._audit(call, action, "not_found")
            raise Refused(self._console.problem(view, 404, "Not found", str(exc))) from None
        except ConflictError as exc:
            await self._audit(call, action, "conflict")
            return f"Not done: {exc}."
        except RetryableError:
            await self._audit(call, action, "unavailable")
            return "Not done: the database did not answer. Try again in a moment."
        except DeliveryError as exc:
            await self._audit(call, action, "invalid")
            return f"Not done: {exc}."
        await self._audit(call, action, "ok")
        return f"{call.detail}." if call.detail else "done."

    async def _audit(self, call: Call, action: str, outcome: str) -> None:
        entry = AuditEntry(
            actor=call.principal.name,
            action=action,
            outcome=outcome,
            client=client_address(call.request),
            job_id=call.job_id,
            detail=call.detail,
        )
        try:
            await self._console.store.record_audit(entry)
        except Exception as exc:  # the action is done: the page must not say otherwise
            log.error("audit_write_failed", action=action, error=type(exc).__name__)

    async def job_action(self, view: View) -> web.StreamResponse:
        name = view.request.match_info["action"]
        job_id = view.job_id()
        if name in CONFIRMED and view.field("confirmed") != "yes" and view.can_operate:
            return await self._confirmation(view, name, job_id)
        body = None
        if name == "restart-failed":
            body = RestartRequest(
                include_unknown=view.field("include_unknown") == "yes",
                transient_only=view.field("transient_only") == "yes",
            )
        try:
            message = await self._perform(view, f"job.{name}", JOB_ACTIONS[name], job_id, body)
        except Refused as refused:
            return refused.response
        view.session.flash = f"Job {job_id}: {message}"
        raise web.HTTPSeeOther(f"/jobs/{job_id}")

    async def _confirmation(self, view: View, name: str, job_id: int) -> web.StreamResponse:
        console = self._console
        try:
            progress = await job_progress(console.store, console.rates, console.history, job_id)
        except NotFoundError:
            return console.problem(view, 404, "No such job", f"There is no job {job_id}.")
        if name == "cancel":
            unsent = progress.total - progress.done
            what, button = "Cancel", "Yes, cancel the job"
            consequence = (
                f"Its {unsent:,} emails not sent yet will be cancelled (those being sent "
                "right now may still go). A cancelled job cannot be resumed."
            )
        else:
            what, button = "Restart the failed emails of", "Yes, send them again"
            consequence = (
                f"{progress.restartable:,} failed or unknown emails can be sent again; "
                "their recipients may get the email they did not get before."
            )
        return console.render(
            "confirm.html",
            view,
            p=progress,
            action=name,
            what=what,
            button=button,
            consequence=consequence,
        )

    async def add_suppressions(self, view: View) -> web.StreamResponse:
        addresses = [line.strip() for line in view.field("addresses").splitlines()]
        fields: dict[str, Any] = {"addresses": [a for a in addresses if a]}
        if note := view.field("note").strip():
            fields["note"] = note
        return await self._suppressions(view, "suppressions.add", add_suppressions, fields)

    async def remove_suppression(self, view: View) -> web.StreamResponse:
        fields = {"addresses": [view.field("address")]}
        return await self._suppressions(view, "suppressions.remove", remove_suppressions, fields)

    async def _suppressions(
        self, view: View, action: str, handler: Handler, fields: dict[str, Any]
    ) -> web.StreamResponse:
        model = SuppressionAdd if action == "suppressions.add" else SuppressionRemove
        try:
            body = model.model_validate(fields)
        except ValidationError:
            view.session.flash = (
                "Not done: give one address per line (up to 1,000), and a note of at most "
                "1,000 characters."
            )
            raise web.HTTPSeeOther("/suppressions") from None
        try:
            view.session.flash = await self._perform(view, action, handler, body=body)
        except Refused as refused:
            return refused.response
        raise web.HTTPSeeOther("/suppressions")


def action_routes(console: Console) -> list[web.RouteDef]:
    actions = Actions(console)
    names = "|".join(JOB_ACTIONS)
    return [
        web.post(f"/jobs/{JOB_ID_PATTERN}/{{action:{names}}}", console.page(actions.job_action)),
        web.post("/suppressions/add", console.page(actions.add_suppressions)),
        web.post("/suppressions/remove", console.page(actions.remove_suppression)),
    ]

"""Templates (list, preview), suppressions (list, add, remove) and the audit trail."""

from __future__ import annotations

from collections.abc import Sequence

from delivery_server.api_tokens import TokenScope
from delivery_server.errors import NotFoundError, PermanentError
from delivery_server.http.api.admin_models import (
    AuditList,
    AuditOut,
    AuditQuery,
    PreviewAnswer,
    PreviewRequest,
    SuppressionAdd,
    SuppressionList,
    SuppressionOut,
    SuppressionRemove,
    SuppressionsChanged,
    SuppressionsQuery,
    TemplateList,
    TemplateOut,
)
from delivery_server.http.api.endpoints import Call, Endpoint
from delivery_server.mime import validate_address
from delivery_server.models import Suppression, utcnow
from delivery_server.renderer import Renderer
from delivery_server.suppression import normalise_address


async def list_templates(call: Call) -> TemplateList:
    return TemplateList(templates=[TemplateOut.of(t) for t in await call.store.templates()])


def preview(renderer: Renderer) -> Endpoint:
    async def render(call: Call) -> PreviewAnswer:
        body: PreviewRequest = call.body
        template = await call.store.template(body.name, body.locale)
        if template is None:
            locales = sorted(t.locale for t in await call.store.templates() if t.name == body.name)
            if not locales:
                raise NotFoundError(f"template {body.name!r} does not exist")
            raise NotFoundError(
                f"template {body.name!r} has no locale {body.locale!r} "
                f"(it has: {', '.join(locales)})"
            )
        # A missing variable is a PermanentError naming it: answered 422.
        rendered = renderer.render(template, body.variables)
        return PreviewAnswer(
            name=template.name,
            locale=template.locale,
            version=template.version,
            subject=rendered.subject,
            text_body=rendered.text_body,
            html_body=rendered.html_body,
        )

    return Endpoint(
        "POST",
        "/api/v1/templates/preview",
        render,
        "Render a template's latest version with sample variables (nothing is sent)",
        PreviewAnswer,
        body=PreviewRequest,
    )


def _checked(addresses: Sequence[str]) -> list[str]:
    checked: list[str] = []
    for position, text in enumerate(addresses, start=1):
        try:
            checked.append(normalise_address(validate_address(text.strip())))
        except PermanentError as exc:  # the message never quotes the address
            raise PermanentError(f"address {position}: {exc}") from None
    return checked


async def list_suppressions(call: Call) -> SuppressionList:
    query: SuppressionsQuery = call.query
    found = await call.store.suppressions(limit=query.limit, offset=query.offset)
    return SuppressionList(suppressions=[SuppressionOut.of(entry) for entry in found])


async def add_suppressions(call: Call) -> SuppressionsChanged:
    body: SuppressionAdd = call.body
    now = utcnow()
    if body.expires_at is not None and body.expires_at <= now:
        raise PermanentError("expires_at must be in the future")
    entries = [
        Suppression(
            address=address,
            reason=body.reason,
            created_at=now,
            expires_at=body.expires_at,
            note=body.note,
        )
        for address in _checked(body.addresses)
    ]
    added = await call.store.add_suppressions(entries)
    call.detail = f"{added} of {len(entries)} addresses added ({body.reason})"
    return SuppressionsChanged(changed=added)


async def remove_suppressions(call: Call) -> SuppressionsChanged:
    body: SuppressionRemove = call.body
    addresses = _checked(body.addresses)
    removed = await call.store.remove_suppressions(addresses)
    call.detail = f"{removed} of {len(addresses)} addresses removed"
    return SuppressionsChanged(changed=removed)


async def list_audit(call: Call) -> AuditList:
    query: AuditQuery = call.query
    entries = await call.store.audit_entries(query.limit + 1, query.before, query.job_id)
    more = len(entries) > query.limit
    entries = entries[: query.limit]
    return AuditList(
        entries=[AuditOut.of(e) for e in entries],
        next_before=entries[-1].id if more and entries[-1].id is not None else None,
    )


def admin_endpoints(renderer: Renderer) -> list[Endpoint]:
    operate = TokenScope.OPERATE
    return [
        Endpoint(
            "GET",
            "/api/v1/templates",
            list_templates,
            "The latest version of every template in every locale",
            TemplateList,
        ),
        preview(renderer),
        Endpoint(
            "GET",
            "/api/v1/suppressions",
            list_suppressions,
            "The suppression list, newest first",
            SuppressionList,
            query=SuppressionsQuery,
        ),
        Endpoint(
            "POST",
            "/api/v1/suppressions",
            add_suppressions,
            "Suppress addresses",
            SuppressionsChanged,
            scope=operate,
            body=SuppressionAdd,
            action="suppressions.add",
        ),
        Endpoint(
            "POST",
            "/api/v1/suppressions/remove",
            remove_suppressions,
            "Take addresses off the suppression list (POST: no address in URLs)",
            SuppressionsChanged,
            scope=operate,
            body=SuppressionRemove,
            action="suppressions.remove",
        ),
        Endpoint(
            "GET",
            "/api/v1/audit",
            list_audit,
            "Who did what through the API, newest first",
            AuditList,
            query=AuditQuery,
        ),
    ]

"""One table of endpoints drives the routes, their checks and the OpenAPI document.

Every endpoint declares its method, path, scope, query/body models and answer model; the
wrapper built here authenticates the caller, checks the scope, validates the path id,
the query and the JSON body with pydantic, runs the handler and writes the answer. An
endpoint with an ``action`` writes one audit entry per call that got past
authentication, whatever became of it: ``ok``, or why it was refused.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import structlog
from aiohttp import web
from pydantic import BaseModel, BeforeValidator, TypeAdapter, ValidationError

from delivery_server.api_tokens import AuditEntry, TokenScope
from delivery_server.errors import (
    ConflictError,
    DeliveryError,
    JobImportError,
    NotFoundError,
    RetryableError,
)
from delivery_server.http.api.auth import (
    Authenticator,
    CsrfRefused,
    Principal,
    TooManyFailures,
    Unauthenticated,
    client_address,
)
from delivery_server.http.api.models import MAX_ID, ErrorAnswer, error_details
from delivery_server.ports import Store

log = structlog.get_logger(__name__)

JSON = "application/json"


def _digits(value: object) -> object:
    # Only plain digits: no sign, no spaces, no "1_000", no "..%2f" smuggled into an id.
    if isinstance(value, str) and not (value.isascii() and value.isdigit() and len(value) < 20):
        raise ValueError("must be a whole number from 1 to 2^63-1")
    return value


_JOB_ID = TypeAdapter(Annotated[int, BeforeValidator(_digits)])


@dataclass
class Call:
    """One request as a handler sees it, after every check passed."""

    request: web.Request
    principal: Principal
    store: Store
    query: Any = None  # an instance of the endpoint's query model
    body: Any = None  # an instance of the endpoint's body model
    job_id: int | None = None
    detail: str | None = None  # what the audit entry says beyond the outcome (no PII)


Handler = Callable[[Call], Awaitable[BaseModel | web.StreamResponse]]


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    summary: str
    answer: type[BaseModel] | None
    scope: TokenScope = TokenScope.READ
    query: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    status: int = 200
    action: str | None = None  # audited under this name
    media: str = JSON  # of the answer
    form: type[BaseModel] | None = None  # multipart/form-data fields beside a file
    errors: tuple[int, ...] = field(default=(404, 422))

    @property
    def has_job_id(self) -> bool:
        return "{job_id}" in self.path


def api_error(status: int, message: str, **extra: Any) -> web.Response:
    """A JSON error answer."""
    answer = ErrorAnswer(error=message, **extra)
    return web.json_response(
        text=answer.model_dump_json(exclude_none=True), status=status, content_type=JSON
    )


def _status_of(exc: DeliveryError) -> int:
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, ConflictError):
        return 409
    if isinstance(exc, RetryableError):
        return 503
    return 422  # PermanentError, import and file errors: what was sent cannot work


OUTCOMES = {404: "not_found", 409: "conflict", 403: "forbidden", 503: "unavailable"}


class EndpointRunner:
    """Wraps endpoints into aiohttp handlers over one store and authenticator."""

    def __init__(self, store: Store, auth: Authenticator) -> None:
        self._store = store
        self._auth = auth

    def route(self, endpoint: Endpoint) -> web.RouteDef:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._handle(endpoint, request)

        return web.route(endpoint.method, endpoint.path, handle)

    async def _handle(self, endpoint: Endpoint, request: web.Request) -> web.StreamResponse:
        try:
            principal = await self._auth.principal(request)
        except Unauthenticated as exc:
            response = api_error(401, str(exc))
            response.headers["WWW-Authenticate"] = 'Bearer realm="delivery-server"'
            return response
        except CsrfRefused as exc:
            return api_error(403, str(exc))
        except TooManyFailures as exc:
            response = api_error(429, str(exc))
            response.headers["Retry-After"] = str(int(exc.retry_after) + 1)
            return response
        call = Call(request, principal, self._store)
        try:
            if endpoint.has_job_id:
                call.job_id = _job_id(request)
            if not principal.may(endpoint.scope):
                raise _Refused(403, f"the token's scope is {principal.scope}: this needs operate")
            answer = await self._run(endpoint, call)
        except _Refused as exc:
            await self._audit(endpoint, call, OUTCOMES.get(exc.status, "invalid"))
            return api_error(exc.status, exc.message, detail=exc.detail)
        except JobImportError as exc:
            await self._audit(endpoint, call, "invalid")
            report = exc.report
            invalid = [{"line": r.line, "reason": r.reason} for r in report.invalid]
            return api_error(422, str(exc), invalid_count=report.invalid_count, invalid=invalid)
        except DeliveryError as exc:
            status = _status_of(exc)
            await self._audit(endpoint, call, OUTCOMES.get(status, "invalid"))
            return api_error(status, str(exc))
        await self._audit(endpoint, call, "ok")
        if isinstance(answer, web.StreamResponse):
            return answer
        return web.json_response(
            text=answer.model_dump_json(), status=endpoint.status, content_type=JSON
        )

    async def _run(self, endpoint: Endpoint, call: Call) -> BaseModel | web.StreamResponse:
        request = call.request
        try:
            if endpoint.query is not None:
                call.query = endpoint.query.model_validate(dict(request.query))
            elif request.query:
                raise _Refused(422, "this endpoint takes no query parameters")
            if endpoint.body is not None:
                call.body = endpoint.body.model_validate_json(await _json_body(request))
        except ValidationError as exc:
            raise _Refused(422, "invalid request", error_details(exc.errors())) from None
        return await endpoint.handler(call)

    async def _audit(self, endpoint: Endpoint, call: Call, outcome: str) -> None:
        if endpoint.action is None:
            return
        entry = AuditEntry(
            actor=call.principal.name,
            action=endpoint.action,
            outcome=outcome,
            client=client_address(call.request),
            job_id=call.job_id,
            detail=call.detail,
        )
        try:
            await self._store.record_audit(entry)
        except Exception as exc:  # the action is done: its answer must not say otherwise
            log.error("audit_write_failed", action=endpoint.action, error=type(exc).__name__)


def _job_id(request: web.Request) -> int:
    try:
        job_id = _JOB_ID.validate_python(request.match_info["job_id"])
    except ValidationError as exc:
        raise _Refused(422, "invalid job id", error_details(exc.errors())) from None
    if not 1 <= job_id <= MAX_ID:
        raise _Refused(404, f"job {job_id} does not exist")
    return job_id


class _Refused(Exception):
    def __init__(self, status: int, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.detail = detail


def refuse(status: int, message: str) -> Exception:
    """An error a handler raises to answer ``status`` with ``message``."""
    return _Refused(status, message)


async def _json_body(request: web.Request) -> bytes:
    if not request.body_exists:
        return b"{}"  # every field of a body model has a default or is named by pydantic
    if request.content_type != JSON:
        raise _Refused(415, "the body must be application/json")
    # Bounded by the application's client_max_size: a larger body is answered 413.
    return await request.read()


__all__ = [
    "JSON",
    "Call",
    "Endpoint",
    "EndpointRunner",
    "api_error",
    "refuse",
]

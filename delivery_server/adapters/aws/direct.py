"""The hot AWS calls without the SDK's per-call pipeline.

Our server makes one ``SendEmail`` call per email and a few SQS calls per ten. Through an
aiobotocore client each one walks the whole per-call pipeline: events emitted at each
step, parameter validation, the model-driven serializer, endpoint-ruleset resolution,
auth-scheme selection, the signer chosen by events, a conversion into an aiohttp request,
the model-driven parser. Profiled against the AWS stand-in (``python -m bench.floor``),
that walk costs more CPU than signing and HTTP together (docs/benchmarks.md has the
figures).

``SignedJsonClient`` keeps the parts that carry AWS knowledge and drops the walk:

* the endpoint, region and signing name come from an aiobotocore client created with the
  same settings (``client.meta``: custom endpoint, FIPS/dual-stack and region included);
* credentials come from the same aiobotocore session (environment, profile, web identity,
  the ECS task role, instance metadata; refreshable ones refresh themselves);
* requests are signed with SigV4 exactly as botocore's ``SigV4Auth`` signs them (``sigv4``:
  the same algorithm without its per-request generality, checked against it header for
  header);
* error responses are parsed by botocore's own parser for the service's protocol and raised
  as the same ``ClientError`` the client would raise, so the adapters' error tables apply
  unchanged;
* the request body is the JSON both services document (SES v2 REST-JSON, SQS JSON 1.0);
  success responses are plain JSON read with ``json.loads``.

What it does not do is retry: each ``call`` is one HTTP request (callers that may repeat a
call, the SQS adapter, repeat it themselves). ``DELIVERY_AWS_HTTP=sdk`` switches every call
back to the client pipeline, should an AWS region ever disagree with this path.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import aiohttp
from aiobotocore.client import AioBaseClient
from aiobotocore.credentials import AioCredentials
from aiobotocore.session import AioSession
from botocore.exceptions import ClientError, NoCredentialsError
from botocore.httpsession import ProxyConfiguration, get_cert_path
from botocore.model import OperationModel
from botocore.parsers import ResponseParserError, create_parser
from botocore.utils import get_environ_proxies, should_bypass_proxies
from yarl import URL

from delivery_server.adapters.aws.sigv4 import SigV4Signer

# One encoder for every call (``json.dumps`` with any argument builds a new one each
# time): compact separators, non-ASCII text as \u escapes.
_ENCODER = json.JSONEncoder(separators=(",", ":"))


class SignedJsonClient:
    """POSTs signed JSON requests to the service endpoint of an aiobotocore client."""

    def __init__(
        self,
        client: AioBaseClient,
        credentials: AioCredentials | None,
        http: aiohttp.ClientSession,
        *,
        user_agent: str,
    ) -> None:
        meta = client.meta
        self._client = client
        self._endpoint = meta.endpoint_url.rstrip("/")
        self._service_model = meta.service_model
        self._signer = SigV4Signer(meta.service_model.signing_name, meta.region_name)
        self._error_parser = create_parser(meta.service_model.protocol)
        self._credentials = credentials
        self._http = http
        self._user_agent = user_agent
        self._routes: dict[str, _Route] = {}
        self._proxy = _proxy_for(self._endpoint, getattr(meta.config, "proxies", None))

    async def call(
        self,
        operation: str,
        body: Mapping[str, Any] | bytes,
        *,
        timeout: aiohttp.ClientTimeout | None = None,
    ) -> dict[str, Any]:
        """One signed POST of ``body`` (the operation's input; as JSON bytes already, or to be
        encoded here); the decoded answer.
        ``timeout``: for this call, instead of the session's.

        Raises ``ClientError`` (the same subclass the client would) for an error answer,
        ``ResponseParserError`` for a success answer that is not JSON, ``NoCredentialsError``
        when no credentials can be found, and aiohttp's exceptions for transport failures."""
        route = self._routes.get(operation) or self._route(operation)
        data = body if isinstance(body, bytes) else _ENCODER.encode(body).encode()
        headers = self._signer.sign(
            await self._frozen_credentials(), route.url, route.headers, data
        )
        async with self._http.post(
            route.address,
            data=data,
            headers=headers,
            proxy=self._proxy,
            # Never None here: to aiohttp that means no timeout at all.
            timeout=timeout or self._http.timeout,
        ) as response:
            payload = await response.read()
            if response.status >= 300:
                raise self._client_error(route, response, payload)
        try:
            decoded: dict[str, Any] = json.loads(payload) if payload else {}
        except ValueError:  # as botocore reports an answer it cannot read
            raise ResponseParserError(
                f"{operation}: HTTP {response.status} answer is not JSON"
            ) from None
        return decoded

    def _route(self, operation: str) -> _Route:
        """Where and how an operation is posted, from the service model (once per name)."""
        model = self._service_model.operation_model(operation)
        protocol = self._service_model.protocol
        headers = {"User-Agent": self._user_agent}
        if protocol == "json":
            path = "/"
            headers["X-Amz-Target"] = f"{model.metadata['targetPrefix']}.{operation}"
            headers["Content-Type"] = f"application/x-amz-json-{model.metadata['jsonVersion']}"
            if self._service_model.is_query_compatible:
                headers["x-amzn-query-mode"] = "true"
        elif protocol == "rest-json":
            path = model.http["requestUri"]
            headers["Content-Type"] = "application/json"
        else:
            raise ValueError(f"{operation}: the {protocol} protocol is not supported here")
        if model.http.get("method") != "POST" or _has_bound_members(model):
            raise ValueError(f"{operation}: only POST with the whole input in the body")
        url = self._endpoint + path
        route = _Route(model, url, URL(url), headers)
        self._routes[operation] = route
        return route

    async def _frozen_credentials(self) -> Any:
        if self._credentials is None:
            raise NoCredentialsError
        return await self._credentials.get_frozen_credentials()

    def _client_error(
        self, route: _Route, response: aiohttp.ClientResponse, payload: bytes
    ) -> ClientError:
        """The ``ClientError`` aiobotocore would raise for this answer (same parser)."""
        parsed = self._error_parser.parse(
            {"status_code": response.status, "headers": response.headers, "body": payload},
            route.model.output_shape,  # type: ignore[arg-type]  # None too, as botocore passes
        )
        error = parsed.get("Error", {})
        # SQS names its modeled exceptions by the query-protocol code (botocore does the same).
        code = error.get("QueryErrorCode") or error.get("Code")
        # from_code returns the class (the stubs say an instance).
        error_class = cast(type[ClientError], self._client.exceptions.from_code(code))
        return error_class(parsed, route.model.name)


def open_http(
    session: AioSession, *, max_connections: int, timeout: aiohttp.ClientTimeout
) -> aiohttp.ClientSession:
    """An aiohttp session that trusts what botocore trusts (``AWS_CA_BUNDLE``/``ca_bundle``,
    else certifi's bundle)."""
    ssl_context = ssl.create_default_context(
        cafile=get_cert_path(session.get_config_variable("ca_bundle") or True)
    )
    connector = aiohttp.TCPConnector(limit=max_connections, ssl=ssl_context)
    return aiohttp.ClientSession(connector=connector, timeout=timeout)


def _proxy_for(endpoint: str, configured: Mapping[str, str] | None) -> str | None:
    """The proxy botocore would use for ``endpoint``: the client's ``proxies`` setting, else
    ``HTTPS_PROXY``/``NO_PROXY`` from the environment. Decided once, as botocore does when
    it creates the endpoint (aiohttp's ``trust_env`` would decide it again, in a thread,
    for every request: thread hand-offs on every call; docs/benchmarks.md)."""
    proxies = configured or (
        {} if should_bypass_proxies(endpoint) else get_environ_proxies(endpoint)
    )
    proxy: str | None = ProxyConfiguration(proxies=proxies).proxy_url_for(endpoint)
    return proxy


@dataclass(frozen=True, slots=True)
class _Route:
    model: OperationModel
    url: str
    address: URL  # the url parsed once (aiohttp parses a str for every request)
    headers: dict[str, str]


def _has_bound_members(model: OperationModel) -> bool:
    """True when part of the input goes in the URI, a header or the query string."""
    shape = model.input_shape
    if shape is None:
        return False
    return any(member.serialization.get("location") for member in shape.members.values())

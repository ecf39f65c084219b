"""What the direct AWS path takes from botocore and aiobotocore is still where it was.

``adapters/aws/direct.py`` and ``sigv4.py`` skip the client's per-call pipeline but keep its
endpoint, credentials, service model, error parser, proxy and CA rules, and the SigV4
header rules; ``ses.py``, ``sqs.py`` and ``session.py`` build the clients. Several of those
are internals that a botocore minor release may move or reshape, which pyproject.toml's
upper bound on aiobotocore (and botocore through it) guards. Before raising that bound, run
this: each failure names the internal that moved and the module that uses it.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import certifi
import pytest
from multidict import CIMultiDict

ROOT = Path(__file__).resolve().parents[2]
AWS = ROOT / "delivery_server" / "adapters" / "aws"
USERS = ("direct", "sigv4", "ses", "sqs", "sqs_errors", "session")
DUMMY_ENDPOINT = "http://127.0.0.1:9"  # never connected to: clients are only built
REGION = "eu-west-1"
VENDOR_PACKAGES = {"botocore", "aiobotocore"}
BUNDLE = certifi.where()  # a real CA bundle, as AWS_CA_BUNDLE would name one

# Every name those modules import from botocore/aiobotocore, with the parameters they pass
# it by name or position (None: not called, or called without arguments).
IMPORTED: dict[str, tuple[str, ...] | None] = {
    "aiobotocore.client.AioBaseClient": None,
    "aiobotocore.config.AioConfig": None,
    "aiobotocore.credentials.AioCredentials": None,
    "aiobotocore.session.AioSession": None,
    "aiobotocore.session.get_session": (),
    "botocore.xform_name": ("name",),
    "botocore.auth.SIGNED_HEADERS_BLACKLIST": None,
    "botocore.credentials.ReadOnlyCredentials": ("access_key", "secret_key", "token"),
    "botocore.exceptions.BotoCoreError": None,
    "botocore.exceptions.ClientError": ("error_response", "operation_name"),
    "botocore.exceptions.ConnectTimeoutError": None,
    "botocore.exceptions.ConnectionError": None,
    "botocore.exceptions.EndpointConnectionError": None,
    "botocore.exceptions.HTTPClientError": None,
    "botocore.exceptions.NoCredentialsError": None,
    "botocore.exceptions.NoRegionError": None,
    "botocore.exceptions.ParamValidationError": None,
    "botocore.exceptions.PartialCredentialsError": None,
    "botocore.httpsession.ProxyConfiguration": ("proxies",),
    "botocore.httpsession.get_cert_path": ("verify",),
    "botocore.model.OperationModel": None,
    "botocore.parsers.ResponseParserError": None,
    "botocore.parsers.create_parser": ("protocol",),
    "botocore.utils.get_environ_proxies": ("url",),
    "botocore.utils.normalize_url_path": ("path",),
    "botocore.utils.should_bypass_proxies": ("url",),
}
# The SQS and SES operations the direct path posts (sqs.py's _call/_request, ses.py).
SQS_OPERATIONS = (
    "ReceiveMessage",
    "ChangeMessageVisibility",
    "GetQueueAttributes",
    "SendMessageBatch",
    "DeleteMessageBatch",
)
SES_OPERATIONS = ("SendEmail",)


def _resolve(dotted: str) -> Any:
    module_name, _, name = dotted.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        pytest.fail(f"botocore internal moved: module {module_name} is gone")
    if not hasattr(module, name):
        pytest.fail(f"botocore internal moved: {dotted} is gone")
    return getattr(module, name)


def _imports_in(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            root = node.module.split(".")[0]
            if root in VENDOR_PACKAGES:
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            bad = [a.name for a in node.names if a.name.split(".")[0] in VENDOR_PACKAGES]
            assert not bad, f"{path.name}: import {bad[0]}: use from-imports, listed here"
    return names


@pytest.mark.parametrize("user", USERS)
def test_every_import_of_the_aws_path_is_listed_here(user: str) -> None:
    unlisted = _imports_in(AWS / f"{user}.py") - IMPORTED.keys()
    assert not unlisted, f"adapters/aws/{user}.py imports {sorted(unlisted)}: add to IMPORTED"


@pytest.mark.parametrize("dotted", sorted(IMPORTED))
def test_each_imported_name_exists_with_the_parameters_we_pass(dotted: str) -> None:
    thing = _resolve(dotted)
    expected = IMPORTED[dotted]
    if not expected:
        return
    if isinstance(thing, type) and hasattr(thing, "_fields"):  # a namedtuple
        parameters: list[str] = list(thing._fields)
    else:
        parameters = list(inspect.signature(thing).parameters)
    missing = [p for p in expected if p not in parameters]
    assert not missing, f"botocore internal moved: {dotted} has no parameter {missing}"
    assert parameters[: len(expected)] == list(expected), (
        f"botocore internal moved: {dotted}{inspect.signature(thing)} takes other arguments"
        f" first than {expected}"
    )


def test_the_exception_tree_the_error_tables_rely_on() -> None:
    from botocore import exceptions as e

    for name in ("ClientError", "NoCredentialsError", "NoRegionError", "ParamValidationError"):
        assert issubclass(getattr(e, name), Exception), name
    for name in ("ConnectTimeoutError", "ConnectionError", "EndpointConnectionError"):
        assert issubclass(getattr(e, name), e.BotoCoreError), f"{name} left BotoCoreError"
    assert issubclass(e.PartialCredentialsError, e.BotoCoreError)
    assert issubclass(e.HTTPClientError, e.BotoCoreError)
    from botocore.parsers import ResponseParserError

    assert issubclass(ResponseParserError, Exception)


def test_the_signer_s_header_rules() -> None:
    from botocore.auth import SIGNED_HEADERS_BLACKLIST
    from botocore.utils import normalize_url_path

    unsigned = list(SIGNED_HEADERS_BLACKLIST)
    assert all(isinstance(h, str) and h == h.lower() for h in unsigned), unsigned
    # We send User-Agent; SigV4Auth leaves it out of the signature, and so must we.
    assert "user-agent" in unsigned
    assert normalize_url_path("/v2/./email/../email/outbound-emails") == "/v2/email/outbound-emails"
    assert normalize_url_path("") == "/"


def test_proxies_and_certificates(monkeypatch: pytest.MonkeyPatch) -> None:
    from botocore.httpsession import ProxyConfiguration, get_cert_path
    from botocore.utils import get_environ_proxies, should_bypass_proxies

    url = "https://sqs.eu-west-1.amazonaws.com/"
    for name in ("HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert get_environ_proxies(url).get("https") == "http://proxy.invalid:3128"
    assert not should_bypass_proxies(url)
    monkeypatch.setenv("NO_PROXY", ".amazonaws.com")
    assert should_bypass_proxies(url)
    configured = ProxyConfiguration(proxies={"https": "http://proxy.invalid:3128"})
    assert configured.proxy_url_for(url) == "http://proxy.invalid:3128"
    assert ProxyConfiguration(proxies={}).proxy_url_for(url) is None
    assert Path(get_cert_path(True)).is_file(), "get_cert_path(True) is no CA bundle"
    assert get_cert_path("/some/bundle.pem") == "/some/bundle.pem"


@pytest.fixture
async def clients(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[dict[str, Any]]:
    """Real clients and the session, as ses.py and sqs.py build them, on a dummy endpoint."""
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "token")
    monkeypatch.setenv("AWS_CA_BUNDLE", BUNDLE)
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    session = get_session()
    config = AioConfig(
        retries={"total_max_attempts": 1, "mode": "standard"},
        max_pool_connections=4,
        connect_timeout=5,
        read_timeout=5,
        user_agent="test",
    )
    made: dict[str, Any] = {"session": session, "config": config}
    async with (
        session.create_client(
            "sqs", region_name=REGION, endpoint_url=DUMMY_ENDPOINT, config=config
        ) as sqs,
        session.create_client(
            "sesv2", region_name=REGION, endpoint_url=DUMMY_ENDPOINT, config=config
        ) as sesv2,
    ):
        made.update(sqs=sqs, sesv2=sesv2)
        yield made


async def test_the_session_gives_credentials_config_and_user_agent(
    clients: dict[str, Any],
) -> None:
    from aiobotocore.credentials import AioCredentials

    session = clients["session"]
    assert isinstance(session.user_agent(), str)
    assert session.user_agent()
    # open_http trusts what botocore would: AWS_CA_BUNDLE (or ca_bundle in the profile).
    assert session.get_config_variable("ca_bundle") == BUNDLE
    credentials = await session.get_credentials()
    assert isinstance(credentials, AioCredentials)
    frozen = await credentials.get_frozen_credentials()
    assert (frozen.access_key, frozen.secret_key, frozen.token) == (
        "AKIDEXAMPLE",
        "secret",
        "token",
    )
    config = clients["config"]
    assert config.retries == {"total_max_attempts": 1, "mode": "standard"}
    assert (config.max_pool_connections, config.connect_timeout, config.read_timeout) == (4, 5, 5)
    assert config.user_agent == "test"


@pytest.mark.parametrize(
    ("service", "signing_name", "protocol"), [("sqs", "sqs", "json"), ("sesv2", "ses", "rest-json")]
)
async def test_client_meta_as_the_direct_path_reads_it(
    clients: dict[str, Any], service: str, signing_name: str, protocol: str
) -> None:
    from aiobotocore.client import AioBaseClient

    client = clients[service]
    assert isinstance(client, AioBaseClient)
    meta = client.meta
    assert meta.endpoint_url == DUMMY_ENDPOINT
    assert meta.region_name == REGION
    assert meta.service_model.signing_name == signing_name
    assert meta.service_model.protocol == protocol
    assert hasattr(meta.config, "proxies"), "client.meta.config.proxies is gone"
    assert meta.service_model.is_query_compatible is (service == "sqs")


@pytest.mark.parametrize("operation", SQS_OPERATIONS)
async def test_sqs_operations_post_json_with_the_whole_input_in_the_body(
    clients: dict[str, Any], operation: str
) -> None:
    from botocore import xform_name
    from botocore.model import OperationModel

    client = clients["sqs"]
    model = client.meta.service_model.operation_model(operation)
    assert isinstance(model, OperationModel)
    assert model.name == operation
    assert model.metadata["targetPrefix"] == "AmazonSQS"
    assert model.metadata["jsonVersion"] == "1.0"
    assert (model.http["method"], model.http["requestUri"]) == ("POST", "/")
    bound = [n for n, m in model.input_shape.members.items() if m.serialization.get("location")]
    assert not bound, f"{operation}: members outside the body: {bound}"
    assert callable(getattr(client, xform_name(operation)))


@pytest.mark.parametrize("operation", SES_OPERATIONS)
async def test_ses_operations_post_rest_json(clients: dict[str, Any], operation: str) -> None:
    model = clients["sesv2"].meta.service_model.operation_model(operation)
    assert (model.http["method"], model.http["requestUri"]) == ("POST", "/v2/email/outbound-emails")
    bound = [n for n, m in model.input_shape.members.items() if m.serialization.get("location")]
    assert not bound, f"{operation}: members outside the body: {bound}"
    assert model.output_shape is not None


async def test_sqs_errors_parse_to_the_client_s_exception_classes(
    clients: dict[str, Any],
) -> None:
    from botocore.exceptions import ClientError
    from botocore.parsers import create_parser

    client = clients["sqs"]
    model = client.meta.service_model.operation_model("ReceiveMessage")
    parsed = create_parser("json").parse(
        {
            "status_code": 400,
            "headers": CIMultiDict(
                {"x-amzn-query-error": "AWS.SimpleQueueService.NonExistentQueue;Sender"}
            ),
            "body": b'{"__type":"com.amazonaws.sqs#QueueDoesNotExist","message":"gone"}',
        },
        model.output_shape,
    )
    error = parsed["Error"]
    assert error.get("QueryErrorCode") == "QueueDoesNotExist", parsed
    error_class = client.exceptions.from_code(error["QueryErrorCode"])
    assert error_class is client.exceptions.QueueDoesNotExist
    assert issubclass(error_class, ClientError)
    assert client.exceptions.from_code("NoSuchCode") is ClientError
    raised = error_class(parsed, model.name)
    assert raised.response["Error"]["Message"] == "gone"
    assert raised.operation_name == "ReceiveMessage"


async def test_ses_errors_parse_to_the_client_s_exception_classes(
    clients: dict[str, Any],
) -> None:
    from botocore.parsers import create_parser

    client = clients["sesv2"]
    model = client.meta.service_model.operation_model("SendEmail")
    parsed = create_parser("rest-json").parse(
        {
            "status_code": 400,
            "headers": CIMultiDict({"x-amzn-ErrorType": "MessageRejected:http://internal.amazon"}),
            "body": b'{"message":"Email address is not verified."}',
        },
        model.output_shape,
    )
    assert parsed["Error"]["Code"] == "MessageRejected", parsed
    assert client.exceptions.from_code("MessageRejected") is client.exceptions.MessageRejected


async def test_the_direct_client_builds_its_routes_from_a_real_client(
    clients: dict[str, Any],
) -> None:
    """The whole of SignedJsonClient's set-up on botocore's objects, as the adapters do it."""
    from delivery_server.adapters.aws.direct import SignedJsonClient, open_http

    credentials = await clients["session"].get_credentials()
    timeout = aiohttp.ClientTimeout(total=5)
    async with open_http(clients["session"], max_connections=2, timeout=timeout) as http:
        for service, operations in (("sqs", SQS_OPERATIONS), ("sesv2", SES_OPERATIONS)):
            direct = SignedJsonClient(clients[service], credentials, http, user_agent="test")
            for operation in operations:
                route = direct._route(operation)
                assert route.url.startswith(DUMMY_ENDPOINT), route

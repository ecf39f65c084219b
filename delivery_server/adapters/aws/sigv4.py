"""AWS Signature Version 4 for the direct path's POSTs, as botocore's ``SigV4Auth`` signs them.

botocore's signer is general (query strings, streamed and unsigned payloads, S3 variants)
and spends most of its time on that generality: it builds an ``email.message``-based header
map twice per request, parses the URL three times and derives the signing key with four
HMACs every time. Under the benchmark that cost more CPU than the rest of the request
(docs/benchmarks.md has the figures). Our requests are all alike: a POST of a JSON body, no
query string, a handful of headers, to one endpoint. So this signer works out once what
does not change from one request to the next and keeps it:

* per URL and header set (a ``_Template``): host, canonical path, the canonical header
  lines and the signed-header list, with a slot for the time stamp (and the session
  token);
* per credentials and day (a ``_Scope``): the derived signing key (the AWS
  documentation's own advice), the credential scope and the start of the
  ``Authorization`` header;
* per second: the ``X-Amz-Date`` stamp.

It is checked against ``SigV4Auth`` header for header (tests/unit/test_sigv4.py), tokens,
ports and odd header spacing included.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote, urlsplit

from botocore.auth import SIGNED_HEADERS_BLACKLIST
from botocore.credentials import ReadOnlyCredentials
from botocore.exceptions import NoCredentialsError
from botocore.utils import normalize_url_path

_UNSIGNED = frozenset(SIGNED_HEADERS_BLACKLIST)
_DEFAULT_PORTS = {"http": 80, "https": 443}
_ALGORITHM = "AWS4-HMAC-SHA256"
_STAMP = "%Y%m%dT%H%M%SZ"
# The headers this signer sets itself; a caller's header of the same name (in any case)
# would be a second value for it, so such header sets take the general path.
_OWN = frozenset({"host", "x-amz-date", "x-amz-security-token"})
# The direct path signs one header set per operation it calls: a handful.
_MAX_TEMPLATES = 64


@dataclass(frozen=True, slots=True)
class _Target:
    host: str
    path: str


@dataclass(frozen=True, slots=True)
class _Template:
    """What a POST to one URL with one header set signs, but for the time and the token.

    The canonical request is ``before_date + stamp + after_date + body hash`` without a
    session token, and ``before_date + stamp + between + token + after_token + body hash``
    with one ("x-amz-date" sorts before "x-amz-security-token")."""

    out: dict[str, str]  # the caller's headers and Host
    before_date: str
    after_date: str  # no token: the rest of the header lines, then the signed-header list
    between: str  # with a token: the lines between the date's and the token's
    after_token: str
    signed_headers: str
    signed_headers_with_token: str


@dataclass(frozen=True, slots=True)
class _Scope:
    access_key: str
    secret_key: str
    day: str
    scope: str
    key: bytes
    credential: str  # the Authorization header up to "SignedHeaders="


class SigV4Signer:
    """Signs POSTs to one service in one region."""

    def __init__(self, service: str, region: str) -> None:
        self._service = service
        self._region = region
        self._targets: dict[str, _Target] = {}
        self._templates: dict[tuple[str, tuple[tuple[str, str], ...]], _Template | None] = {}
        self._scope: _Scope | None = None
        self._stamp: tuple[int, str] = (-1, "")  # (second since the epoch, its stamp)

    def sign(
        self,
        credentials: ReadOnlyCredentials,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        now: datetime | None = None,
    ) -> dict[str, str]:
        """``headers`` plus ``Host``, ``X-Amz-Date``, the session token if any, and the
        ``Authorization`` header for a POST of ``body`` to ``url``."""
        access_key, secret_key = credentials.access_key, credentials.secret_key
        if not access_key or not secret_key:
            raise NoCredentialsError
        key = (url, tuple(headers.items()))
        try:
            template = self._templates[key]
        except KeyError:
            if len(self._templates) >= _MAX_TEMPLATES:  # a caller varying its headers
                self._templates.clear()
            template = self._template(url, headers)
            self._templates[key] = template
        stamp = self._now_stamp() if now is None else now.strftime(_STAMP)
        scope = self._scope_for(access_key, secret_key, stamp[:8])
        if template is None:
            return self._sign_generally(scope, credentials.token, url, headers, body, stamp)
        payload_hash = hashlib.sha256(body).hexdigest()
        out = template.out.copy()
        out["X-Amz-Date"] = stamp
        token = credentials.token
        if token:
            out["X-Amz-Security-Token"] = token
            canonical = (
                f"{template.before_date}{stamp}{template.between}{' '.join(token.split())}"
                f"{template.after_token}{payload_hash}"
            )
            signed_headers = template.signed_headers_with_token
        else:
            canonical = f"{template.before_date}{stamp}{template.after_date}{payload_hash}"
            signed_headers = template.signed_headers
        out["Authorization"] = self._authorization(scope, stamp, canonical, signed_headers)
        return out

    def _now_stamp(self) -> str:
        second = int(time.time())
        cached = self._stamp
        if cached[0] == second:
            return cached[1]
        stamp = time.strftime(_STAMP, time.gmtime(second))
        self._stamp = (second, stamp)
        return stamp

    def _authorization(self, scope: _Scope, stamp: str, canonical: str, signed: str) -> str:
        string_to_sign = (
            f"{_ALGORITHM}\n{stamp}\n{scope.scope}\n"
            f"{hashlib.sha256(canonical.encode()).hexdigest()}"
        )
        signature = hmac.new(scope.key, string_to_sign.encode(), hashlib.sha256).hexdigest()
        return f"{scope.credential}{signed}, Signature={signature}"

    def _scope_for(self, access_key: str, secret_key: str, day: str) -> _Scope:
        cached = self._scope
        if (
            cached is not None
            and cached.day == day
            and cached.secret_key == secret_key
            and cached.access_key == access_key
        ):
            return cached
        key = f"AWS4{secret_key}".encode()
        for part in (day, self._region, self._service, "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        scope = f"{day}/{self._region}/{self._service}/aws4_request"
        cached = _Scope(
            access_key,
            secret_key,
            day,
            scope,
            key,
            f"{_ALGORITHM} Credential={access_key}/{scope}, SignedHeaders=",
        )
        self._scope = cached
        return cached

    def _template(self, url: str, headers: Mapping[str, str]) -> _Template | None:
        """The template for ``url`` and ``headers``; None when a header is one this
        signer sets itself."""
        target = self._targets.get(url) or self._target(url)
        if any(name.lower() in _OWN for name in headers):
            return None
        canonical = {
            name.lower(): " ".join(value.split())
            for name, value in headers.items()
            if name.lower() not in _UNSIGNED
        }
        canonical["host"] = target.host
        start = f"POST\n{target.path}\n\n"  # no query string

        def lines(names: list[str]) -> str:
            return "".join(f"{name}:{canonical[name]}\n" for name in names)

        names = sorted({*canonical, "x-amz-date"})
        before = [name for name in names if name < "x-amz-date"]
        after = [name for name in names if name > "x-amz-date"]
        between = [name for name in after if name < "x-amz-security-token"]
        after_token = [name for name in after if name > "x-amz-security-token"]
        signed = ";".join(names)
        signed_with_token = ";".join(sorted({*names, "x-amz-security-token"}))
        return _Template(
            out={**headers, "Host": target.host},
            before_date=f"{start}{lines(before)}x-amz-date:",
            after_date=f"\n{lines(after)}\n{signed}\n",
            between=f"\n{lines(between)}x-amz-security-token:",
            after_token=f"\n{lines(after_token)}\n{signed_with_token}\n",
            signed_headers=signed,
            signed_headers_with_token=signed_with_token,
        )

    def _sign_generally(
        self,
        scope: _Scope,
        token: str | None,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        stamp: str,
    ) -> dict[str, str]:
        """Every step for this request alone: for header sets that name a header this
        signer sets (a caller's ``Host``, say), which the template cannot hold."""
        target = self._targets.get(url) or self._target(url)
        signed_out = {**headers, "Host": target.host, "X-Amz-Date": stamp}
        if token:
            signed_out["X-Amz-Security-Token"] = token
        canonical = {
            name.lower(): " ".join(value.split())
            for name, value in signed_out.items()
            if name.lower() not in _UNSIGNED
        }
        names = sorted(canonical)
        signed_headers = ";".join(names)
        canonical_request = "\n".join(
            (
                "POST",
                target.path,
                "",  # no query string
                *(f"{name}:{canonical[name]}" for name in names),
                "",
                signed_headers,
                hashlib.sha256(body).hexdigest(),
            )
        )
        signed_out["Authorization"] = self._authorization(
            scope, stamp, canonical_request, signed_headers
        )
        return signed_out

    def _target(self, url: str) -> _Target:
        parts = urlsplit(url)
        if parts.query:
            raise ValueError("the direct path signs URLs without a query string only")
        host = parts.hostname or ""
        if ":" in host:  # an IPv6 literal
            host = f"[{host}]"
        if parts.port is not None and parts.port != _DEFAULT_PORTS.get(parts.scheme):
            host = f"{host}:{parts.port}"
        target = _Target(host, quote(normalize_url_path(parts.path), safe="/~"))
        self._targets[url] = target
        return target

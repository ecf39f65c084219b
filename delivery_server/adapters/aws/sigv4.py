"""AWS Signature Version 4 for the direct path's POSTs, as botocore's ``SigV4Auth`` signs them.

botocore's signer is general (query strings, streamed and unsigned payloads, S3 variants)
and spends most of its time on that generality: it builds an ``email.message``-based header
map twice per request, parses the URL three times and derives the signing key with four
HMACs every time. Under the benchmark that cost more CPU than the rest of the request
(docs/benchmarks.md has the figures). Our requests are all alike: a POST of a JSON body, no
query string, a handful of headers, to one endpoint. So this signer works out once per URL
what does not change (host, canonical path, scope), keeps the derived key for the day (the
AWS documentation's own advice), and is checked against ``SigV4Auth`` header for header
(tests/unit/test_sigv4.py), tokens, ports and odd header spacing included.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

from botocore.auth import SIGNED_HEADERS_BLACKLIST
from botocore.credentials import ReadOnlyCredentials
from botocore.exceptions import NoCredentialsError
from botocore.utils import normalize_url_path

_UNSIGNED = frozenset(SIGNED_HEADERS_BLACKLIST)
_DEFAULT_PORTS = {"http": 80, "https": 443}
_ALGORITHM = "AWS4-HMAC-SHA256"


@dataclass(frozen=True, slots=True)
class _Target:
    host: str
    path: str


class SigV4Signer:
    """Signs POSTs to one service in one region."""

    def __init__(self, service: str, region: str) -> None:
        self._service = service
        self._region = region
        self._targets: dict[str, _Target] = {}
        self._key: tuple[str, str, bytes] | None = None  # (secret, yyyymmdd, signing key)

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
        if not credentials.access_key or not credentials.secret_key:
            raise NoCredentialsError
        target = self._targets.get(url) or self._target(url)
        stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
        day = stamp[:8]
        signed_out = {**headers, "Host": target.host, "X-Amz-Date": stamp}
        if credentials.token:
            signed_out["X-Amz-Security-Token"] = credentials.token
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
        scope = f"{day}/{self._region}/{self._service}/aws4_request"
        string_to_sign = "\n".join(
            (_ALGORITHM, stamp, scope, hashlib.sha256(canonical_request.encode()).hexdigest())
        )
        signature = hmac.new(
            self._signing_key(credentials.secret_key, day), string_to_sign.encode(), "sha256"
        ).hexdigest()
        signed_out["Authorization"] = (
            f"{_ALGORITHM} Credential={credentials.access_key}/{scope}, "
            f"SignedHeaders={signed_headers}, Signature={signature}"
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

    def _signing_key(self, secret: str, day: str) -> bytes:
        cached = self._key
        if cached is not None and cached[0] == secret and cached[1] == day:
            return cached[2]
        key = f"AWS4{secret}".encode()
        for part in (day, self._region, self._service, "aws4_request"):
            key = hmac.new(key, part.encode(), "sha256").digest()
        self._key = (secret, day, key)
        return key

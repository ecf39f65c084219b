"""What the simulated SES does wrong on purpose: latency, errors, a send-rate limit.

A fault plan is a list of rules tried in order for every SendEmail. A rule fires when its
pattern (if any) matches one of the recipients, with its probability, while it has firings
left; the first rule that fires decides the error. The plan is plain JSON so that QA can
change it at runtime (``POST /_sim/faults``) as well as at start-up (CLI flags)::

    {"latency": 0.02, "max_send_rate": 2000, "enforce_rate": false, "seed": 1,
     "rules": [{"error": "throttle", "rate": 0.05},
               {"error": "reject", "match": "bounce@", "count": 3}]}
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass, field
from typing import Any

# Error code -> HTTP status, as SES v2 answers them. "drop" is not an SES error: the
# email is accepted and recorded, then the connection is cut before the answer, which
# is the one case a client cannot tell from a failure (an "unknown" email).
SES_ERRORS: dict[str, int] = {
    "TooManyRequestsException": 429,
    "LimitExceededException": 400,
    "MessageRejected": 400,
    "SendingPausedException": 400,
    "AccountSuspendedException": 400,
    "MailFromDomainNotVerifiedException": 400,
    "BadRequestException": 400,
    "NotFoundException": 404,
    "InternalFailure": 500,
    "ServiceUnavailable": 503,
    "drop": 0,
}

ERROR_ALIASES: dict[str, str] = {
    "throttle": "TooManyRequestsException",
    "429": "TooManyRequestsException",
    "reject": "MessageRejected",
    "paused": "SendingPausedException",
    "suspended": "AccountSuspendedException",
    "500": "InternalFailure",
    "503": "ServiceUnavailable",
}


class FaultSpecError(ValueError):
    """A fault rule or plan that cannot be understood."""


def error_code(name: str) -> str:
    """Resolve an alias (``throttle``, ``500``) to an SES error code."""
    code = ERROR_ALIASES.get(name, name)
    if code not in SES_ERRORS:
        known = ", ".join(sorted([*SES_ERRORS, *ERROR_ALIASES]))
        raise FaultSpecError(f"unknown error {name!r}; use one of {known}")
    return code


@dataclass(slots=True)
class FaultRule:
    """Fail sends with ``error``; optionally only for recipients matching ``match``."""

    error: str
    match: re.Pattern[str] | None = None
    rate: float = 1.0
    count: int | None = None  # firings left; None: no limit

    @classmethod
    def from_json(cls, raw: Any) -> FaultRule:
        if not isinstance(raw, dict) or "error" not in raw:
            raise FaultSpecError("a rule is an object with at least 'error'")
        unknown = set(raw) - {"error", "match", "rate", "count"}
        if unknown:
            raise FaultSpecError(f"unknown rule keys: {sorted(unknown)}")
        rate = float(raw.get("rate", 1.0))
        if not 0.0 <= rate <= 1.0:
            raise FaultSpecError("rate must be between 0 and 1")
        count = raw.get("count")
        try:
            match = re.compile(raw["match"]) if raw.get("match") else None
        except re.error as exc:
            raise FaultSpecError(f"bad match pattern: {exc}") from exc
        return cls(
            error=error_code(str(raw["error"])),
            match=match,
            rate=rate,
            count=None if count is None else int(count),
        )

    @classmethod
    def from_cli(cls, spec: str) -> FaultRule:
        """Parse ``ERROR[,match=REGEX][,rate=P][,count=N]`` (the ``--fault`` flag)."""
        error, *options = spec.split(",")
        raw: dict[str, Any] = {"error": error.strip()}
        for option in options:
            key, sep, value = option.partition("=")
            if not sep:
                raise FaultSpecError(f"expected key=value in {spec!r}")
            raw[key.strip()] = value
        return cls.from_json(raw)

    def to_json(self) -> dict[str, Any]:
        return {
            "error": self.error,
            "match": self.match.pattern if self.match else None,
            "rate": self.rate,
            "count": self.count,
        }


@dataclass(slots=True)
class FaultPlan:
    """Latency, error rules and the account's send rate for the simulated SES."""

    latency: float = 0.02
    rules: list[FaultRule] = field(default_factory=list)
    max_send_rate: float = 2000.0
    enforce_rate: bool = False
    seed: int | None = None
    _rng: random.Random = field(default_factory=random.Random, repr=False)
    _tokens: float = 0.0
    _refilled_at: float = 0.0

    def __post_init__(self) -> None:
        self._rng.seed(self.seed)
        self._tokens = self.max_send_rate
        self._refilled_at = time.monotonic()

    @classmethod
    def from_json(cls, raw: Any) -> FaultPlan:
        if not isinstance(raw, dict):
            raise FaultSpecError("a fault plan is a JSON object")
        unknown = set(raw) - {"latency", "rules", "max_send_rate", "enforce_rate", "seed"}
        if unknown:
            raise FaultSpecError(f"unknown fault plan keys: {sorted(unknown)}")
        latency = float(raw.get("latency", 0.02))
        max_rate = float(raw.get("max_send_rate", 2000.0))
        if latency < 0 or max_rate <= 0:
            raise FaultSpecError("latency must be >= 0 and max_send_rate > 0")
        rules = raw.get("rules") or []
        if not isinstance(rules, list):
            raise FaultSpecError("rules must be a list")
        seed = raw.get("seed")
        return cls(
            latency=latency,
            rules=[FaultRule.from_json(rule) for rule in rules],
            max_send_rate=max_rate,
            enforce_rate=bool(raw.get("enforce_rate", False)),
            seed=None if seed is None else int(seed),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "latency": self.latency,
            "rules": [rule.to_json() for rule in self.rules],
            "max_send_rate": self.max_send_rate,
            "enforce_rate": self.enforce_rate,
            "seed": self.seed,
        }

    def pick_error(self, recipients: list[str]) -> str | None:
        """The error this send must fail with, or None to accept it."""
        if self.enforce_rate and not self._take_token():
            return "TooManyRequestsException"
        for rule in self.rules:
            if rule.count is not None and rule.count <= 0:
                continue
            if rule.match is not None and not any(rule.match.search(r) for r in recipients):
                continue
            if rule.rate < 1.0 and self._rng.random() >= rule.rate:
                continue
            if rule.count is not None:
                rule.count -= 1
            return rule.error
        return None

    def _take_token(self) -> bool:
        """A token bucket holding one second of the account's send rate."""
        now = time.monotonic()
        elapsed, self._refilled_at = now - self._refilled_at, now
        self._tokens = min(self.max_send_rate, self._tokens + elapsed * self.max_send_rate)
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

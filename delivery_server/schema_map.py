"""``DELIVERY_SCHEMA_MAP`` (DESIGN §11): an upstream system's job and email tables, their
columns and status values, mapped onto ours. Parsed and checked here (pure); the SQL
store checks it against the database and runs on it (``adapters/store_sql/legacy*.py``).

Our job and email records live in our own tables (``delivery_job``, ``delivery_email``),
keyed by the upstream system's ids: that is the side table that holds what their tables
cannot (our fine state, leases, attempts, message ids, delivery statuses). Their status
column is kept showing the coarse state, and the columns the map names for what we record
(sent time, message id, ...) are kept up to date, in the same transaction as our write.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from delivery_server.errors import ConfigError
from delivery_server.models import EmailStatus, JobStatus

SETTING = "DELIVERY_SCHEMA_MAP"

# Columns read from their rows when a job or an email is taken over (``id``, ``status``
# and the ones marked required must exist; the others are used when present).
JOB_READ = ("id", "status", "name", "template_name", "from_address", "reply_to",
            "scheduled_at", "created_at", "send_by")  # fmt: skip
EMAIL_READ = ("id", "job_id", "to_address", "status", "locale", "variables", "attachments",
              "created_at")  # fmt: skip
# Columns we write back into their row when the map names them.
JOB_WRITTEN = ("started_at", "finished_at", "total_count", "sent_count", "failed_count",
               "paused_reason", "template_version")  # fmt: skip
EMAIL_WRITTEN = ("attempts", "last_error", "provider_message_id", "updated_at", "sent_at",
                 "delivery_status", "delivery_detail", "delivery_updated_at",
                 "template_version")  # fmt: skip
JOB_REQUIRED = ("id", "status", "template_name", "from_address")
EMAIL_REQUIRED = ("id", "job_id", "to_address", "variables", "status")

# A state the map leaves out shows the value of this one (then its own name).
EMAIL_FALLBACK = {
    "queued": "pending",
    "sending": "queued",
    "unknown": "failed",
    "suppressed": "failed",
    "cancelled": "failed",
    "expired": "failed",
}
JOB_FALLBACK = {"paused": "processing", "cancelled": "failed"}
# States in different groups must not share a value: their column must tell waiting from
# sent from not sent, and a job not started from one running from one finished.
EMAIL_GROUPS = {
    "pending": "waiting", "queued": "waiting", "sending": "waiting",
    "sent": "sent",
    "failed": "not sent", "suppressed": "not sent", "cancelled": "not sent",
    "expired": "not sent", "unknown": "not sent",
}  # fmt: skip
JOB_GROUPS = {
    "draft": "not started",
    "processing": "running", "paused": "running",
    "completed": "finished", "failed": "finished", "cancelled": "finished",
}  # fmt: skip

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
# Values are written into trigger bodies as literals: a plain charset keeps that safe.
VALUE = re.compile(r"^[A-Za-z0-9 _.-]{1,64}$")

Value = str | int


@dataclass(frozen=True)
class TableMap:
    """One of their tables: which of their columns holds each of ours, and the value
    their status column shows for each of our states."""

    key: str  # "job" or "email": the TOML section, for messages
    table: str
    columns: Mapping[str, str]  # our column -> theirs, as named in the file
    values: Mapping[str, Value]  # every one of our states -> their value
    listed: tuple[str, ...]  # the states the file names, in its order
    add_columns: bool

    def canonical(self, value: Value) -> str:
        """Our state for a value found in their column: the first state the file maps
        to it (else the first of ours that shows it)."""
        for state in (*self.listed, *self.values):
            if self.values[state] == value:
                return state
        raise KeyError(value)

    def column(self, ours: str) -> str:
        """Their column for one of ours (the same name when the file does not say)."""
        return self.columns.get(ours, ours)


@dataclass(frozen=True)
class SchemaMap:
    job: TableMap
    email: TableMap


def load_schema_map(path: Path) -> SchemaMap:
    """Read and check the file; ``ConfigError`` naming the key that is wrong."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _error("", f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise _error("", f"{path}: {exc}") from None
    return parse_schema_map(data)


def parse_schema_map(data: Mapping[str, Any]) -> SchemaMap:
    """The map from the file's parsed TOML."""
    unknown = sorted(set(data) - {"job", "email", "add_columns"})
    if unknown:
        raise _error(unknown[0], "unknown key (expected [job], [email], add_columns)")
    add_columns = _bool(data, "add_columns", "add_columns", default=False)
    job = _table(
        data, "job", JobStatus, JOB_READ + JOB_WRITTEN, JOB_REQUIRED, JOB_FALLBACK,
        JOB_GROUPS, add_columns,
    )  # fmt: skip
    email = _table(
        data, "email", EmailStatus, EMAIL_READ + EMAIL_WRITTEN, EMAIL_REQUIRED,
        EMAIL_FALLBACK, EMAIL_GROUPS, add_columns,
    )  # fmt: skip
    if job.table == email.table:
        raise _error("email.table", f"{email.table!r} is also job.table")
    return SchemaMap(job=job, email=email)


def _table(
    data: Mapping[str, Any],
    key: str,
    states: type[JobStatus] | type[EmailStatus],
    known_columns: tuple[str, ...],
    required: tuple[str, ...],
    fallback: Mapping[str, str],
    groups: Mapping[str, str],
    add_columns: bool,
) -> TableMap:
    section = data.get(key)
    if not isinstance(section, dict):
        raise _error(key, f"missing: a [{key}] section with its table")
    unknown = sorted(set(section) - {"table", "columns", "status", "add_columns"})
    if unknown:
        raise _error(f"{key}.{unknown[0]}", "unknown key")
    table = section.get("table")
    if not isinstance(table, str) or not IDENTIFIER.match(table):
        raise _error(f"{key}.table", "must be a table name (letters, digits, _)")
    if table.startswith("delivery_"):
        raise _error(f"{key}.table", f"{table!r}: delivery_* tables are ours")
    columns = _columns(section.get("columns", {}), key, known_columns)
    values, listed = _values(section.get("status", {}), key, states, fallback, groups)
    return TableMap(
        key=key,
        table=table,
        columns=columns,
        values=values,
        listed=listed,
        add_columns=_bool(section, "add_columns", f"{key}.add_columns", default=add_columns),
    )


def _columns(raw: Any, key: str, known: tuple[str, ...]) -> dict[str, str]:
    if not isinstance(raw, dict):
        raise _error(f"{key}.columns", "must be a table of our column = their column")
    columns: dict[str, str] = {}
    for ours, theirs in raw.items():
        name = f"{key}.columns.{ours}"
        if ours not in known:
            raise _error(name, f"not a column of ours (one of: {', '.join(known)})")
        if not isinstance(theirs, str) or not IDENTIFIER.match(theirs):
            raise _error(name, "must be a column name (letters, digits, _)")
        if theirs in columns.values():
            other = next(o for o, t in columns.items() if t == theirs)
            raise _error(name, f"{theirs!r} is also {key}.columns.{other}")
        columns[ours] = theirs
    return columns


def _values(
    raw: Any,
    key: str,
    states: type[JobStatus] | type[EmailStatus],
    fallback: Mapping[str, str],
    groups: Mapping[str, str],
) -> tuple[dict[str, Value], tuple[str, ...]]:
    if not isinstance(raw, dict):
        raise _error(f"{key}.status", "must be a table of our state = their value")
    ours = [s.value for s in states]
    explicit: dict[str, Value] = {}
    for state, value in raw.items():
        name = f"{key}.status.{state}"
        if state not in ours:
            raise _error(name, f"unknown state (one of: {', '.join(ours)})")
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise _error(name, "must be a string or an integer")
        if isinstance(value, str) and not VALUE.match(value):
            raise _error(name, "must be letters, digits, spaces or _ . - (at most 64)")
        explicit[state] = value
    values = dict(explicit)
    for state in ours:
        if state not in values:
            values[state] = _fallback_value(state, explicit, fallback)
    for state in ours:  # the file's states first: the message names the key it wrote
        for other in ours:
            if values[other] == values[state] and groups[state] != groups[other]:
                culprit = state if state in explicit else other
                partner = other if culprit == state else state
                raise _error(
                    f"{key}.status.{culprit}",
                    f"{values[culprit]!r} is also the value of {partner}"
                    f" ({culprit} and {partner} must stay apart)",
                )
    return values, tuple(explicit)


def _fallback_value(
    state: str, explicit: Mapping[str, Value], fallback: Mapping[str, str]
) -> Value:
    current = state
    while current not in explicit and current in fallback:
        current = fallback[current]
    return explicit.get(current, state)


def _bool(data: Mapping[str, Any], key: str, name: str, *, default: bool) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise _error(name, "must be true or false")
    return value


def _error(key: str, why: str) -> ConfigError:
    where = f"{SETTING}: {key}: " if key else f"{SETTING}: "
    return ConfigError(f"configuration error: {where}{why}")

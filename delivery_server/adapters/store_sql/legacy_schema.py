"""An upstream system's own job and email tables (``DELIVERY_SCHEMA_MAP``, DESIGN §11),
checked against the database and described as SQLAlchemy tables keyed by our names.

Their rows are taken over into ``delivery_job``/``delivery_email`` (our side tables, keyed
by their ids: ``legacy_store``); two triggers on our tables keep their status column
showing the coarse state, and the columns the map names for what we record, in the same
transaction as each of our writes. ``db upgrade`` creates the triggers; it alters their
tables only to add the columns the map names when ``add_columns = true``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from delivery_server.adapters.store_sql import schema
from delivery_server.errors import ConfigError
from delivery_server.schema_map import (
    EMAIL_READ,
    EMAIL_REQUIRED,
    EMAIL_WRITTEN,
    JOB_READ,
    JOB_REQUIRED,
    JOB_WRITTEN,
    SETTING,
    SchemaMap,
    TableMap,
    Value,
)

TRIGGERS = {"job": "delivery_mirror_job", "email": "delivery_mirror_email"}
_OURS = {"job": schema.job, "email": schema.email}
_SHAPE = {
    "job": (JOB_READ, JOB_WRITTEN, JOB_REQUIRED),
    "email": (EMAIL_READ, EMAIL_WRITTEN, EMAIL_REQUIRED),
}
# Their variables and attachments columns hold JSON text whatever their declared type.
_JSON_COLUMNS = ("variables", "attachments")


@dataclass(frozen=True)
class TheirTables:
    """Their two tables, each column keyed by our name (``job.c.template_name`` is their
    ``template``); only the columns they have. ``written`` are the ones we keep up to
    date from our own tables."""

    map: SchemaMap
    job: sa.Table
    email: sa.Table
    job_written: tuple[str, ...]
    email_written: tuple[str, ...]


def describe(conn: sa.Connection, schema_map: SchemaMap, *, adding: bool = False) -> TheirTables:
    """Check the map against the database (``ConfigError`` naming the key); with
    ``adding``, first add the columns it names that are missing where ``add_columns``
    allows it (``db upgrade``)."""
    metadata = sa.MetaData()
    tables: dict[str, tuple[sa.Table, tuple[str, ...]]] = {}
    for key, table_map in (("job", schema_map.job), ("email", schema_map.email)):
        if adding:
            _add_columns(conn, key, table_map)
        tables[key] = _table(conn, key, table_map, metadata)
    return TheirTables(
        map=schema_map,
        job=tables["job"][0],
        email=tables["email"][0],
        job_written=tables["job"][1],
        email_written=tables["email"][1],
    )


def _their_columns(conn: sa.Connection, key: str, table_map: TableMap) -> dict[str, Any]:
    inspector = sa.inspect(conn)
    if not inspector.has_table(table_map.table):
        raise _error(f"{key}.table", f"no table {table_map.table!r} in the database")
    return {c["name"]: c for c in inspector.get_columns(table_map.table)}


def _add_columns(conn: sa.Connection, key: str, table_map: TableMap) -> None:
    if not table_map.add_columns:
        return
    existing = _their_columns(conn, key, table_map)
    _, written, _ = _SHAPE[key]
    quote = conn.dialect.identifier_preparer.quote
    for ours in written:
        theirs = table_map.columns.get(ours)
        if theirs is None or theirs in existing:
            continue
        type_sql = _OURS[key].c[ours].type.compile(dialect=conn.dialect)
        conn.execute(
            sa.text(
                f"ALTER TABLE {quote(table_map.table)} ADD COLUMN {quote(theirs)} {type_sql} NULL"
            )
        )


def _table(
    conn: sa.Connection, key: str, table_map: TableMap, metadata: sa.MetaData
) -> tuple[sa.Table, tuple[str, ...]]:
    existing = _their_columns(conn, key, table_map)
    read, written, required = _SHAPE[key]
    columns: list[sa.Column[Any]] = []
    used: list[str] = []
    for ours in (*read, *written):
        theirs = table_map.column(ours)
        named = ours in table_map.columns
        if theirs not in existing:
            if ours in required or named:
                hint = "" if named else f" (name theirs in {key}.columns.{ours})"
                why = f"{table_map.table!r} has no column {theirs!r}{hint}"
                if named and ours in written:
                    why += "; add_columns = true adds it"
                raise _error(f"{key}.columns.{ours}", why)
            continue
        if ours in written and not named:
            continue  # only what the map names is written into their rows
        reflected = existing[theirs]
        type_: Any = schema.JsonValue if ours in _JSON_COLUMNS else reflected["type"]
        if ours == "id" and not isinstance(reflected["type"], sa.Integer):
            raise _error(f"{key}.columns.id", f"{theirs!r} must be an integer column")
        columns.append(sa.Column(theirs, type_, key=ours, primary_key=ours == "id"))
        used.append(ours)
    _check_values(key, table_map, existing[table_map.column("status")]["type"])
    table = sa.Table(table_map.table, metadata, *columns)
    return table, tuple(c for c in used if c in written)


def _check_values(key: str, table_map: TableMap, type_: Any) -> None:
    """Every value must fit their status column (a state the file leaves out shows its
    fallback's value or its own name)."""
    length = getattr(type_, "length", None)
    numeric = isinstance(type_, sa.Integer)
    for state, value in table_map.values.items():
        name = f"{key}.status.{state}"
        if numeric and not isinstance(value, int):
            raise _error(name, f"{value!r}: their status column holds integers")
        if not numeric and isinstance(value, int):
            raise _error(name, f"{value}: their status column holds text (write it quoted)")
        if length is not None and isinstance(value, str) and len(value) > length:
            raise _error(name, f"{value!r} does not fit their status column ({length} chars)")


def coarse(table_map: TableMap, status: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """Their value for one of our states (a SQL expression)."""
    return sa.case(
        *((status == state, sa.literal(value)) for state, value in table_map.values.items())
    )


def decoded(table_map: TableMap, status: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """Our state for a value of their status column (NULL for a value the map lacks)."""
    values = list(dict.fromkeys(table_map.values.values()))
    return sa.case(*((status == value, sa.literal(table_map.canonical(value))) for value in values))


def known_values(table_map: TableMap) -> list[Value]:
    return list(dict.fromkeys(table_map.values.values()))


def trigger_statements(dialect: sa.Dialect, tables: TheirTables) -> list[str]:
    """The DDL of the two mirroring triggers (dropped first: the map may have changed)."""
    statements = drop_trigger_statements()
    for key, their, written in (
        ("job", tables.job, tables.job_written),
        ("email", tables.email, tables.email_written),
    ):
        table_map = tables.map.job if key == "job" else tables.map.email
        statements.append(_trigger(dialect, key, table_map, their, written))
    return statements


def drop_trigger_statements() -> list[str]:
    return [f"DROP TRIGGER IF EXISTS {name}" for name in TRIGGERS.values()]


def _trigger(
    dialect: sa.Dialect, key: str, table_map: TableMap, their: sa.Table, written: Sequence[str]
) -> str:
    quote = dialect.identifier_preparer.quote
    mysql = dialect.name == "mysql"
    ours = _OURS[key].name

    def coarse_of(row: str) -> str:
        whens = " ".join(
            f"WHEN '{state}' THEN {_literal(value)}" for state, value in table_map.values.items()
        )
        return f"(CASE {row}.status {whens} END)"

    def changed(new: str, old: str) -> str:
        return f"NOT ({new} <=> {old})" if mysql else f"({new} IS NOT {old})"

    sets = [f"{quote(table_map.column('status'))} = {coarse_of('NEW')}"]
    conditions = [changed(coarse_of("NEW"), coarse_of("OLD"))]
    for column in written:
        sets.append(f"{quote(their.c[column].name)} = NEW.{column}")
        conditions.append(changed(f"NEW.{column}", f"OLD.{column}"))
    # Identifiers are checked names, quoted; values checked literals (schema_map).
    update = (
        f"UPDATE {quote(table_map.table)} SET {', '.join(sets)}"  # noqa: S608
        f" WHERE {quote(table_map.column('id'))} = NEW.id"
    )
    head = f"CREATE TRIGGER {TRIGGERS[key]} AFTER UPDATE ON {ours} FOR EACH ROW"
    condition = " OR ".join(conditions)
    if mysql:
        return f"{head} BEGIN IF {condition} THEN {update}; END IF; END"
    return f"{head} WHEN {condition} BEGIN {update}; END"


def _literal(value: Value) -> str:
    # Values are checked to be integers or plain characters (schema_map.VALUE).
    return str(value) if isinstance(value, int) else f"'{value}'"


def _error(key: str, why: str) -> ConfigError:
    return ConfigError(f"configuration error: {SETTING}: {key}: {why}")

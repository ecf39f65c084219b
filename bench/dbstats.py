"""Statements our servers send MariaDB, counted by MariaDB itself.

The servers of a run connect as a MariaDB user of their own (made for the run, dropped
after it), and MariaDB's user statistics (``information_schema.USER_STATISTICS``, on while
``userstat`` is) count that user's statements: every ``SELECT``, ``UPDATE``/``INSERT``/
``DELETE`` and other statement (``COMMIT`` included), each one round trip (the store sends
one statement per request, and its pooled connections outlive the run, so handshakes and
pings are not part of it). Counting by user rather than by ``SHOW GLOBAL STATUS
'Questions'`` leaves out the bench's own polling and whatever else uses the server on a
shared machine, so the figure does not depend on the machine's load. The user's
``CPU_TIME`` (the CPU of the threads serving its statements, without InnoDB's background
work) is reported beside the mariadbd process CPU for the same reason.

Turning ``userstat`` on is a global setting, and it is left on: two bench runs may share
the server (each with its own user and database), and one turning it off at its end would
stop the other's counts midway. A run whose counter was off at either end of its window
gets no statement figures rather than wrong ones.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pymysql  # type: ignore[import-untyped]

from bench.workload import connect

# The columns of USER_STATISTICS that count statements; their sum is the round trips.
STATEMENT_COLUMNS = ("SELECT_COMMANDS", "UPDATE_COMMANDS", "OTHER_COMMANDS")


@dataclass(frozen=True, slots=True)
class UserStatements:
    """What MariaDB counted for one user so far."""

    selects: int
    updates: int
    others: int
    cpu_s: float

    @property
    def statements(self) -> int:
        return self.selects + self.updates + self.others

    def since(self, before: UserStatements) -> UserStatements:
        return UserStatements(
            selects=self.selects - before.selects,
            updates=self.updates - before.updates,
            others=self.others - before.others,
            cpu_s=round(self.cpu_s - before.cpu_s, 3),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "statements": self.statements,
            "selects": self.selects,
            "updates": self.updates,
            "others": self.others,
            "cpu_s": self.cpu_s,
        }


@dataclass(frozen=True, slots=True)
class BenchUser:
    """The MariaDB account our servers use in one run; ``counted`` is False when MariaDB
    keeps no user statistics (the figures are then ``na``)."""

    params: Mapping[str, Any]
    user: str
    password: str
    counted: bool

    @property
    def server_params(self) -> dict[str, Any]:
        return {**self.params, "user": self.user, "password": self.password}

    def statements(self) -> UserStatements | None:
        """The user's counts now (zero before its first statement); None uncounted."""
        if not self.counted:
            return None
        columns = ", ".join(STATEMENT_COLUMNS)
        with connect(self.params) as conn, conn.cursor() as cur:
            cur.execute("SELECT @@GLOBAL.userstat")
            (on,) = cur.fetchone()
            if not on:
                return None
            cur.execute(
                f"SELECT {columns}, CPU_TIME FROM information_schema.USER_STATISTICS"  # noqa: S608 - constant columns
                " WHERE USER = %s",
                (self.user,),
            )
            row = cur.fetchone()
        if row is None:
            return UserStatements(0, 0, 0, 0.0)
        return UserStatements(int(row[0]), int(row[1]), int(row[2]), float(row[3]))


@contextlib.contextmanager
def bench_user(params: Mapping[str, Any], database: str) -> Iterator[BenchUser]:
    """A MariaDB user with every privilege on ``database`` only, counted by MariaDB's
    user statistics (turned on); dropped after the block."""
    user = f"dbench_{os.getpid()}_{secrets.token_hex(3)}"
    password = secrets.token_urlsafe(16)
    with connect(params) as conn, conn.cursor() as cur:
        cur.execute("CREATE USER %s@'%%' IDENTIFIED BY %s", (user, password))
        cur.execute(f"GRANT ALL ON `{database}`.* TO %s@'%%'", (user,))
        counted = _turn_userstat_on(cur)
    try:
        yield BenchUser(params, user, password, counted=counted)
    finally:
        with connect(params) as conn, conn.cursor() as cur:
            cur.execute("DROP USER IF EXISTS %s@'%%'", (user,))


def _turn_userstat_on(cur: Any) -> bool:
    """Turn ``userstat`` on; False when MariaDB keeps no user statistics (MySQL, or no
    privilege to turn them on)."""
    try:
        cur.execute("SET GLOBAL userstat = 1")
    except pymysql.MySQLError:
        return False
    return True

"""What a sending process imports: nothing that only another command or a rare path
needs. Each of these costs every task its memory for as long as it runs (Alembic with
Mako ~28 MB, cryptography's X.509 ~10 MB, the numbering plans ~1.5 MB)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.imports import loaded, modules_of

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[2]

# Imported where they are used: ``db upgrade`` / a task's upgrade at start, the SNS
# signature check of ``POST /ses/events``, the check of an SMS number.
ON_DEMAND = ("alembic", "mako", "cryptography.x509", "phonenumbers")

_IMPORT_A_SERVER = """
import json, sys
import delivery_server.cli
import delivery_server.app.roles
import delivery_server.app.tracking
from delivery_server.adapters.store_sql import SqlStore, upgrade_schema
from delivery_server.adapters.aws.sns import SnsVerifier
from delivery_server import sms
at_start = sorted(sys.modules)
from delivery_server.adapters.store_sql.migrate import alembic_config
alembic_config()
sms.normalize_phone("+14155550100")
print(json.dumps({"at_start": at_start, "used": sorted(sys.modules)}))
"""


def test_a_server_imports_the_on_demand_modules_only_when_used() -> None:
    modules = modules_of(_IMPORT_A_SERVER, cwd=REPO)
    assert loaded(modules["at_start"], ON_DEMAND) == set()
    # The check sees them once they are used (x509 when a certificate is read).
    assert loaded(modules["used"], ON_DEMAND) == {"alembic", "mako", "phonenumbers"}

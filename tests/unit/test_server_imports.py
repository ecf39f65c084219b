"""What a sending process imports: nothing that only another command or a rare path
needs. Each of these costs every task its memory for as long as it runs (Alembic with
Mako ~28 MB, cryptography's X.509 ~10 MB, the numbering plans ~1.5 MB)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

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


def _loaded(modules: list[str]) -> set[str]:
    return {p for p in ON_DEMAND if any(m == p or m.startswith(p + ".") for m in modules)}


def test_a_server_imports_the_on_demand_modules_only_when_used() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_A_SERVER],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    modules = json.loads(done.stdout.splitlines()[-1])
    assert _loaded(modules["at_start"]) == set()
    # The check sees them once they are used (x509 when a certificate is read).
    assert _loaded(modules["used"]) == {"alembic", "mako", "phonenumbers"}

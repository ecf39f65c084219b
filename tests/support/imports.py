"""What a process imports: a script run in a fresh interpreter prints, as its last line,
a JSON object of module lists (``sorted(sys.modules)`` at the moments it chooses)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


def modules_of(script: str, *, cwd: Path, env: Mapping[str, str] | None = None) -> Any:
    """Run ``script`` with this interpreter; the JSON of its last line of output."""
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=None if env is None else dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def loaded(modules: Iterable[str], packages: Iterable[str]) -> set[str]:
    """Which of ``packages`` (a module or any of its submodules) are among ``modules``."""
    names = list(modules)
    return {p for p in packages if any(m == p or m.startswith(p + ".") for m in names)}

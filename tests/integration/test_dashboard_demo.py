"""``delivery-server demo`` starts the operator console: the URL and the token it prints
log in, the demo job is there, and ``--keep-serving`` keeps it up until Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import pytest

from tests.integration.test_demo import REPO
from tests.support.console_rig import browser

pytestmark = pytest.mark.timeout(180)

URL = re.compile(r"operator console: http://127\.0\.0\.1:(\d+)/")
TOKEN = re.compile(r"^(dsk_\S+)$")


async def read_until(stream: asyncio.StreamReader, marker: str, seen: list[str]) -> None:
    while marker not in (line := (await stream.readline()).decode()):
        if not line:
            raise AssertionError(f"the demo ended before {marker!r}: {''.join(seen)}")
        seen.append(line)
    seen.append(line)


async def test_demo_serves_the_console_with_a_token_until_ctrl_c(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DELIVERY_")}
    demo = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "delivery_server",
        "demo",
        "--emails",
        "20",
        "--console-port",
        "0",
        "--keep-serving",
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", "COLUMNS": "200"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert demo.stdout is not None
    seen: list[str] = []
    try:
        await asyncio.wait_for(read_until(demo.stdout, "press Ctrl-C", seen), timeout=120)
        text = "".join(seen)
        url = URL.search(text)
        tokens = [m.group(1) for line in seen if (m := TOKEN.match(line.strip()))]
        assert url is not None, text
        assert len(tokens) == 1, text
        assert "20 sent" in text  # the demo ended its job as ever, then kept serving
        async with browser(int(url.group(1))) as b:
            assert (await b.login(tokens[0]))[0] == 303
            status, page, _ = await b.get("/")
            assert status == 200
            assert "demo: 20 statements" in page
            assert "completed" in page
    finally:
        if demo.returncode is None:
            demo.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(demo.wait(), timeout=60)
    assert code == 0

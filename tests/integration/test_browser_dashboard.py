"""The console in a real browser: Debian's headless Chromium, driven by Playwright.

An operator logs in, opens a running job, sees its progress move without reloading
(the polled blocks), pauses and resumes it, downloads the failed emails' CSV and
searches a recipient; the page never trips its own Content-Security-Policy. On failure a
screenshot of the page is kept under ``test-artifacts/``. Chromium is required (CI
installs it in .ci/run): the test fails, never skips, without it.
"""

from __future__ import annotations

import contextlib
import csv
import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from delivery_server.models import JobStatus
from tests.integration.harness import create_job
from tests.support.console_rig import console_settings, recipients, running_console

pytestmark = pytest.mark.timeout(120)

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture(scope="session")
def chromium_installed() -> None:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does)")


@pytest.fixture
async def chromium(chromium_installed: None) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        # As root (CI), Chromium's sandbox cannot start; the pages are our own.
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox"]
        )
        yield browser
        await browser.close()


@contextlib.asynccontextmanager
async def screenshot_on_failure(page: Page, name: str) -> AsyncIterator[None]:
    try:
        yield
    except BaseException:
        ARTIFACTS.mkdir(exist_ok=True)
        with contextlib.suppress(Exception):
            await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
            (ARTIFACTS / f"{name}.html").write_text(await page.content())
        raise


async def test_an_operator_watches_pauses_resumes_downloads_and_searches(
    chromium: Browser, mariadb_url: str, tmp_path: Path
) -> None:
    # Five sends a second: the 300-email job is still running when the browser looks.
    settings = console_settings(mariadb_url, tmp_path, max_send_rate=5.0)
    async with running_console(settings) as console:
        job = await create_job(console.store, recipients(300, failing=3))
        context = await chromium.new_context(accept_downloads=True)
        page = await context.new_page()
        page.set_default_timeout(20_000)
        complaints: list[str] = []
        page.on("console", lambda m: complaints.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: complaints.append(str(e)))
        async with screenshot_on_failure(page, "operator-console"):
            await page.goto(f"http://127.0.0.1:{console.port}/")
            await expect(page).to_have_url(f"http://127.0.0.1:{console.port}/login")
            await page.get_by_label("API token").fill(console.operate_token)
            await page.get_by_role("button", name="Log in").click()
            await expect(page.get_by_role("heading", name="Jobs")).to_be_visible()

            await page.get_by_role("link", name=f"#{job.id} test job").click()
            await expect(page.locator("#job-state")).to_have_text("processing")
            # The progress moves on the page by itself (the polled block, no reload).
            first = await page.locator("#job-done").inner_text()
            await page.wait_for_function(
                "(first) => document.querySelector('#job-done').textContent !== first",
                arg=first,
            )
            await page.wait_for_function(
                "() => document.querySelector('#job-status').dataset.refreshed"
            )

            await page.get_by_role("button", name="Pause").click()
            await expect(page.get_by_role("status")).to_contain_text("paused")
            await expect(page.locator("#job-state")).to_have_text("paused")
            assert (await console.store.job(job.id)).status is JobStatus.PAUSED
            await page.get_by_role("button", name="Resume").click()
            await expect(page.locator("#job-state")).to_have_text("processing")
            assert (await console.store.job(job.id)).status is JobStatus.PROCESSING

            async with page.expect_download() as downloading:
                await page.get_by_role("link", name="CSV of the failed emails").click()
            download = await downloading.value
            saved = tmp_path / "failed.csv"
            await download.save_as(saved)
            rows = list(csv.DictReader(io.StringIO(saved.read_text())))
            assert sorted(r["to_address"] for r in rows) == [
                f"c{n}@customers.example" for n in (1, 2, 3)
            ]

            await page.get_by_label("Address (or its beginning)").fill("c42@")
            await page.get_by_role("button", name="Search").click()
            await expect(page.get_by_text("1 email found")).to_be_visible()
            await expect(page.get_by_role("cell", name="c42@customers.example")).to_be_visible()
            assert "c42" not in page.url

            # Readable on a phone: the same page, narrow.
            await page.set_viewport_size({"width": 390, "height": 844})
            await expect(page.get_by_role("button", name="Pause")).to_be_visible()
            width = await page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, f"the page is {width}px wide on a 390px screen"
            assert complaints == [], complaints
        await context.close()

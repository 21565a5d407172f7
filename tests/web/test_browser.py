"""A real browser on the gallery: Debian's chromium, headless, driven by Playwright (its own browser
download is never used). Logs in through the sandbox's OAuth2 page, scrolls the grid until the next keyset
page arrives, searches, opens an image, stars it, downloads the PNG and checks its bytes. Screenshots of
each step land in out/test-artifacts/web/ (gitignored) for a person to look at."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from tests.web.conftest import SiteFactory, done_job

CHROMIUM = os.environ.get("ATELIER_TEST_CHROMIUM", "/usr/bin/chromium")
ARTEFACTS = Path(__file__).resolve().parents[2] / "out" / "test-artifacts" / "web"

# Skipped only on a developer's machine without chromium; in CI (`make setup` ran as root) a missing
# browser is a failure, never a silent skip.
NO_BROWSER = not Path(CHROMIUM).exists() and not os.environ.get("CI")

pytestmark = pytest.mark.skipif(NO_BROWSER, reason=f"no {CHROMIUM}: `make setup` installs Debian's chromium")


async def test_login_scroll_search_star_download(site: SiteFactory, tmp_path: Path) -> None:
    from playwright.async_api import async_playwright, expect

    s = await site()
    alice = s.sandbox.users["alice"]
    g = s.sandbox.guild.id
    ids = []
    for i in range(35):  # one page and a bit (30 per page)
        ids.append((await done_job(s.db, s.blobs, alice.id, g, f"harbour number{i}",
                                   colours=[(7 * i, 120, 200 - 5 * i)]))[0].id)
    ARTEFACTS.mkdir(parents=True, exist_ok=True)

    async with async_playwright() as pw:
        # --no-sandbox: CI runs as root, where Chromium's own sandbox cannot start.
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            context = await browser.new_context(accept_downloads=True, viewport={"width": 390, "height": 844})
            page = await context.new_page()
            await page.goto(str(s.url))
            await page.click("#login")
            await page.screenshot(path=ARTEFACTS / "1-authorize.png")
            await page.click("#as-alice")  # the sandbox's stand-in for Discord's consent screen
            await page.wait_for_url(f"{s.url}/me")
            tiles = page.locator("#grid a[data-id]")
            await expect(tiles).to_have_count(30)
            await page.screenshot(path=ARTEFACTS / "2-grid.png")

            await page.locator("[data-more]").scroll_into_view_if_needed()  # endless scroll: the next page
            await expect(tiles).to_have_count(35)
            await page.screenshot(path=ARTEFACTS / "3-scrolled.png", full_page=True)
            shown = [int(x) for x in await tiles.evaluate_all("els => els.map(e => e.dataset.id)")]
            assert shown == sorted(ids, reverse=True)

            await page.fill("#q", "number7 harbour")
            await page.press("#q", "Enter")
            await expect(tiles).to_have_count(1)
            await page.screenshot(path=ARTEFACTS / "4-search.png")

            await tiles.first.focus()  # keyboard: focus the tile, Enter opens it
            await page.keyboard.press("Enter")
            await page.wait_for_url(f"{s.url}/image/{ids[7]}")
            await expect(page.locator("#prompt")).to_have_text("harbour number7")
            await page.click("#star")
            await expect(page.locator("#star")).to_have_attribute("aria-pressed", "true")
            assert await s.db.images.starred(alice.id, [ids[7]]) == {ids[7]}
            await page.screenshot(path=ARTEFACTS / "5-image.png", full_page=True)

            async with page.expect_download() as info:
                await page.click("#download")
            download = await info.value
            saved = tmp_path / download.suggested_filename
            await download.save_as(saved)
            image = await s.db.images.get(ids[7])
            assert image is not None
            assert hashlib.sha256(saved.read_bytes()).hexdigest() == image.blob[:64]
            assert saved.name.endswith(".png")
        finally:
            await browser.close()

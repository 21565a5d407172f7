"""The demo's channel page in a real browser (Debian's chromium through Playwright): a person types
/imagine, sees the result with its buttons and clicks U1; the sandbox's user API carries both to the real
bot through the real discord.py. Screenshots land in out/test-artifacts/web/ (gitignored)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from sandbox import Sandbox
from tests.bot.helpers import results
from tests.web.test_browser import ARTEFACTS, CHROMIUM, NO_BROWSER

pytestmark = pytest.mark.skipif(NO_BROWSER, reason=f"no {CHROMIUM}: `make setup` installs Debian's chromium")


async def test_imagine_and_u1_from_the_browser(sandbox: Sandbox, bot: Any) -> None:
    from playwright.async_api import async_playwright, expect

    general = sandbox.channel("general")
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = await browser.new_page()
            await page.goto(f"{sandbox.base_url}/client")
            await page.fill("#prompt", "a red kite over the sea --n 2 --steps 2 --seed 3")
            await page.press("#prompt", "Enter")
            u1 = page.locator("article.msg button", has_text="U1")
            await expect(u1).to_be_visible(timeout=120_000)
            await expect(page.locator("article.msg img").first).to_be_visible()
            await page.screenshot(path=ARTEFACTS / "demo-1-result.png", full_page=True)
            first = results(sandbox, general)
            assert len(first) == 1 and "a red kite" in first[0].content
            assert first[0].attachments

            await u1.click()
            await sandbox.wait_for(lambda: len(results(sandbox, general)) == 2, timeout=120)
            upscaled = results(sandbox, general)[-1]
            shown = page.locator(f'article.msg[data-id="{upscaled.id}"]')
            await expect(shown.locator(".buttons button").first).to_be_visible()  # the result, not progress
            await expect(shown.locator("img")).to_be_visible()
            await page.screenshot(path=ARTEFACTS / "demo-2-upscaled.png", full_page=True)

            # 🖋 Remix opens the bot's modal as a dialog; a new prompt from it starts a new job.
            original = page.locator(f'article.msg[data-id="{first[0].id}"]')
            await original.locator("button", has_text="🖋").click()
            dialog = page.locator("dialog#modal")
            await expect(dialog).to_be_visible()
            field = dialog.locator("input, textarea").first
            await expect(field).to_have_value(re.compile("a red kite"))
            await field.fill("a blue kite over the sea")
            await page.screenshot(path=ARTEFACTS / "demo-3-remix.png")
            await dialog.locator("button[type=submit]").click()
            await sandbox.wait_for(lambda: any("a blue kite" in m.content for m in results(sandbox, general)),
                                   timeout=120)
        finally:
            await browser.close()

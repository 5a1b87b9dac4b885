"""The operator page in a real browser: Debian's Chromium, driven by Playwright, against a
gateway with a policy that holds calls for a person, an admin key, and a read-only key of
one project."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright

from capture.knowledge import new_memory
from policy.rules import parse_policy
from proxy.appkeys import APPROVALS, STORE
from proxy.config.keys import VirtualKey, digest
from proxy.demo.fake_upstream import FakeUpstream
from tests.conftest import Gateway, make_gateway

CHROMIUM = "/usr/bin/chromium"  # `make browser` installs it; Playwright's own download needs the internet
SCREENSHOTS = Path(os.environ.get("CTXGATE_SCREENSHOTS", Path(__file__).parents[2] / "build" / "screenshots"))
ADMIN_KEY = "admin-key-of-the-operator-page"
ALPHA_READER_KEY = "ctxg-alpha-reader-key-0123456789abcdef"
ALPHA_APPROVER_KEY = "ctxg-alpha-approver-key-0123456789abcdef"  # a person's: decides, calls no model
ALPHA_AGENT_KEY = "ctxg-alpha-agent-key-0123456789abcdef"
BETA_AGENT_KEY = "ctxg-beta-agent-key-0123456789abcdef"
POLICY = {
    "default": {"mode": "prompt", "allowed_tools": ["file_read"], "restricted_tools": ["file_edit"],
                "approval_timeout_s": 60},
}
MEMORY = "Deployments of the payments service go through the staging stack first."


@dataclass
class Operated:
    gateway: Gateway
    memory_id: str

    @property
    def url(self) -> str:
        return self.gateway.url


@pytest.fixture
async def operated(aiohttp_server: Any, upstream: FakeUpstream, tmp_path: Path) -> Operated:
    keys = (
        VirtualKey(sha256=digest(ALPHA_READER_KEY), client="alpha-reader", projects=frozenset({"alpha"}),
                   scopes=frozenset({"proxy", "read"})),
        VirtualKey(sha256=digest(ALPHA_APPROVER_KEY), client="alpha-lead", projects=frozenset({"alpha"}),
                   scopes=frozenset({"read", "approve"})),
        VirtualKey(sha256=digest(ALPHA_AGENT_KEY), client="alpha-agent", projects=frozenset({"alpha"})),
        VirtualKey(sha256=digest(BETA_AGENT_KEY), client="beta-agent", projects=frozenset({"beta"})),
    )
    gateway = await make_gateway(aiohttp_server, upstream, tmp_path, policy=parse_policy(POLICY),
                                 admin_key=ADMIN_KEY, keys=keys)
    gateway.app[APPROVALS].keepalive_every_s = 0.2
    memory = new_memory("alpha", MEMORY)
    await gateway.app[STORE].add_memory(memory)
    return Operated(gateway, memory.id)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make browser` installs Debian's chromium")
    async with async_playwright() as playwright:
        # No sandbox: the tests may run as root, which Chromium's sandbox refuses.
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield launched
        await launched.close()


async def logged_in(browser: Browser, url: str, key: str, *, javascript: bool = True, bypass_csp: bool = False) -> Page:
    """A new browser context logged in through the form, as a person would (`bypass_csp`: so
    that a test can add a script of its own, which the page's policy refuses)."""
    context = await browser.new_context(java_script_enabled=javascript, viewport={"width": 1280, "height": 900},
                                        bypass_csp=bypass_csp)
    page = await context.new_page()
    await page.goto(url + "/ui/")
    await page.get_by_label("Key").fill(key)
    await page.get_by_role("button", name="Log in").click()
    await page.wait_for_url("**/ui/approvals")
    return page


async def screenshot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path

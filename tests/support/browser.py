"""Pages in a real browser (Debian's Chromium driven by playwright): what the tests
check in them. The ``browser`` fixture is in tests/conftest.py."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from playwright.sync_api import Browser, Page, Route
from playwright.sync_api import TimeoutError as PlaywrightTimeout

ARTIFACTS = Path(__file__).parent.parent / "artifacts"


class Offline:
    """Lets requests to this machine through and refuses (and records) every other."""

    def __init__(self, page: Page) -> None:
        self.left: list[str] = []
        page.route("**/*", self.handle)

    def handle(self, route: Route) -> None:
        host = urlsplit(route.request.url).hostname
        if host in ("127.0.0.1", "localhost") or route.request.url.startswith("data:"):
            route.continue_()
        else:
            self.left.append(route.request.url)
            route.abort()


class CspViolations:
    """Records what the pages' Content-Security-Policy refused, in every page and frame
    opened in ``page``: their ``securitypolicyviolation`` events and the browser's console
    messages about it."""

    RECORD = """
        document.addEventListener("securitypolicyviolation", (e) => {
            window.__cspViolation(
                `${e.effectiveDirective} refused ${e.blockedURI} at ${e.sourceFile}:${e.lineNumber}`);
        });
    """

    def __init__(self, page: Page) -> None:
        self.seen: list[str] = []
        # Both are injected by the browser's debugging protocol, not under the page's CSP.
        page.expose_function("__cspViolation", self._event)
        page.add_init_script(self.RECORD)
        page.on("console", self._console)

    def _event(self, violation: str) -> None:
        self.seen.append(violation)

    def _console(self, message: Any) -> None:
        if "Content Security Policy" in message.text:
            self.seen.append(message.text)

    def unexpected(self) -> list[str]:
        """What was refused. Nothing is expected: the served queryables are self-contained
        (pgstac's default ones referred to JSON schemas on the internet, which STAC
        Browser fetched on the page of a collection with items)."""
        return list(self.seen)


def wait_for_thumbnail(page: Page) -> None:
    """A product's thumbnail was fetched and decoded (the page may keep it out of view)."""
    page.wait_for_function(
        "() => [...document.querySelectorAll(\"img[src*='thumbnail.png']\")]"
        ".some(img => img.complete && img.naturalWidth > 0)",
        timeout=30_000,
    )


def shot(page: Page, name: str, full_page: bool = True) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=full_page)


def find_listed(page: Page, text: str, timeout_s: float = 90.0) -> None:
    """Wait until STAC Browser lists ``text``. It shows a catalogue's first pages of
    collections; with many (other tests' campaigns) more come by "Load more..."."""
    deadline = time.monotonic() + timeout_s
    wanted = page.get_by_text(text).first
    while True:
        try:
            wanted.wait_for(timeout=3_000)
            return
        except PlaywrightTimeout:
            if time.monotonic() > deadline:
                raise
        more = page.get_by_role("button", name=re.compile("Load more"))
        if more.count():
            more.first.click()


def check_pages(browser: Browser, api: str, campaign: str, tiles: int) -> None:
    """What a person opens after the demo: STAC Browser lists the campaign, the campaign
    map draws every tile and the products' mosaic from the raster service, the API docs
    list the operations; no request leaves the machine and no page does what its
    Content-Security-Policy forbids."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    offline = Offline(page)
    csp = CspViolations(page)
    page.goto(f"{api}/browser/")
    find_listed(page, campaign)
    page.goto(f"{api}/campaigns/{campaign}/map")
    page.wait_for_function(  # a function: an expression is eval'd, which the policy refuses
        f"() => window.tilekeeperMap && window.tilekeeperMap.seen.size === {tiles}",
        timeout=30_000,
    )
    page.wait_for_function("() => window.tilekeeperMap.mosaicTilesLoaded > 0", timeout=60_000)
    page.wait_for_timeout(3000)  # the rest of the view's tiles, for the picture
    shot(page, "map-demo", full_page=False)
    page.goto(f"{api}/api.html")
    page.locator(".opblock").first.wait_for(timeout=30_000)
    assert page.locator(".opblock").count() > 20
    assert offline.left == [], offline.left
    assert csp.seen == [], csp.seen
    page.close()

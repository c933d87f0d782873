"""The integration tests' real stack, served by a real uvicorn, driven by Debian's Chromium."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

from jitbroker.bootstrap import Broker, build_broker
from jitbroker.config import Settings
from jitbroker.identity.dev_issuer import DevIssuer

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def broker(
    settings: Settings, config_dir: Path, state_redis: redis.Redis, worker: None, scheduler: None
) -> Broker:
    """The integration broker with the dev sign-in switched on (the test issuers' keys)."""
    return build_broker(settings.model_copy(update={"dev_issuer_dir": config_dir / "keys"}))


@pytest.fixture
def pipeline_token(broker: Broker, dev_issuer: DevIssuer) -> str:
    """The demo-pipeline workload's identity token, as a CI job would present it."""
    return dev_issuer.workload_token(broker.config, "demo-pipeline")


@pytest.fixture
def alice_token(broker: Broker, dev_issuer: DevIssuer) -> str:
    """An approver's token: alice is in the dba group."""
    return dev_issuer.human_token(broker.config, "alice")


@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    """Playwright's sync API runs an event loop in the main thread while it is open: stopped
    with the e2e package, so the suites collected after it can start their own loops."""
    with sync_playwright() as driver:
        yield driver


@pytest.fixture
def new_page(playwright: Playwright) -> Iterator[Callable[[], Page]]:
    """Opens a page in Debian's Chromium (headless); a missing Chromium fails the test."""
    browsers: list[Browser] = []

    def open_page() -> Page:
        if not CHROMIUM.exists():
            pytest.fail(
                f"{CHROMIUM} is missing: the e2e tests drive Debian's Chromium "
                "(install it with `apt-get install chromium`; .ci/run does)"
            )
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        browsers.append(browser)
        return browser.new_page(viewport={"width": 1200, "height": 900})

    yield open_page
    for browser in browsers:
        browser.close()

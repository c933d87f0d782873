"""The integration tests' real stack, served by a real uvicorn, driven by Debian's Chromium."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis
import uvicorn
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

from jitbroker.app import create_app
from jitbroker.bootstrap import Broker, build_broker
from jitbroker.config import Settings
from jitbroker.identity.dev_issuer import DevIssuer
from tests.integration.support import free_port, wait_for

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
def live_url(broker: Broker) -> Iterator[str]:
    """The app behind a real uvicorn on a free loopback port, in a background thread."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(broker=broker), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, name="uvicorn-e2e", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    wait_for(
        lambda: httpx.get(f"{url}/healthz", timeout=1).status_code == 200,
        timeout=20,
        what="uvicorn to answer /healthz",
    )
    yield url
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def pipeline_token(broker: Broker, dev_issuer: DevIssuer) -> str:
    """The demo-pipeline workload's identity token, as a CI job would present it."""
    return dev_issuer.workload_token(broker.config, "demo-pipeline")


@pytest.fixture
def alice_token(broker: Broker, dev_issuer: DevIssuer) -> str:
    """An approver's token: alice is in the dba group."""
    return dev_issuer.human_token(broker.config, "alice")


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
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

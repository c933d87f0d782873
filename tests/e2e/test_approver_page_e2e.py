"""A DBA approves in a real browser; the workload then writes with the issued credential."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.integration.support import ROOT, pg_connect

pytestmark = pytest.mark.e2e

ARTIFACTS = ROOT / "test-artifacts"
JUSTIFICATION = "add an index to orders for the Q3 report"
WRITE = {
    "profile": "demo-db",
    "scopes": ["write"],
    "ttl_seconds": 600,
    "justification": JUSTIFICATION,
}


@pytest.fixture
def api(live_url: str, pipeline_auth: dict[str, str]) -> Iterator[httpx.Client]:
    """The workload's HTTP client, with its demo-pipeline token."""
    with httpx.Client(base_url=live_url, headers=pipeline_auth, timeout=15) as client:
        yield client


def open_task(api: httpx.Client) -> str:
    response = api.post("/v1/tasks", json={"purpose": "schema migration for the Q3 report"})
    assert response.status_code == 201, response.text
    return str(response.json()["task_id"])


def sign_in(page: Page, live_url: str, name: str) -> None:
    page.goto(f"{live_url}/ui/dev/sign-in")
    page.get_by_role("button", name=re.compile(f"^Sign in as {name}")).click()
    expect(page.get_by_text(f"Signed in as {name}")).to_be_visible()


def test_dba_approves_in_the_browser_and_the_workload_writes_with_the_credential(
    api: httpx.Client, new_page: Callable[[], Page], live_url: str
) -> None:
    task_id = open_task(api)
    requested = api.post(f"/v1/tasks/{task_id}/grants", json=WRITE)
    assert requested.status_code == 202, requested.text
    grant_id = requested.json()["grant_id"]

    page = new_page()
    sign_in(page, live_url, "alice")
    card = page.locator(f"#grant-{grant_id}")
    expect(card).to_contain_text(JUSTIFICATION)
    expect(card).to_contain_text("demo-db-elevated")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "approver-page.png", full_page=True)
    card.get_by_label("Comment").fill("index reviewed with the team; go ahead")
    card.get_by_role("button", name="Approve").click()
    expect(page.get_by_role("status")).to_contain_text(f"You approved {grant_id}")

    issued = api.post(f"/v1/grants/{grant_id}/issue")
    assert issued.status_code == 200, issued.text
    credential = issued.json()["credential"]
    with pg_connect(credential["username"], credential["password"]) as conn:
        conn.execute("INSERT INTO jitbroker_demo.orders (item) VALUES ('approved in the browser')")


def test_dba_acknowledges_a_break_glass_grant_in_the_browser(
    api: httpx.Client, new_page: Callable[[], Page], live_url: str
) -> None:
    task_id = open_task(api)
    issued = api.post(
        f"/v1/tasks/{task_id}/grants",
        json={
            **WRITE,
            "ttl_seconds": 300,
            "justification": "orders table is corrupt, fixing it before the morning batch",
            "break_glass": True,
        },
    )
    assert issued.status_code == 201, issued.text
    grant_id = issued.json()["grant_id"]

    page = new_page()
    sign_in(page, live_url, "bob")
    card = page.locator(f"#grant-{grant_id}")
    card.get_by_label("Review comment").fill("incident INC-42 confirms it")
    card.get_by_role("button", name="Acknowledge").click()

    expect(page.get_by_role("status")).to_contain_text(
        f"You acknowledged the break-glass grant {grant_id}"
    )
    review = api.get(f"/v1/grants/{grant_id}").json()["break_glass_review"]
    assert review["acknowledged_by"] == "bob"
    assert review["comment"] == "incident INC-42 confirms it"

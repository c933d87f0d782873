"""Human approval of elevated scopes, end to end on real OpenBao, PostgreSQL, Redis and Celery."""

from __future__ import annotations

import time
from typing import Any

import hvac
import pytest
from fastapi.testclient import TestClient

from jitbroker.bootstrap import Broker
from jitbroker.identity.dev_issuer import DevIssuer
from jitbroker.notifications.signing import verify
from tests.integration.support import (
    ROOT_TOKEN,
    STEADY_WEBHOOK_PATH,
    WEBHOOK_SECRET,
    ReceivedPost,
    WebhookReceiver,
    pg_connect,
    wait_for,
)

pytestmark = pytest.mark.integration

WRITE = {"profile": "demo-db", "scopes": ["write"], "ttl_seconds": 600, "justification": "migrate"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def human(broker: Broker, dev_issuer: DevIssuer) -> Any:
    def token_for(name: str) -> dict[str, str]:
        return bearer(dev_issuer.human_token(broker.config, name))

    return token_for


def pending_grant(
    client: TestClient, auth: dict[str, str], body: dict[str, Any] | None = None
) -> dict[str, Any]:
    task = client.post("/v1/tasks", json={"purpose": "schema migration"}, headers=auth)
    response = client.post(
        f"/v1/tasks/{task.json()['task_id']}/grants", json=body or WRITE, headers=auth
    )
    assert response.status_code == 202, response.text
    grant: dict[str, Any] = response.json()
    return grant


def test_approved_write_grant_is_issued_and_can_write(
    client: TestClient, pipeline_auth: dict[str, str], human: Any
) -> None:
    grant = pending_grant(client, pipeline_auth)
    assert grant["state"] == "pending_approval"

    approved = client.post(
        f"/v1/grants/{grant['grant_id']}/approve", json={"comment": "ok"}, headers=human("alice")
    )
    issued = client.post(f"/v1/grants/{grant['grant_id']}/issue", headers=pipeline_auth)

    assert approved.status_code == 200, approved.text
    assert approved.json()["state"] == "approved"
    assert issued.status_code == 200, issued.text
    credential = issued.json()["credential"]
    with pg_connect(credential["username"], credential["password"]) as conn:
        conn.execute("INSERT INTO jitbroker_demo.orders (item) VALUES ('approved write')")


def test_issue_returns_the_secret_only_once(
    client: TestClient, pipeline_auth: dict[str, str], human: Any
) -> None:
    grant = pending_grant(client, pipeline_auth)
    client.post(f"/v1/grants/{grant['grant_id']}/approve", json={}, headers=human("alice"))
    assert client.post(f"/v1/grants/{grant['grant_id']}/issue", headers=pipeline_auth).is_success

    again = client.post(f"/v1/grants/{grant['grant_id']}/issue", headers=pipeline_auth)

    assert again.status_code == 409
    assert "credential" not in again.text


def test_two_approvals_needed_and_the_same_approver_cannot_count_twice(
    client: TestClient, pipeline_auth: dict[str, str], human: Any
) -> None:
    grant = pending_grant(client, pipeline_auth, {**WRITE, "profile": "quorum-db"})
    url = f"/v1/grants/{grant['grant_id']}"

    first = client.post(f"{url}/approve", json={"comment": "one"}, headers=human("alice"))
    too_early = client.post(f"{url}/issue", headers=pipeline_auth)
    twice = client.post(f"{url}/approve", json={"comment": "again"}, headers=human("alice"))
    second = client.post(f"{url}/approve", json={"comment": "two"}, headers=human("bob"))

    assert first.json()["state"] == "pending_approval"
    assert too_early.status_code == 409
    assert twice.status_code == 409
    assert "already approved" in twice.json()["detail"]
    assert second.json()["state"] == "approved"
    assert client.post(f"{url}/issue", headers=pipeline_auth).status_code == 200


def test_person_who_triggered_the_pipeline_cannot_approve_it(
    client: TestClient, broker: Broker, dev_issuer: DevIssuer, human: Any
) -> None:
    triggered = bearer(
        dev_issuer.workload_token(broker.config, "demo-pipeline", extra_claims={"actor": "alice"})
    )
    grant = pending_grant(client, triggered)

    response = client.post(
        f"/v1/grants/{grant['grant_id']}/approve", json={}, headers=human("alice")
    )

    assert response.status_code == 403
    assert "you triggered this request" in response.json()["detail"]


def test_approver_outside_the_allowed_groups_is_refused(
    client: TestClient, pipeline_auth: dict[str, str], human: Any
) -> None:
    grant = pending_grant(client, pipeline_auth)

    response = client.post(
        f"/v1/grants/{grant['grant_id']}/approve", json={}, headers=human("mallory")
    )

    assert response.status_code == 403
    assert "dba" in response.json()["detail"]


def test_unapproved_request_expires_and_cannot_be_issued(
    client: TestClient, pipeline_auth: dict[str, str], human: Any
) -> None:
    grant = pending_grant(client, pipeline_auth, {**WRITE, "profile": "hasty-db"})
    url = f"/v1/grants/{grant['grant_id']}"

    wait_for(
        lambda: client.get(url, headers=pipeline_auth).json()["state"] == "approval_expired",
        timeout=15,
        what="the approval window to run out",
    )
    late_approval = client.post(f"{url}/approve", json={}, headers=human("alice"))
    issue = client.post(f"{url}/issue", headers=pipeline_auth)

    assert late_approval.status_code == 409
    assert issue.status_code == 409


def test_denied_request_cannot_be_issued(
    client: TestClient, pipeline_auth: dict[str, str], human: Any
) -> None:
    grant = pending_grant(client, pipeline_auth)
    url = f"/v1/grants/{grant['grant_id']}"

    denied = client.post(
        f"{url}/deny", json={"comment": "not during the freeze"}, headers=human("bob")
    )
    issue = client.post(f"{url}/issue", headers=pipeline_auth)

    assert denied.json()["state"] == "denied"
    assert issue.status_code == 409
    assert "denied" in issue.json()["detail"]


def test_approval_with_a_shorter_ttl_yields_a_lease_with_that_ttl(
    client: TestClient, pipeline_auth: dict[str, str], human: Any, broker: Broker
) -> None:
    grant = pending_grant(client, pipeline_auth)
    url = f"/v1/grants/{grant['grant_id']}"

    client.post(f"{url}/approve", json={"ttl_seconds": 120}, headers=human("alice"))
    issued = client.post(f"{url}/issue", headers=pipeline_auth).json()

    stored = broker.grants.get(grant["grant_id"])
    assert stored is not None
    assert stored.lease_ref is not None
    lease = hvac.Client(url=broker.settings.vault_addr, token=ROOT_TOKEN).sys.read_lease(
        stored.lease_ref
    )
    assert issued["lease_ttl_seconds"] == 120
    assert 110 <= lease["data"]["ttl"] <= 120


def test_approval_cannot_extend_the_ttl(
    client: TestClient, pipeline_auth: dict[str, str], human: Any
) -> None:
    grant = pending_grant(client, pipeline_auth)

    response = client.post(
        f"/v1/grants/{grant['grant_id']}/approve",
        json={"ttl_seconds": 6000},
        headers=human("alice"),
    )

    assert response.status_code == 422
    assert "never extend" in response.json()["detail"]


def test_workload_token_on_approver_endpoint_is_forbidden(
    client: TestClient, pipeline_auth: dict[str, str]
) -> None:
    grant = pending_grant(client, pipeline_auth)

    response = client.post(
        f"/v1/grants/{grant['grant_id']}/approve", json={}, headers=pipeline_auth
    )

    assert response.status_code == 403
    assert client.get("/v1/approvals", headers=pipeline_auth).status_code == 403


def test_approvers_see_pending_requests_of_their_groups_only(
    client: TestClient, pipeline_auth: dict[str, str], human: Any
) -> None:
    grant = pending_grant(client, pipeline_auth)

    for_alice = client.get("/v1/approvals?state=pending", headers=human("alice")).json()
    for_mallory = client.get("/v1/approvals?state=pending", headers=human("mallory")).json()

    assert [item["grant_id"] for item in for_alice] == [grant["grant_id"]]
    assert for_alice[0]["task_purpose"] == "schema migration"
    assert for_alice[0]["rule"] == "demo-db-elevated"
    assert 0 < for_alice[0]["seconds_left"] <= 900
    assert for_mallory == []


def test_long_poll_returns_when_the_request_is_approved(
    client: TestClient, pipeline_auth: dict[str, str], human: Any
) -> None:
    grant = pending_grant(client, pipeline_auth)
    url = f"/v1/grants/{grant['grant_id']}"
    client.post(f"{url}/approve", json={}, headers=human("alice"))

    response = client.get(f"{url}?wait=5", headers=pipeline_auth)

    assert response.json()["state"] == "approved"


def test_break_glass_is_issued_at_once_and_flagged_for_review(
    client: TestClient, pipeline_auth: dict[str, str], human: Any
) -> None:
    task = client.post("/v1/tasks", json={"purpose": "incident"}, headers=pipeline_auth).json()
    body = {
        **WRITE,
        "ttl_seconds": 300,
        "break_glass": True,
        "justification": "INC-4242: orders table locked, need to kill the migration",
    }

    issued = client.post(f"/v1/tasks/{task['task_id']}/grants", json=body, headers=pipeline_auth)
    review = client.get("/v1/approvals?state=review", headers=human("bob")).json()
    ack = client.post(
        f"/v1/grants/{issued.json()['grant_id']}/acknowledge",
        json={"comment": "seen"},
        headers=human("bob"),
    )

    assert issued.status_code == 201, issued.text
    assert issued.json()["break_glass"] is True
    assert [item["grant_id"] for item in review] == [issued.json()["grant_id"]]
    assert ack.json()["break_glass_review"]["acknowledged_by"] == "bob"
    assert client.get("/v1/approvals?state=review", headers=human("bob")).json() == []


def test_break_glass_longer_than_its_cap_is_denied(
    client: TestClient, pipeline_auth: dict[str, str]
) -> None:
    task = client.post("/v1/tasks", json={"purpose": "incident"}, headers=pipeline_auth).json()
    body = {
        **WRITE,
        "ttl_seconds": 3600,
        "break_glass": True,
        "justification": "INC-4242: orders table locked, need to kill the migration",
    }

    response = client.post(f"/v1/tasks/{task['task_id']}/grants", json=body, headers=pipeline_auth)

    assert response.status_code == 403
    assert "break-glass" in response.json()["detail"]


def test_completing_the_task_ends_a_pending_request(
    client: TestClient, pipeline_auth: dict[str, str], human: Any
) -> None:
    grant = pending_grant(client, pipeline_auth)

    client.post(f"/v1/tasks/{grant['task_id']}/complete", headers=pipeline_auth)
    approve = client.post(
        f"/v1/grants/{grant['grant_id']}/approve", json={}, headers=human("alice")
    )

    assert approve.status_code == 409
    state = client.get(f"/v1/grants/{grant['grant_id']}", headers=pipeline_auth).json()["state"]
    assert state == "cancelled"


def test_pending_approved_and_break_glass_are_announced_with_signed_webhooks(
    client: TestClient,
    pipeline_auth: dict[str, str],
    human: Any,
    webhook_receiver: WebhookReceiver,
) -> None:
    grant = pending_grant(client, pipeline_auth)
    client.post(f"/v1/grants/{grant['grant_id']}/approve", json={}, headers=human("alice"))
    task = client.post("/v1/tasks", json={"purpose": "incident"}, headers=pipeline_auth).json()
    glass = client.post(
        f"/v1/tasks/{task['task_id']}/grants",
        json={
            **WRITE,
            "ttl_seconds": 300,
            "break_glass": True,
            "justification": "INC-4243: replica lag, need to pause the writer",
        },
        headers=pipeline_auth,
    ).json()

    def events_for(grant_id: str, wanted: set[str]) -> list[ReceivedPost] | None:
        posts = webhook_receiver.posts_about(STEADY_WEBHOOK_PATH, grant_id)
        return posts if {p.document["event"] for p in posts} >= wanted else None

    approvals = wait_for(
        lambda: events_for(grant["grant_id"], {"approval.pending", "approval.approved"}),
        what="pending and approved notifications",
    )
    glass_posts = wait_for(
        lambda: events_for(glass["grant_id"], {"break_glass.used"}),
        what="the break-glass notification",
    )
    for post in [*approvals, *glass_posts]:
        assert verify(
            WEBHOOK_SECRET.encode(),
            post.headers["x-jitbroker-signature"],
            post.body,
            now=time.time(),
        )
        assert post.document["text"]
    assert "BREAK-GLASS" in glass_posts[0].document["text"]


def test_another_run_of_the_workload_cannot_issue_a_grant_it_did_not_request(
    client: TestClient, broker: Broker, dev_issuer: DevIssuer, human: Any
) -> None:
    def run_of(actor: str) -> dict[str, str]:
        return bearer(
            dev_issuer.workload_token(broker.config, "demo-pipeline", extra_claims={"actor": actor})
        )

    grant = pending_grant(client, run_of("bob"))
    client.post(f"/v1/grants/{grant['grant_id']}/approve", json={}, headers=human("alice"))

    by_approver = client.post(f"/v1/grants/{grant['grant_id']}/issue", headers=run_of("Alice"))
    by_requester = client.post(f"/v1/grants/{grant['grant_id']}/issue", headers=run_of("bob"))

    assert by_approver.status_code == 403
    assert "requested by another run" in by_approver.json()["detail"]
    assert by_requester.status_code == 200


def test_break_glass_cannot_override_a_denial_in_the_same_task(
    client: TestClient, pipeline_auth: dict[str, str], human: Any
) -> None:
    grant = pending_grant(client, pipeline_auth)
    client.post(
        f"/v1/grants/{grant['grant_id']}/deny", json={"comment": "no"}, headers=human("bob")
    )

    response = client.post(
        f"/v1/tasks/{grant['task_id']}/grants",
        json={
            **WRITE,
            "ttl_seconds": 300,
            "break_glass": True,
            "justification": "INC-4244: I really want it anyway, please",
        },
        headers=pipeline_auth,
    )

    assert response.status_code == 403
    assert "cannot override" in response.json()["detail"]

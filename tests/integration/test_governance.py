"""Governance on the real stack: ownership and sign-off in prod, environment separation,
privileged scopes behind approval, and an overdue access review that takes the credential
back where it lives (PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from jitbroker.bootstrap import Broker
from jitbroker.grants.schemas import GrantState
from jitbroker.identity.dev_issuer import DevIssuer
from jitbroker.inventory.repository import InventoryRepository
from jitbroker.inventory.schemas import ReviewDecision, ReviewRecord
from tests.integration.support import (
    STEADY_WEBHOOK_PATH,
    WebhookReceiver,
    pg_connect,
    role_exists,
    wait_for,
)

pytestmark = pytest.mark.integration

PROD_READ = {
    "profile": "gov-prod-db",
    "scopes": ["read"],
    "ttl_seconds": 300,
    "justification": "settlement run",
}
DB_READ = {"profile": "demo-db", "scopes": ["read"], "ttl_seconds": 300, "justification": "qa"}


def workload_auth(broker: Broker, dev_issuer: DevIssuer, workload_id: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {dev_issuer.workload_token(broker.config, workload_id)}"}


def human_auth(broker: Broker, dev_issuer: DevIssuer, subject: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {dev_issuer.human_token(broker.config, subject)}"}


def open_task(client: TestClient, auth: dict[str, str]) -> str:
    response = client.post("/v1/tasks", json={"purpose": "governance"}, headers=auth)
    assert response.status_code == 201, response.text
    return str(response.json()["task_id"])


def ask(client: TestClient, auth: dict[str, str], body: dict[str, Any]) -> Any:
    return client.post(f"/v1/tasks/{open_task(client, auth)}/grants", json=body, headers=auth)


def decisions_by_rule(broker: Broker, rule: str) -> list[str]:
    """The outcomes of the audited grant decisions one rule made."""
    return [
        event.outcome
        for event in broker.audit.read_all()
        if event.type == "grant.decided" and event.rule == rule
    ]


def test_unowned_workload_gets_nothing_in_prod_whatever_the_rules_say(
    client: TestClient, broker: Broker, dev_issuer: DevIssuer
) -> None:
    response = ask(client, workload_auth(broker, dev_issuer, "gov-unowned-prod"), PROD_READ)

    assert response.status_code == 403, response.text
    assert response.json()["rule"] == "ownership-required"
    assert response.json()["detail"] == (
        "workload 'gov-unowned-prod' is unowned (no owner_team and purpose in its "
        "configuration) and gets nothing in 'prod'"
    )
    assert decisions_by_rule(broker, "ownership-required") == ["deny"]


def test_staging_workload_asking_for_a_prod_profile_is_denied_naming_both_environments(
    client: TestClient, broker: Broker, dev_issuer: DevIssuer
) -> None:
    response = ask(client, workload_auth(broker, dev_issuer, "gov-staging-etl"), PROD_READ)

    assert response.status_code == 403, response.text
    assert response.json()["rule"] == "environment-separation"
    assert response.json()["detail"] == (
        "workload 'gov-staging-etl' is in environment 'staging' and profile 'gov-prod-db' is in "
        "'prod'; a workload only receives profiles of its own environment"
    )
    assert decisions_by_rule(broker, "environment-separation") == ["deny"]


def test_prod_workload_gets_its_credential_only_after_its_owner_team_signs_it_off(
    client: TestClient, broker: Broker, dev_issuer: DevIssuer
) -> None:
    auth = workload_auth(broker, dev_issuer, "gov-ledger-sync")
    before = ask(client, auth, PROD_READ)

    signed = client.post(
        "/v1/workloads/gov-ledger-sync/sign-off",
        json={"comment": "binding checked against the deploy repo"},
        headers=human_auth(broker, dev_issuer, "owen"),
    )
    after = ask(client, auth, PROD_READ)

    assert before.status_code == 403
    assert before.json()["rule"] == "prod-sign-off"
    assert "no sign-off from its owner team 'ledger-team'" in before.json()["detail"]
    assert signed.status_code == 200, signed.text
    assert after.status_code == 201, after.text
    credential = after.json()["credential"]
    with pg_connect(credential["username"], credential["password"]) as conn:
        assert conn.execute("SELECT item FROM jitbroker_demo.orders").fetchall()


def test_privileged_scope_that_a_rule_simply_allows_waits_for_approval(
    client: TestClient, broker: Broker, dev_issuer: DevIssuer, pipeline_auth: dict[str, str]
) -> None:
    admin_scope = {"profile": "gov-admin-db", "scopes": ["admin"], "ttl_seconds": 300}

    response = ask(client, pipeline_auth, {**admin_scope, "justification": "reindex"})
    waiting = client.get("/v1/approvals", headers=human_auth(broker, dev_issuer, "alice"))

    assert response.status_code == 202, response.text
    body = response.json()
    assert body["state"] == "pending_approval"
    assert body["decision"]["rule"] == "gov-admin-db-allowed"
    assert body["decision"]["privileged"] is True
    assert body["decision"]["reason"].startswith("the request is privileged (admin)")
    [item] = [i for i in waiting.json() if i["grant_id"] == body["grant_id"]]
    assert (item["privileged"], item["capabilities"]) == (True, ["admin"])


def test_overdue_review_suspends_the_workload_and_revokes_its_live_grant(
    client: TestClient,
    broker: Broker,
    dev_issuer: DevIssuer,
    webhook_receiver: WebhookReceiver,
) -> None:
    auth = workload_auth(broker, dev_issuer, "gov-reviewed-agent")
    issued = ask(client, auth, DB_READ)
    assert issued.status_code == 201, issued.text
    grant = issued.json()
    credential = grant["credential"]
    with pg_connect(credential["username"], credential["password"]):
        pass

    # The owner team last reviewed it 40 days ago: due after 30, past the 7-day grace since.
    InventoryRepository(broker.redis, broker.settings.key_prefix).save_review(
        ReviewRecord(
            workload="gov-reviewed-agent",
            decision=ReviewDecision.keep,
            comment="",
            reviewed_by="owen",
            issuer="test-humans",
            reviewed_at=broker.clock() - timedelta(days=40),
        )
    )

    def revoked() -> bool:
        current = broker.grants.get(grant["grant_id"])
        return current is not None and current.state == GrantState.revoked

    wait_for(revoked, timeout=20, what="the scheduler to revoke the overdue workload's grant")
    assert not role_exists(credential["username"])
    with pytest.raises(psycopg.OperationalError, match="does not exist"):
        pg_connect(credential["username"], credential["password"])
    refused = client.post("/v1/tasks", json={"purpose": "after"}, headers=auth)
    assert refused.status_code == 403
    assert "access review overdue" in refused.json()["detail"]
    [notice] = wait_for(
        lambda: webhook_receiver.posts_of_event(STEADY_WEBHOOK_PATH, "review.overdue"),
        what="the review.overdue notification",
    )
    assert notice.document["fields"]["owner_team"] == "ledger-team"

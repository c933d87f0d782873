"""The failing-revocations list and backpressure over HTTP: who may look, what a refusal says."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from tests.unit.fakes import FakeEngine

from jitbroker.bootstrap import Broker
from jitbroker.errors import VaultUnavailable
from jitbroker.grants.schemas import GrantRecord, RevokeReason
from jitbroker.revocation.service import request_revocation, revoke_grant

READ = {"profile": "demo-db", "scopes": ["read"], "ttl_seconds": 60, "justification": "x"}


@pytest.fixture
def failing_grant(broker: Broker, engine: FakeEngine, issued_grant: GrantRecord) -> GrantRecord:
    """An issued grant whose revocation failed once because OpenBao was down."""
    request_revocation(broker, grant_id=issued_grant.grant_id, reason=RevokeReason.task_completed)
    engine.down = True
    with pytest.raises(VaultUnavailable):
        revoke_grant(broker, grant_id=issued_grant.grant_id)
    engine.down = False
    return issued_grant


def test_admin_sees_the_failing_revocation(
    client: TestClient, admin_auth: dict[str, str], failing_grant: GrantRecord
) -> None:
    response = client.get("/v1/revocations/failing", headers=admin_auth)

    assert response.status_code == 200, response.text
    body = response.json()
    assert [g["grant_id"] for g in body["grants"]] == [failing_grant.grant_id]
    assert body["grants"][0]["attempts"] == 1
    assert body["budget"] == 5


def test_failing_list_is_403_for_a_human_outside_the_admin_groups(
    client: TestClient, human_auth: dict[str, str]
) -> None:
    response = client.get("/v1/revocations/failing", headers=human_auth)

    assert response.status_code == 403
    assert "platform-admins" in response.json()["detail"]


def test_failing_list_is_403_for_a_workload(
    client: TestClient, pipeline_auth: dict[str, str]
) -> None:
    assert client.get("/v1/revocations/failing", headers=pipeline_auth).status_code == 403


def test_grant_over_the_failure_budget_is_503_with_retry_after(
    client: TestClient,
    broker: Broker,
    pipeline_auth: dict[str, str],
    task_id: str,
    failing_grant: GrantRecord,
) -> None:
    broker.settings = broker.settings.model_copy(update={"revocation_failure_budget": 0})

    response = client.post(f"/v1/tasks/{task_id}/grants", json=READ, headers=pipeline_auth)

    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"] == "30"
    assert response.json()["title"] == "Revocation backlog"
    assert "never issue what we cannot take back" in response.json()["detail"]

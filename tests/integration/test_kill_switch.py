"""The kill switch against real OpenBao, PostgreSQL, Redis and Celery: suspension and incident
revocation take effect where the credentials live."""

from __future__ import annotations

from typing import Any

import hvac
import psycopg
import pytest
from fastapi.testclient import TestClient

from jitbroker.bootstrap import Broker
from jitbroker.config import Settings
from jitbroker.grants.schemas import GrantState
from jitbroker.identity.dev_issuer import DevIssuer
from tests.integration.support import pg_connect, role_exists, wait_for

pytestmark = pytest.mark.integration

DB_READ = {"profile": "demo-db", "scopes": ["read"], "ttl_seconds": 300, "justification": "export"}
KV_READ = {"profile": "demo-token", "scopes": ["read"], "ttl_seconds": 300, "justification": "kv"}


@pytest.fixture
def admin_auth(broker: Broker, dev_issuer: DevIssuer) -> dict[str, str]:
    return {"Authorization": f"Bearer {dev_issuer.human_token(broker.config, 'root-admin')}"}


def open_task(client: TestClient, auth: dict[str, str]) -> Any:
    return client.post("/v1/tasks", json={"purpose": "kill switch"}, headers=auth)


def issue(client: TestClient, auth: dict[str, str], task_id: str, body: dict[str, Any]) -> Any:
    response = client.post(f"/v1/tasks/{task_id}/grants", json=body, headers=auth)
    assert response.status_code == 201, response.text
    return response.json()


def kv_reader(settings: Settings, grant: dict[str, Any]) -> hvac.Client:
    return hvac.Client(url=settings.vault_addr, token=grant["credential"]["token"])


def wait_until_revoked(broker: Broker, grant_ids: list[str]) -> None:
    def all_revoked() -> bool:
        found = [broker.grants.get(grant_id) for grant_id in grant_ids]
        return all(g is not None and g.state == GrantState.revoked for g in found)

    wait_for(all_revoked, timeout=20, what=f"grants {grant_ids} to be revoked")


def assert_cannot_log_in(grant: dict[str, Any]) -> None:
    credential = grant["credential"]
    assert not role_exists(credential["username"])
    with pytest.raises(psycopg.OperationalError, match="does not exist"):
        pg_connect(credential["username"], credential["password"])


def test_suspending_a_workload_revokes_its_three_live_grants(
    client: TestClient,
    broker: Broker,
    settings: Settings,
    pipeline_auth: dict[str, str],
    admin_auth: dict[str, str],
) -> None:
    first_task = open_task(client, pipeline_auth).json()["task_id"]
    second_task = open_task(client, pipeline_auth).json()["task_id"]
    databases = [
        issue(client, pipeline_auth, first_task, DB_READ),
        issue(client, pipeline_auth, second_task, DB_READ),
    ]
    token = issue(client, pipeline_auth, first_task, KV_READ)
    for grant in databases:
        with pg_connect(grant["credential"]["username"], grant["credential"]["password"]):
            pass
    assert kv_reader(settings, token).secrets.kv.v2.read_secret("demo/greeting")

    response = client.post(
        "/v1/workloads/demo-pipeline/suspend",
        json={"reason": "runner compromised"},
        headers=admin_auth,
    )

    assert response.status_code == 200, response.text
    assert response.json()["revocations"] == {
        "matched": 3,
        "revocation_requested": 3,
        "cancelled": 0,
    }
    wait_until_revoked(broker, [g["grant_id"] for g in [*databases, token]])
    for grant in databases:
        assert_cannot_log_in(grant)
    with pytest.raises(hvac.exceptions.Forbidden):
        kv_reader(settings, token).secrets.kv.v2.read_secret("demo/greeting")


def test_suspended_workload_cannot_open_tasks_until_resumed(
    client: TestClient, pipeline_auth: dict[str, str], admin_auth: dict[str, str]
) -> None:
    client.post(
        "/v1/workloads/demo-pipeline/suspend", json={"reason": "key rotation"}, headers=admin_auth
    )

    refused = open_task(client, pipeline_auth)
    resumed = client.post("/v1/workloads/demo-pipeline/resume", headers=admin_auth)
    reopened = open_task(client, pipeline_auth)

    assert refused.status_code == 403
    assert refused.json()["detail"] == "workload demo-pipeline is suspended: key rotation"
    assert resumed.status_code == 200
    assert reopened.status_code == 201, reopened.text
    issue(client, pipeline_auth, reopened.json()["task_id"], DB_READ)


def test_revoke_by_profile_revokes_only_that_profiles_grants(
    client: TestClient,
    broker: Broker,
    settings: Settings,
    pipeline_auth: dict[str, str],
    admin_auth: dict[str, str],
) -> None:
    task_id = open_task(client, pipeline_auth).json()["task_id"]
    database = issue(client, pipeline_auth, task_id, DB_READ)
    token = issue(client, pipeline_auth, task_id, KV_READ)

    response = client.post(
        "/v1/revoke", json={"profile": "demo-token", "reason": "token leaked"}, headers=admin_auth
    )

    assert response.status_code == 200, response.text
    assert response.json() == {"matched": 1, "revocation_requested": 1, "cancelled": 0}
    wait_until_revoked(broker, [token["grant_id"]])
    with pytest.raises(hvac.exceptions.Forbidden):
        kv_reader(settings, token).secrets.kv.v2.read_secret("demo/greeting")
    survivor = broker.grants.get(database["grant_id"])
    assert survivor is not None
    assert survivor.state == GrantState.issued
    with pg_connect(database["credential"]["username"], database["credential"]["password"]) as conn:
        assert conn.execute("SELECT item FROM jitbroker_demo.orders").fetchall()

"""The task-scoped credential path against real OpenBao, PostgreSQL, Redis and Celery."""

from __future__ import annotations

from typing import Any

import hvac
import psycopg
import pytest
import redis
from fastapi.testclient import TestClient

from jitbroker.app import create_app
from jitbroker.bootstrap import Broker, build_broker
from jitbroker.config import Settings
from jitbroker.vault import VaultClient
from tests.integration.support import pg_connect, role_exists, wait_for

pytestmark = pytest.mark.integration

READ_GRANT = {
    "profile": "demo-db",
    "scopes": ["read"],
    "ttl_seconds": 300,
    "justification": "nightly export",
}


def open_task(client: TestClient, auth: dict[str, str], **body: Any) -> str:
    response = client.post("/v1/tasks", json={"purpose": "integration test", **body}, headers=auth)
    assert response.status_code == 201, response.text
    return str(response.json()["task_id"])


def request_grant(
    client: TestClient,
    auth: dict[str, str],
    task_id: str,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> Any:
    return client.post(
        f"/v1/tasks/{task_id}/grants", json=body, headers={**auth, **(headers or {})}
    )


def issued_db_credential(client: TestClient, auth: dict[str, str], task_id: str) -> dict[str, Any]:
    response = request_grant(client, auth, task_id, READ_GRANT)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def leases_of(vault: VaultClient, role: str) -> list[str]:
    return vault.list_leases(f"database/creds/{role}")


def test_read_credential_can_read_but_not_write(
    client: TestClient, pipeline_auth: dict[str, str]
) -> None:
    task_id = open_task(client, pipeline_auth)
    credential = issued_db_credential(client, pipeline_auth, task_id)["credential"]

    with pg_connect(credential["username"], credential["password"]) as conn:
        rows = conn.execute("SELECT item FROM jitbroker_demo.orders").fetchall()
        assert rows
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO jitbroker_demo.orders (item) VALUES ('forbidden')")


def test_lease_ttl_equals_the_grant_ttl(
    client: TestClient, pipeline_auth: dict[str, str], broker: Broker
) -> None:
    task_id = open_task(client, pipeline_auth)
    grant = issued_db_credential(client, pipeline_auth, task_id)
    stored = broker.grants.get(grant["grant_id"])
    assert stored is not None
    assert stored.lease_ref is not None

    lease = hvac.Client(url=broker.settings.vault_addr, token="test-root").sys.read_lease(
        stored.lease_ref
    )

    assert grant["lease_ttl_seconds"] == 300
    assert 290 <= lease["data"]["ttl"] <= 300


def test_completed_task_user_cannot_log_in(
    client: TestClient, pipeline_auth: dict[str, str]
) -> None:
    task_id = open_task(client, pipeline_auth)
    credential = issued_db_credential(client, pipeline_auth, task_id)["credential"]

    response = client.post(f"/v1/tasks/{task_id}/complete?wait=true", headers=pipeline_auth)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["state"] == "completed"
    assert [r["state"] for r in body["revocations"]] == ["revoked"]
    assert not role_exists(credential["username"])
    with pytest.raises(psycopg.OperationalError, match="does not exist"):
        pg_connect(credential["username"], credential["password"])


def test_grant_with_short_ttl_expires_by_itself(
    client: TestClient, pipeline_auth: dict[str, str]
) -> None:
    task_id = open_task(client, pipeline_auth)
    response = request_grant(client, pipeline_auth, task_id, {**READ_GRANT, "ttl_seconds": 3})
    assert response.status_code == 201, response.text
    grant = response.json()
    with pg_connect(grant["credential"]["username"], grant["credential"]["password"]):
        pass

    def grant_state() -> str | None:
        state = client.get(f"/v1/grants/{grant['grant_id']}", headers=pipeline_auth).json()["state"]
        return state if state == "expired" else None

    wait_for(grant_state, timeout=15, what="the grant to expire")
    assert not role_exists(grant["credential"]["username"])
    with pytest.raises(psycopg.OperationalError, match="does not exist"):
        pg_connect(grant["credential"]["username"], grant["credential"]["password"])


class GrantWritesFail(redis.Redis):
    """Real Redis, except that the transaction recording an issued grant fails."""

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction=transaction, shard_hint=shard_hint)

        def fail(*_: Any, **__: Any) -> Any:
            raise redis.ConnectionError("injected: Redis went away")

        pipe.execute = fail  # type: ignore[method-assign]
        return pipe


def test_failed_recording_after_issuance_leaves_no_live_lease(
    settings: Settings,
    state_redis: redis.Redis,
    worker: None,
    pipeline_auth: dict[str, str],
    demo_openbao: VaultClient,
) -> None:
    failing = build_broker(settings, redis_client=GrantWritesFail.from_url(settings.redis_url))
    leases_before = set(leases_of(demo_openbao, "demo-ro"))
    with TestClient(create_app(broker=failing)) as client:
        task_id = open_task(client, pipeline_auth)
        response = request_grant(client, pipeline_auth, task_id, READ_GRANT)

    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert "revoked" in response.json()["detail"]
    assert set(leases_of(demo_openbao, "demo-ro")) == leases_before


def test_retry_with_same_idempotency_key_issues_once(
    client: TestClient, pipeline_auth: dict[str, str], demo_openbao: VaultClient
) -> None:
    task_id = open_task(client, pipeline_auth)
    leases_before = set(leases_of(demo_openbao, "demo-ro"))
    key = {"Idempotency-Key": "migration-42"}

    first = request_grant(client, pipeline_auth, task_id, READ_GRANT, key)
    second = request_grant(client, pipeline_auth, task_id, READ_GRANT, key)

    assert first.status_code == 201
    assert second.status_code == 200
    assert second.json()["grant_id"] == first.json()["grant_id"]
    assert "credential" not in second.json()
    assert len(set(leases_of(demo_openbao, "demo-ro")) - leases_before) == 1


def test_idempotency_key_reused_for_another_request_is_rejected(
    client: TestClient, pipeline_auth: dict[str, str]
) -> None:
    task_id = open_task(client, pipeline_auth)
    key = {"Idempotency-Key": "reused"}
    assert request_grant(client, pipeline_auth, task_id, READ_GRANT, key).status_code == 201

    response = request_grant(client, pipeline_auth, task_id, {**READ_GRANT, "ttl_seconds": 60}, key)

    assert response.status_code == 422
    assert "different request" in response.json()["detail"]


def test_token_grant_reads_kv_until_the_task_completes(
    client: TestClient, pipeline_auth: dict[str, str], settings: Settings
) -> None:
    task_id = open_task(client, pipeline_auth)
    response = request_grant(
        client,
        pipeline_auth,
        task_id,
        {"profile": "demo-token", "scopes": ["read"], "ttl_seconds": 120, "justification": "kv"},
    )
    assert response.status_code == 201, response.text
    token = response.json()["credential"]["token"]
    as_workload = hvac.Client(url=settings.vault_addr, token=token)
    assert as_workload.secrets.kv.v2.read_secret("demo/greeting")["data"]["data"]["message"]

    completed = client.post(f"/v1/tasks/{task_id}/complete?wait=true", headers=pipeline_auth)

    assert completed.json()["state"] == "completed"
    with pytest.raises(hvac.exceptions.Forbidden):
        as_workload.secrets.kv.v2.read_secret("demo/greeting")


def test_elevated_scope_waits_for_approval(
    client: TestClient, pipeline_auth: dict[str, str]
) -> None:
    task_id = open_task(client, pipeline_auth)

    response = request_grant(client, pipeline_auth, task_id, {**READ_GRANT, "scopes": ["write"]})

    assert response.status_code == 202
    body = response.json()
    assert body["state"] == "pending_approval"
    assert body["decision"]["rule"] == "demo-db-elevated"
    assert "credential" not in body


def test_revoking_one_grant_kills_its_user(
    client: TestClient, pipeline_auth: dict[str, str]
) -> None:
    task_id = open_task(client, pipeline_auth)
    grant = issued_db_credential(client, pipeline_auth, task_id)

    response = client.post(f"/v1/grants/{grant['grant_id']}/revoke", headers=pipeline_auth)

    assert response.status_code == 200
    wait_for(
        lambda: (
            client.get(f"/v1/grants/{grant['grant_id']}", headers=pipeline_auth).json()["state"]
            == "revoked"
        ),
        what="the grant to be revoked",
    )
    assert not role_exists(grant["credential"]["username"])


def test_task_view_and_audit_never_contain_the_secret(
    client: TestClient, pipeline_auth: dict[str, str], broker: Broker, state_redis: redis.Redis
) -> None:
    task_id = open_task(client, pipeline_auth)
    password = issued_db_credential(client, pipeline_auth, task_id)["credential"]["password"]
    client.post(f"/v1/tasks/{task_id}/complete?wait=true", headers=pipeline_auth)

    view = client.get(f"/v1/tasks/{task_id}", headers=pipeline_auth)
    stored = b"".join(
        repr(state_redis.dump(key)).encode() for key in state_redis.scan_iter(count=1000)
    )

    assert view.json()["grants"][0]["state"] == "revoked"
    assert password not in view.text
    assert password.encode() not in stored
    types = [event.type for event in broker.audit.read_all()]
    assert {"task.opened", "grant.decided", "grant.issued", "task.completed"} <= set(types)
    wait_for(
        lambda: "grant.revoked" in [e.type for e in broker.audit.read_all()],
        what="the revocation audit event",
    )


def test_ready_and_metrics_report_live_grants(
    client: TestClient, pipeline_auth: dict[str, str]
) -> None:
    task_id = open_task(client, pipeline_auth)
    issued_db_credential(client, pipeline_auth, task_id)

    ready = client.get("/readyz")
    metrics = client.get("/metrics").text

    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "redis": True, "openbao": True}
    assert 'jitbroker_grants_issued_total{profile="demo-db"}' in metrics
    assert "jitbroker_live_grants 1.0" in metrics

"""GET /v1/audit (admins, filters, paging) and GET /v1/tasks/{id}/evidence, in memory."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from jitbroker.bootstrap import Broker
from jitbroker.revocation.queue import InMemoryRevocationQueue
from jitbroker.revocation.service import revoke_grant

READ = {"profile": "demo-db", "scopes": ["read"], "ttl_seconds": 60, "justification": "unit"}


def open_task(client: TestClient, auth: dict[str, str]) -> str:
    response = client.post("/v1/tasks", json={"purpose": "audit"}, headers=auth)
    assert response.status_code == 201, response.text
    return str(response.json()["task_id"])


@pytest.fixture
def finished_task(
    client: TestClient,
    broker: Broker,
    queue: InMemoryRevocationQueue,
    pipeline_auth: dict[str, str],
) -> dict[str, Any]:
    """A task whose one grant was issued, then revoked when the task completed."""
    task_id = open_task(client, pipeline_auth)
    grant = client.post(f"/v1/tasks/{task_id}/grants", json=READ, headers=pipeline_auth).json()
    client.post(f"/v1/tasks/{task_id}/complete", headers=pipeline_auth)
    for grant_id in queue.enqueued:
        revoke_grant(broker, grant_id=grant_id)
    return {"task_id": task_id, "grant": grant}


def test_audit_listing_needs_an_admin(
    client: TestClient,
    approver_auth: dict[str, str],
    pipeline_auth: dict[str, str],
    admin_auth: dict[str, str],
) -> None:
    assert client.get("/v1/audit").status_code == 401
    assert client.get("/v1/audit", headers=pipeline_auth).status_code == 403
    assert client.get("/v1/audit", headers=approver_auth).status_code == 403
    assert client.get("/v1/audit", headers=admin_auth).status_code == 200


def test_audit_listing_filters_by_task(
    client: TestClient, finished_task: dict[str, Any], admin_auth: dict[str, str]
) -> None:
    page = client.get(
        "/v1/audit", params={"task": finished_task["task_id"]}, headers=admin_auth
    ).json()

    types = [r["type"] for r in page["records"]]
    assert {r["task_id"] for r in page["records"]} == {finished_task["task_id"]}
    assert types[:3] == ["task.opened", "grant.decided", "grant.issued"]
    assert "grant.revoked" in types


def test_audit_listing_filters_by_workload(
    client: TestClient,
    admin_auth: dict[str, str],
    pipeline_auth: dict[str, str],
    other_auth: dict[str, str],
) -> None:
    open_task(client, pipeline_auth)
    other_task = open_task(client, other_auth)

    page = client.get("/v1/audit", params={"workload": "other-pipeline"}, headers=admin_auth).json()

    assert [(r["type"], r["task_id"]) for r in page["records"]] == [("task.opened", other_task)]


def test_audit_listing_pages_with_a_cursor(
    client: TestClient, admin_auth: dict[str, str], pipeline_auth: dict[str, str]
) -> None:
    for _ in range(5):
        open_task(client, pipeline_auth)
    pages: list[list[int]] = []
    params: dict[str, Any] = {"limit": 2}
    for _ in range(5):
        page = client.get("/v1/audit", params=params, headers=admin_auth).json()
        pages.append([r["seq"] for r in page["records"]])
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]

    assert pages == [[1, 2], [3, 4], [5]]


def test_audit_listing_of_one_task_pages_with_a_cursor(
    client: TestClient, finished_task: dict[str, Any], admin_auth: dict[str, str]
) -> None:
    params: dict[str, Any] = {"task": finished_task["task_id"], "limit": 2}
    everything = client.get(
        "/v1/audit", params={"task": finished_task["task_id"]}, headers=admin_auth
    ).json()["records"]
    paged: list[int] = []
    for _ in range(10):
        page = client.get("/v1/audit", params=params, headers=admin_auth).json()
        paged += [r["seq"] for r in page["records"]]
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]

    assert paged == [r["seq"] for r in everything]
    assert len(paged) > 2


def test_audit_listing_since_leaves_out_older_records(
    client: TestClient, admin_auth: dict[str, str], pipeline_auth: dict[str, str]
) -> None:
    for _ in range(3):
        open_task(client, pipeline_auth)
    second = client.get("/v1/audit", headers=admin_auth).json()["records"][1]

    page = client.get("/v1/audit", params={"since": second["time"]}, headers=admin_auth).json()

    assert [r["seq"] for r in page["records"]] == [2, 3]


def test_audit_listing_rejects_a_malformed_cursor(
    client: TestClient, admin_auth: dict[str, str]
) -> None:
    response = client.get("/v1/audit", params={"cursor": "'; DROP"}, headers=admin_auth)

    assert response.status_code == 422


def test_evidence_tells_who_had_the_access_who_allowed_it_and_when_it_ended(
    client: TestClient, finished_task: dict[str, Any], pipeline_auth: dict[str, str]
) -> None:
    response = client.get(f"/v1/tasks/{finished_task['task_id']}/evidence", headers=pipeline_auth)

    bundle = response.json()
    assert response.status_code == 200, response.text
    (access,) = bundle["access"]
    assert access["workload"] == "demo-pipeline"
    assert access["principal"] == finished_task["grant"]["credential"]["username"]
    assert access["effect"] == "allow"
    assert access["rule"]
    assert access["ended_at"] is not None
    assert access["end_reason"] == "task_completed"
    types = [e["type"] for e in bundle["events"]]
    for expected in ("task.opened", "grant.decided", "grant.issued", "grant.revoked"):
        assert expected in types
    (receipt,) = bundle["receipts"]
    assert receipt["grant_id"] == access["grant_id"]
    assert bundle["task"]["grants"][0]["state"] == "revoked"


def test_evidence_never_carries_the_secret(
    client: TestClient, finished_task: dict[str, Any], pipeline_auth: dict[str, str]
) -> None:
    response = client.get(f"/v1/tasks/{finished_task['task_id']}/evidence", headers=pipeline_auth)

    assert finished_task["grant"]["credential"]["password"] not in response.text


def test_evidence_of_another_workloads_task_is_not_found(
    client: TestClient, finished_task: dict[str, Any], other_auth: dict[str, str]
) -> None:
    response = client.get(f"/v1/tasks/{finished_task['task_id']}/evidence", headers=other_auth)

    assert response.status_code == 404


def test_evidence_is_open_to_admins_and_closed_to_other_humans(
    client: TestClient,
    finished_task: dict[str, Any],
    admin_auth: dict[str, str],
    approver_auth: dict[str, str],
) -> None:
    path = f"/v1/tasks/{finished_task['task_id']}/evidence"

    assert client.get(path, headers=admin_auth).status_code == 200
    assert client.get(path, headers=approver_auth).status_code == 403

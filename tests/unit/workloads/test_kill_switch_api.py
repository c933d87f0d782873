"""The kill switch over HTTP: who may pull it, what a suspended workload is told, bad selectors."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from jitbroker.config import Settings

SUSPEND = {"reason": "runner compromised"}


def suspend(client: TestClient, auth: dict[str, str], workload: str = "demo-pipeline") -> Any:
    return client.post(f"/v1/workloads/{workload}/suspend", json=SUSPEND, headers=auth)


def open_task(client: TestClient, auth: dict[str, str]) -> Any:
    return client.post("/v1/tasks", json={"purpose": "unit"}, headers=auth)


def test_suspend_by_a_human_outside_the_admin_groups_is_403(
    client: TestClient, approver_auth: dict[str, str]
) -> None:
    response = suspend(client, approver_auth)

    assert response.status_code == 403
    assert "platform-admins" in response.json()["detail"]


def test_suspend_with_a_workload_token_is_403(
    client: TestClient, pipeline_auth: dict[str, str]
) -> None:
    assert suspend(client, pipeline_auth).status_code == 403


def test_suspend_of_an_unknown_workload_is_404(
    client: TestClient, admin_auth: dict[str, str]
) -> None:
    assert suspend(client, admin_auth, workload="no-such-workload").status_code == 404


def test_suspended_workload_cannot_open_tasks_and_is_told_why(
    client: TestClient, admin_auth: dict[str, str], pipeline_auth: dict[str, str]
) -> None:
    assert suspend(client, admin_auth).status_code == 200

    response = open_task(client, pipeline_auth)

    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["title"] == "Workload suspended"
    assert response.json()["detail"] == "workload demo-pipeline is suspended: runner compromised"


def test_suspended_workload_token_still_authenticates(
    client: TestClient, admin_auth: dict[str, str], pipeline_auth: dict[str, str]
) -> None:
    task_id = open_task(client, pipeline_auth).json()["task_id"]
    suspend(client, admin_auth)

    response = client.get(f"/v1/tasks/{task_id}", headers=pipeline_auth)

    assert response.status_code == 200


def test_resumed_workload_opens_tasks_again(
    client: TestClient, admin_auth: dict[str, str], pipeline_auth: dict[str, str]
) -> None:
    suspend(client, admin_auth)

    resumed = client.post("/v1/workloads/demo-pipeline/resume", headers=admin_auth)

    assert resumed.status_code == 200
    assert resumed.json()["state"] == "active"
    assert open_task(client, pipeline_auth).status_code == 201


def test_workload_view_shows_the_suspension_and_live_grants(
    client: TestClient, admin_auth: dict[str, str], pipeline_auth: dict[str, str]
) -> None:
    task_id = open_task(client, pipeline_auth).json()["task_id"]
    grant = {"profile": "demo-db", "scopes": ["read"], "ttl_seconds": 60, "justification": "x"}
    client.post(f"/v1/tasks/{task_id}/grants", json=grant, headers=pipeline_auth)
    before = client.get("/v1/workloads/demo-pipeline", headers=admin_auth).json()
    suspend(client, admin_auth)

    after = client.get("/v1/workloads/demo-pipeline", headers=admin_auth).json()

    assert (before["state"], before["live_grants"]) == ("active", 1)
    assert after["state"] == "suspended"
    assert after["suspension"]["suspended_by"] == "root-admin"
    assert after["suspension"]["reason"] == "runner compromised"
    # Still live until a worker confirms the revocation (the in-memory queue never does).
    assert after["live_grants"] == 1


@pytest.mark.parametrize(
    "body",
    [
        {"reason": "incident"},
        {"workload": None, "profile": None, "destination": None, "reason": "incident"},
    ],
)
def test_revoke_with_an_empty_selector_is_422(
    client: TestClient, admin_auth: dict[str, str], body: dict[str, Any]
) -> None:
    response = client.post("/v1/revoke", json=body, headers=admin_auth)

    assert response.status_code == 422
    assert "at least one of workload, profile or destination" in response.json()["detail"]


def test_revoke_without_a_reason_is_422(client: TestClient, admin_auth: dict[str, str]) -> None:
    response = client.post("/v1/revoke", json={"profile": "demo-db"}, headers=admin_auth)

    assert response.status_code == 422
    assert "reason" in response.json()["detail"]


def test_revoke_by_a_non_admin_is_403(client: TestClient, approver_auth: dict[str, str]) -> None:
    response = client.post(
        "/v1/revoke", json={"profile": "demo-db", "reason": "x"}, headers=approver_auth
    )

    assert response.status_code == 403


def test_revoke_answers_the_counts(
    client: TestClient, admin_auth: dict[str, str], pipeline_auth: dict[str, str]
) -> None:
    task_id = open_task(client, pipeline_auth).json()["task_id"]
    grant = {"profile": "demo-db", "scopes": ["read"], "ttl_seconds": 60, "justification": "x"}
    client.post(f"/v1/tasks/{task_id}/grants", json=grant, headers=pipeline_auth)

    response = client.post(
        "/v1/revoke", json={"workload": "demo-pipeline", "reason": "x"}, headers=admin_auth
    )

    assert response.status_code == 200
    assert response.json() == {"matched": 1, "revocation_requested": 1, "cancelled": 0}


def test_admin_groups_are_read_from_the_environment_as_json(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JITBROKER_ADMIN_GROUPS", '["secops", "sre-oncall"]')

    assert Settings().admin_groups == ["secops", "sre-oncall"]

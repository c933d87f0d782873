"""Bad input on every endpoint gets a 4xx problem+json naming what was wrong, never a 500."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

GOOD_GRANT = {"profile": "demo-db", "scopes": ["read"], "ttl_seconds": 60, "justification": "x"}


def assert_problem(response: Any, status: int, mentions: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status
    assert body["title"]
    assert mentions in body["detail"]


@pytest.mark.parametrize(
    ("body", "mentions"),
    [
        ({}, "purpose"),
        ({"purpose": 12}, "purpose"),
        ({"purpose": ""}, "purpose"),
        ({"purpose": "x", "ttl_seconds": 0}, "ttl_seconds"),
        ({"purpose": "x", "ttl_seconds": "soon"}, "ttl_seconds"),
        ({"purpose": "x", "ttl_seconds": 10**9}, "task cap"),
        ({"purpose": "x", "owner": "me"}, "owner"),
    ],
)
def test_open_task_with_bad_body_is_422(
    client: TestClient, pipeline_auth: dict[str, str], body: dict[str, Any], mentions: str
) -> None:
    assert_problem(client.post("/v1/tasks", json=body, headers=pipeline_auth), 422, mentions)


def test_open_task_with_body_that_is_not_json_is_422(
    client: TestClient, pipeline_auth: dict[str, str]
) -> None:
    response = client.post(
        "/v1/tasks",
        content=b"{not json",
        headers={**pipeline_auth, "content-type": "application/json"},
    )
    assert_problem(response, 422, "JSON")


@pytest.mark.parametrize(
    ("change", "mentions"),
    [
        ({"profile": "no-such-profile"}, "unknown profile 'no-such-profile'"),
        ({"scopes": ["read", "superuser"]}, "no scope 'superuser'"),
        ({"scopes": []}, "scopes"),
        ({"scopes": "read"}, "scopes"),
        ({"scopes": ["read", "read"]}, "must not repeat"),
        ({"ttl_seconds": 0}, "ttl_seconds"),
        ({"ttl_seconds": -5}, "ttl_seconds"),
        ({"ttl_seconds": 3601}, "exceeds the profile cap of 3600"),
        ({"ttl_seconds": "ten"}, "ttl_seconds"),
        ({"justification": ""}, "justification"),
        ({"justification": None}, "justification"),
    ],
)
def test_grant_request_with_bad_field_is_422(
    client: TestClient,
    pipeline_auth: dict[str, str],
    task_id: str,
    change: dict[str, Any],
    mentions: str,
) -> None:
    response = client.post(
        f"/v1/tasks/{task_id}/grants", json={**GOOD_GRANT, **change}, headers=pipeline_auth
    )
    assert_problem(response, 422, mentions)


@pytest.mark.parametrize("missing", ["profile", "scopes", "ttl_seconds", "justification"])
def test_grant_request_missing_a_field_is_422(
    client: TestClient, pipeline_auth: dict[str, str], task_id: str, missing: str
) -> None:
    body = {k: v for k, v in GOOD_GRANT.items() if k != missing}
    response = client.post(f"/v1/tasks/{task_id}/grants", json=body, headers=pipeline_auth)
    assert_problem(response, 422, missing)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/v1/tasks/{task}"),
        ("post", "/v1/tasks/{task}/complete"),
        ("post", "/v1/tasks/{task}/grants"),
    ],
)
def test_another_workloads_task_is_not_found(
    client: TestClient, other_auth: dict[str, str], task_id: str, method: str, path: str
) -> None:
    response = client.request(
        method, path.format(task=task_id), json=GOOD_GRANT, headers=other_auth
    )
    assert_problem(response, 404, f"no task {task_id}")


def test_another_workloads_grant_is_not_found(
    client: TestClient, pipeline_auth: dict[str, str], other_auth: dict[str, str], task_id: str
) -> None:
    grant = client.post(f"/v1/tasks/{task_id}/grants", json=GOOD_GRANT, headers=pipeline_auth)
    grant_id = grant.json()["grant_id"]

    assert_problem(client.get(f"/v1/grants/{grant_id}", headers=other_auth), 404, grant_id)
    assert_problem(client.post(f"/v1/grants/{grant_id}/revoke", headers=other_auth), 404, grant_id)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/v1/tasks/tsk_unknown"),
        ("post", "/v1/tasks/tsk_unknown/complete"),
        ("get", "/v1/grants/grt_unknown"),
        ("post", "/v1/grants/grt_unknown/revoke"),
    ],
)
def test_unknown_ids_are_not_found(
    client: TestClient, pipeline_auth: dict[str, str], method: str, path: str
) -> None:
    assert_problem(client.request(method, path, headers=pipeline_auth), 404, "unknown")


def test_missing_token_is_401_with_reason(client: TestClient) -> None:
    response = client.post("/v1/tasks", json={"purpose": "x"})
    assert_problem(response, 401, "missing Authorization")
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_invalid_token_is_401_and_not_echoed(client: TestClient) -> None:
    token = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.c2VjcmV0LXRva2VuLXZhbHVl"
    response = client.post(
        "/v1/tasks", json={"purpose": "x"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert_problem(response, 401, "token")
    assert token not in response.text
    assert "c2VjcmV0LXRva2VuLXZhbHVl" not in response.text


def test_human_token_on_workload_endpoint_is_403(
    client: TestClient, human_auth: dict[str, str]
) -> None:
    assert_problem(
        client.post("/v1/tasks", json={"purpose": "x"}, headers=human_auth), 403, "human"
    )


def test_request_no_rule_allows_is_403_naming_the_default_rule(
    client: TestClient, other_auth: dict[str, str]
) -> None:
    task = client.post("/v1/tasks", json={"purpose": "x"}, headers=other_auth).json()["task_id"]
    body = {"profile": "demo-token", "scopes": ["read"], "ttl_seconds": 60, "justification": "x"}

    response = client.post(f"/v1/tasks/{task}/grants", json=body, headers=other_auth)

    assert_problem(response, 403, "no policy rule allows")
    assert response.json()["rule"] == "default-deny"


def test_grant_on_completed_task_is_409(
    client: TestClient, pipeline_auth: dict[str, str], task_id: str
) -> None:
    client.post(f"/v1/tasks/{task_id}/complete", headers=pipeline_auth)

    response = client.post(f"/v1/tasks/{task_id}/grants", json=GOOD_GRANT, headers=pipeline_auth)

    assert_problem(response, 409, "completed")


def test_unknown_route_is_problem_json(client: TestClient) -> None:
    assert_problem(client.get("/v1/nothing-here"), 404, "Not Found")


def test_openapi_document_is_served(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "/v1/tasks/{task_id}/grants" in paths
    assert "/v1/tasks/{task_id}/complete" in paths

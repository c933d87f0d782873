"""A task's dead-man's switch: without heartbeats its credentials die, with them they live."""

from __future__ import annotations

import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.integration.support import role_exists, wait_for

pytestmark = pytest.mark.integration

READ = {"profile": "demo-db", "scopes": ["read"], "ttl_seconds": 600, "justification": "etl"}


def heartbeat_task(client: TestClient, auth: dict[str, str]) -> tuple[str, dict[str, Any]]:
    task = client.post(
        "/v1/tasks", json={"purpose": "ci job", "heartbeat_seconds": 2}, headers=auth
    ).json()
    grant = client.post(f"/v1/tasks/{task['task_id']}/grants", json=READ, headers=auth).json()
    return str(task["task_id"]), grant


def test_task_without_heartbeat_loses_its_credential(
    client: TestClient, pipeline_auth: dict[str, str]
) -> None:
    task_id, grant = heartbeat_task(client, pipeline_auth)
    username = grant["credential"]["username"]
    assert role_exists(username)

    wait_for(lambda: not role_exists(username), timeout=10, what="the silent task's user to die")

    task = client.get(f"/v1/tasks/{task_id}", headers=pipeline_auth).json()
    assert task["state"] == "completed"
    assert task["grants"][0]["revoke_reason"] == "heartbeat_missed"


def test_heartbeats_keep_the_credential_alive(
    client: TestClient, pipeline_auth: dict[str, str]
) -> None:
    task_id, grant = heartbeat_task(client, pipeline_auth)
    started = time.monotonic()

    while time.monotonic() - started < 4:  # twice the heartbeat interval
        beat = client.post(f"/v1/tasks/{task_id}/heartbeat", headers=pipeline_auth)
        assert beat.status_code == 200
        time.sleep(0.5)  # the workload's own pace, not synchronisation

    assert role_exists(grant["credential"]["username"])
    assert client.get(f"/v1/tasks/{task_id}", headers=pipeline_auth).json()["state"] == "active"

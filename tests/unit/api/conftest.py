from __future__ import annotations

import pytest
from fastapi.testclient import TestClient


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def human_auth(approver_auth: dict[str, str]) -> dict[str, str]:
    return approver_auth


@pytest.fixture
def task_id(client: TestClient, pipeline_auth: dict[str, str]) -> str:
    response = client.post("/v1/tasks", json={"purpose": "unit"}, headers=pipeline_auth)
    assert response.status_code == 201
    return str(response.json()["task_id"])

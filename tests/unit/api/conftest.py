from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from jitbroker.app import create_app
from jitbroker.bootstrap import Broker
from jitbroker.identity.dev_issuer import DevIssuer


@pytest.fixture
def client(broker: Broker) -> Iterator[TestClient]:
    with TestClient(create_app(broker=broker), raise_server_exceptions=False) as test_client:
        yield test_client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def pipeline_auth(broker: Broker, demo_config_dir: Path) -> dict[str, str]:
    return bearer(
        DevIssuer(demo_config_dir / "keys").workload_token(broker.config, "demo-pipeline")
    )


@pytest.fixture
def other_auth(broker: Broker, demo_config_dir: Path) -> dict[str, str]:
    return bearer(
        DevIssuer(demo_config_dir / "keys").workload_token(broker.config, "other-pipeline")
    )


@pytest.fixture
def human_auth(broker: Broker, demo_config_dir: Path) -> dict[str, str]:
    return bearer(DevIssuer(demo_config_dir / "keys").human_token(broker.config, "alice"))


@pytest.fixture
def task_id(client: TestClient, pipeline_auth: dict[str, str]) -> str:
    response = client.post("/v1/tasks", json={"purpose": "unit"}, headers=pipeline_auth)
    assert response.status_code == 201
    return str(response.json()["task_id"])

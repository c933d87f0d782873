from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests.unit.fakes import FakeEngine, memory_broker, write_config

from jitbroker.app import create_app
from jitbroker.bootstrap import Broker
from jitbroker.identity.dev_issuer import DevIssuer
from jitbroker.revocation.queue import InMemoryRevocationQueue


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    return write_config(tmp_path)


@pytest.fixture
def wired(config_dir: Path) -> tuple[Broker, FakeEngine, InMemoryRevocationQueue]:
    return memory_broker(config_dir)


@pytest.fixture
def broker(wired: tuple[Broker, FakeEngine, InMemoryRevocationQueue]) -> Broker:
    return wired[0]


@pytest.fixture
def client(broker: Broker) -> Iterator[TestClient]:
    with TestClient(create_app(broker=broker), raise_server_exceptions=False) as test_client:
        yield test_client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def pipeline_auth(broker: Broker, config_dir: Path) -> dict[str, str]:
    return bearer(DevIssuer(config_dir / "keys").workload_token(broker.config, "demo-pipeline"))


@pytest.fixture
def other_auth(broker: Broker, config_dir: Path) -> dict[str, str]:
    return bearer(DevIssuer(config_dir / "keys").workload_token(broker.config, "other-pipeline"))


@pytest.fixture
def human_auth(broker: Broker, config_dir: Path) -> dict[str, str]:
    return bearer(DevIssuer(config_dir / "keys").human_token(broker.config, "alice"))


@pytest.fixture
def task_id(client: TestClient, pipeline_auth: dict[str, str]) -> str:
    response = client.post("/v1/tasks", json={"purpose": "unit"}, headers=pipeline_auth)
    assert response.status_code == 201
    return str(response.json()["task_id"])

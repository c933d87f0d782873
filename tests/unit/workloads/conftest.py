"""The unit demo configuration with an incident webhook, an API client and caller tokens."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests.unit.fakes import write_demo_config

from jitbroker.app import create_app
from jitbroker.bootstrap import Broker
from jitbroker.identity.dev_issuer import DevIssuer
from jitbroker.notifications.queue import InMemoryNotificationQueue

SECURITY_WEBHOOK = """
webhooks:
  - name: security
    url: https://hooks.example.test/security
    secret_env: JITBROKER_UNIT_WEBHOOK_SECRET
    events: [incident.revoke]
"""


@pytest.fixture
def demo_config_dir(tmp_path: Path) -> Path:
    """The unit demo configuration plus a webhook subscribed to incident.revoke."""
    directory = tmp_path / "demo-config"
    directory.mkdir()
    write_demo_config(directory)
    (directory / "webhooks.yaml").write_text(SECURITY_WEBHOOK)
    return directory


@pytest.fixture
def notification_queue(broker: Broker) -> InMemoryNotificationQueue:
    assert isinstance(broker.notifications, InMemoryNotificationQueue)
    return broker.notifications


@pytest.fixture
def client(broker: Broker) -> Iterator[TestClient]:
    with TestClient(create_app(broker=broker), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def dev_issuer(demo_config_dir: Path) -> DevIssuer:
    return DevIssuer(demo_config_dir / "keys")


@pytest.fixture
def admin_auth(broker: Broker, dev_issuer: DevIssuer) -> dict[str, str]:
    return {"Authorization": f"Bearer {dev_issuer.human_token(broker.config, 'root-admin')}"}


@pytest.fixture
def approver_auth(broker: Broker, dev_issuer: DevIssuer) -> dict[str, str]:
    return {"Authorization": f"Bearer {dev_issuer.human_token(broker.config, 'alice')}"}


@pytest.fixture
def pipeline_auth(broker: Broker, dev_issuer: DevIssuer) -> dict[str, str]:
    token = dev_issuer.workload_token(broker.config, "demo-pipeline")
    return {"Authorization": f"Bearer {token}"}

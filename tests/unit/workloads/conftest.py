"""The unit demo configuration with an incident webhook, an API client and caller tokens."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.unit.fakes import write_demo_config

from jitbroker.bootstrap import Broker
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

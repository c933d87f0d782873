"""A demo configuration with three webhooks subscribed to different events."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.unit.fakes import write_demo_config

from jitbroker.bootstrap import Broker
from jitbroker.notifications.queue import InMemoryNotificationQueue

SECRET_ENV = "JITBROKER_UNIT_WEBHOOK_SECRET"
WEBHOOK_SECRET = "unit-webhook-secret-value"

WEBHOOKS = f"""
webhooks:
  - name: everything
    url: https://hooks.example.test/everything
    secret_env: {SECRET_ENV}
  - name: approvals
    url: https://hooks.example.test/approvals
    secret_env: {SECRET_ENV}
    events: [approval.pending, approval.approved, approval.denied, approval.expired]
  - name: security
    url: https://hooks.example.test/security
    secret_env: {SECRET_ENV}
    events: [break_glass.used, break_glass.acknowledged]
"""


@pytest.fixture
def demo_config_dir(tmp_path: Path) -> Path:
    """The unit demo configuration plus the webhooks above."""
    directory = tmp_path / "demo-config"
    directory.mkdir()
    write_demo_config(directory)
    (directory / "webhooks.yaml").write_text(WEBHOOKS)
    return directory


@pytest.fixture
def notification_queue(broker: Broker) -> InMemoryNotificationQueue:
    assert isinstance(broker.notifications, InMemoryNotificationQueue)
    return broker.notifications


@pytest.fixture
def webhook_secret(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(SECRET_ENV, WEBHOOK_SECRET)
    return WEBHOOK_SECRET

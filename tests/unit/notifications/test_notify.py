"""notify(): store once, enqueue one delivery per subscribed webhook, never raise."""

from __future__ import annotations

import json
from pathlib import Path

import fakeredis
import pytest
from pydantic import SecretStr
from tests.unit.fakes import memory_broker, write_demo_config

from jitbroker.bootstrap import Broker
from jitbroker.notifications.queue import InMemoryNotificationQueue
from jitbroker.notifications.repository import NOTIFICATION_TTL_SECONDS
from jitbroker.notifications.service import notify

FIELDS = {
    "grant_id": "g-1",
    "task_id": "t-1",
    "workload": "demo-pipeline",
    "profile": "demo-db",
    "scopes": ["read"],
    "ttl_seconds": 600,
    "justification": "fix the nightly export",
    "rule": "prod-needs-approval",
}


class RefusingQueue:
    """Accepts deliveries except to one webhook, as if the queue broke mid fan-out."""

    def __init__(self, refused_webhook: str) -> None:
        self.refused_webhook = refused_webhook
        self.enqueued: list[tuple[str, str]] = []

    def enqueue(self, notification_id: str, webhook_name: str) -> None:
        if webhook_name == self.refused_webhook:
            raise ConnectionError("queue unreachable")
        self.enqueued.append((notification_id, webhook_name))


def stored_document(broker: Broker, notification_id: str) -> dict[str, object]:
    raw = broker.redis.get(f"{broker.settings.key_prefix}:notification:{notification_id}")
    assert isinstance(raw, bytes)
    document: dict[str, object] = json.loads(raw)
    return document


def test_pending_approval_goes_to_catch_all_and_approval_webhooks(
    broker: Broker, notification_queue: InMemoryNotificationQueue
) -> None:
    webhooks = notify(broker, event="approval.pending", text="waits", fields=FIELDS)

    assert webhooks == ["everything", "approvals"]
    assert [name for _, name in notification_queue.enqueued] == ["everything", "approvals"]


def test_break_glass_goes_to_catch_all_and_security_webhooks(
    broker: Broker, notification_queue: InMemoryNotificationQueue
) -> None:
    webhooks = notify(broker, event="break_glass.used", text="break-glass", fields=FIELDS)

    assert webhooks == ["everything", "security"]
    assert [name for _, name in notification_queue.enqueued] == ["everything", "security"]


def test_every_delivery_of_one_notification_names_the_same_stored_notification(
    broker: Broker, notification_queue: InMemoryNotificationQueue
) -> None:
    notify(broker, event="approval.denied", text="denied", fields=FIELDS)

    ids = {notification_id for notification_id, _ in notification_queue.enqueued}
    assert len(ids) == 1
    assert stored_document(broker, ids.pop())["event"] == "approval.denied"


def test_event_nobody_subscribes_to_is_neither_stored_nor_enqueued(tmp_path: Path) -> None:
    broker, _, _ = memory_broker(write_demo_config(tmp_path))

    webhooks = notify(broker, event="approval.pending", text="waits", fields=FIELDS)

    assert webhooks == []
    assert list(broker.redis.scan_iter("*:notification:*")) == []


def test_stored_notification_holds_text_and_fields_but_not_the_webhook_secret(
    broker: Broker, notification_queue: InMemoryNotificationQueue, webhook_secret: str
) -> None:
    notify(broker, event="approval.pending", text="demo-pipeline waits", fields=FIELDS)

    notification_id, _ = notification_queue.enqueued[0]
    key = f"{broker.settings.key_prefix}:notification:{notification_id}"
    raw = broker.redis.get(key)
    assert isinstance(raw, bytes)
    assert webhook_secret.encode() not in raw
    document = json.loads(raw)
    assert set(document) == {"id", "event", "time", "text", "fields"}
    assert document["text"] == "demo-pipeline waits"
    assert document["fields"] == FIELDS
    assert 0 < broker.redis.ttl(key) <= NOTIFICATION_TTL_SECONDS


def test_queue_messages_carry_only_ids(
    broker: Broker, notification_queue: InMemoryNotificationQueue, webhook_secret: str
) -> None:
    notify(broker, event="approval.pending", text="waits", fields=FIELDS)

    for message in notification_queue.enqueued:
        assert webhook_secret not in repr(message)
        assert FIELDS["justification"] not in repr(message)


def test_secret_typed_field_is_stored_masked(
    broker: Broker, notification_queue: InMemoryNotificationQueue
) -> None:
    notify(
        broker,
        event="break_glass.used",
        text="break-glass",
        fields={**FIELDS, "oops": SecretStr("db-password"), "nested": {"x": SecretStr("pw")}},
    )

    notification_id, _ = notification_queue.enqueued[0]
    fields = stored_document(broker, notification_id)["fields"]
    assert isinstance(fields, dict)
    assert fields["oops"] == "**********"
    assert fields["nested"] == {"x": "**********"}


def test_enqueue_failure_is_swallowed_and_other_webhooks_still_get_theirs(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    queue = RefusingQueue(refused_webhook="everything")
    broker.notifications = queue

    webhooks = notify(broker, event="approval.pending", text="waits", fields=FIELDS)

    assert webhooks == ["approvals"]
    assert [name for _, name in queue.enqueued] == ["approvals"]
    assert "not enqueued" in caplog.text


def test_storage_failure_is_swallowed_and_nothing_is_enqueued(
    broker: Broker, notification_queue: InMemoryNotificationQueue, caplog: pytest.LogCaptureFixture
) -> None:
    server = fakeredis.FakeServer()
    server.connected = False
    broker.redis = fakeredis.FakeRedis(server=server)

    webhooks = notify(broker, event="approval.pending", text="waits", fields=FIELDS)

    assert webhooks == []
    assert notification_queue.enqueued == []
    assert "not stored" in caplog.text

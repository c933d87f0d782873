"""deliver(): sign and post one stored notification; drop what cannot succeed, raise to retry."""

from __future__ import annotations

import json

import httpx
import pytest

from jitbroker.bootstrap import Broker
from jitbroker.errors import DeliveryFailed
from jitbroker.notifications.queue import InMemoryNotificationQueue
from jitbroker.notifications.service import deliver, notify
from jitbroker.notifications.signing import verify

FIELDS = {"grant_id": "g-1", "workload": "demo-pipeline", "profile": "demo-db"}


class RecordingReceiver:
    """An httpx transport that answers every request with one status and keeps the requests."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(self.status)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)


@pytest.fixture
def pending_delivery(
    broker: Broker, notification_queue: InMemoryNotificationQueue
) -> tuple[str, str]:
    notify(broker, event="approval.pending", text="demo-pipeline waits", fields=FIELDS)
    return notification_queue.enqueued[1]


def test_delivery_posts_the_notification_signed_with_the_webhook_secret(
    broker: Broker, pending_delivery: tuple[str, str], webhook_secret: str
) -> None:
    notification_id, webhook_name = pending_delivery
    receiver = RecordingReceiver()

    status = deliver(
        broker,
        notification_id=notification_id,
        webhook_name=webhook_name,
        transport=receiver.transport(),
    )

    assert status == 200
    [request] = receiver.requests
    assert str(request.url) == "https://hooks.example.test/approvals"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-Jitbroker-Event"] == "approval.pending"
    assert request.headers["X-Jitbroker-Delivery"] == notification_id
    now = broker.clock().timestamp()
    signature = request.headers["X-Jitbroker-Signature"]
    assert verify(webhook_secret.encode(), signature, request.content, now=now)
    body = json.loads(request.content)
    assert body["id"] == notification_id
    assert body["text"] == "demo-pipeline waits"
    assert body["event"] == "approval.pending"
    assert body["fields"] == FIELDS


def test_receiver_error_raises_delivery_failed_so_the_task_retries(
    broker: Broker, pending_delivery: tuple[str, str], webhook_secret: str
) -> None:
    notification_id, webhook_name = pending_delivery

    with pytest.raises(DeliveryFailed, match="answered 500"):
        deliver(
            broker,
            notification_id=notification_id,
            webhook_name=webhook_name,
            transport=RecordingReceiver(status=500).transport(),
        )


def test_unreachable_receiver_raises_delivery_failed_without_naming_the_url(
    broker: Broker, pending_delivery: tuple[str, str], webhook_secret: str
) -> None:
    notification_id, webhook_name = pending_delivery

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot connect to {request.url}", request=request)

    with pytest.raises(DeliveryFailed) as failure:
        deliver(
            broker,
            notification_id=notification_id,
            webhook_name=webhook_name,
            transport=httpx.MockTransport(refuse),
        )
    assert "hooks.example.test" not in str(failure.value)


def test_expired_notification_is_dropped_quietly(broker: Broker, webhook_secret: str) -> None:
    receiver = RecordingReceiver()

    status = deliver(
        broker, notification_id="0" * 32, webhook_name="everything", transport=receiver.transport()
    )

    assert status == 0
    assert receiver.requests == []


def test_missing_secret_variable_drops_the_delivery_unsent(
    broker: Broker, pending_delivery: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    notification_id, webhook_name = pending_delivery
    receiver = RecordingReceiver()

    status = deliver(
        broker,
        notification_id=notification_id,
        webhook_name=webhook_name,
        transport=receiver.transport(),
    )

    assert status == 0
    assert receiver.requests == []
    assert "JITBROKER_UNIT_WEBHOOK_SECRET is not set" in caplog.text


def test_webhook_removed_from_the_config_drops_the_delivery(
    broker: Broker, pending_delivery: tuple[str, str], webhook_secret: str
) -> None:
    notification_id, _ = pending_delivery
    receiver = RecordingReceiver()

    status = deliver(
        broker,
        notification_id=notification_id,
        webhook_name="decommissioned",
        transport=receiver.transport(),
    )

    assert status == 0
    assert receiver.requests == []

"""Signed webhook notifications delivered by the real Celery worker to a real HTTP receiver."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from jitbroker.bootstrap import Broker
from jitbroker.notifications.service import notify
from jitbroker.notifications.signing import verify
from tests.integration.support import (
    FLAKY_WEBHOOK_PATH,
    STEADY_WEBHOOK_PATH,
    WEBHOOK_SECRET,
    ReceivedPost,
    WebhookReceiver,
    wait_for,
)

pytestmark = pytest.mark.integration


def grant_fields(grant_id: str) -> dict[str, Any]:
    return {
        "grant_id": grant_id,
        "task_id": uuid.uuid4().hex,
        "workload": "demo-pipeline",
        "profile": "demo-db",
        "scopes": ["read"],
        "ttl_seconds": 300,
        "justification": "integration test",
        "rule": "prod-needs-approval",
        "approvers": ["dba"],
    }


def test_worker_delivers_a_signed_notification_to_the_receiver(
    broker: Broker, webhook_receiver: WebhookReceiver
) -> None:
    grant_id = uuid.uuid4().hex
    fields = grant_fields(grant_id)

    webhooks = notify(
        broker, event="approval.pending", text=f"grant {grant_id} waits", fields=fields
    )

    assert webhooks == ["test-receiver"]
    [post] = wait_for(
        lambda: webhook_receiver.posts_about(STEADY_WEBHOOK_PATH, grant_id),
        timeout=30,
        what="the webhook delivery",
    )
    signature = post.headers["x-jitbroker-signature"]
    assert verify(WEBHOOK_SECRET.encode(), signature, post.body, now=time.time())
    assert not verify(b"not-the-secret", signature, post.body, now=time.time())
    assert post.headers["content-type"] == "application/json"
    assert post.headers["x-jitbroker-event"] == "approval.pending"
    document = post.document
    assert set(document) == {"id", "event", "time", "text", "fields"}
    assert document["id"] == post.headers["x-jitbroker-delivery"]
    assert document["event"] == "approval.pending"
    assert document["text"] == f"grant {grant_id} waits"
    assert document["fields"] == fields


def test_failed_delivery_is_retried_until_the_receiver_accepts_it(
    broker: Broker, webhook_receiver: WebhookReceiver
) -> None:
    grant_id = uuid.uuid4().hex

    webhooks = notify(
        broker,
        event="break_glass.used",
        text=f"break-glass grant {grant_id}",
        fields=grant_fields(grant_id),
    )

    assert webhooks == ["test-receiver", "flaky-receiver"]

    def attempts_until_accepted() -> list[ReceivedPost] | None:
        posts = webhook_receiver.posts_about(FLAKY_WEBHOOK_PATH, grant_id)
        return posts if posts and posts[-1].status == 200 else None

    attempts = wait_for(
        attempts_until_accepted, timeout=60, what="the flaky receiver to accept the delivery"
    )
    assert [p.status for p in attempts] == [500, 500, 200]
    assert len({p.headers["x-jitbroker-delivery"] for p in attempts}) == 1
    for attempt in attempts:
        signature = attempt.headers["x-jitbroker-signature"]
        assert verify(WEBHOOK_SECRET.encode(), signature, attempt.body, now=time.time())

"""How webhook deliveries reach the workers: a port with a Celery adapter and an in-memory fake."""

from __future__ import annotations

from typing import Protocol

from celery import Celery

from jitbroker.worker import NOTIFICATION_QUEUE

DELIVER_TASK = "notifications.deliver_webhook"


class NotificationQueue(Protocol):
    def enqueue(self, notification_id: str, webhook_name: str) -> None:
        """Ask a worker to deliver one stored notification to one webhook (ids only)."""


class CeleryNotificationQueue:
    def __init__(self, app: Celery) -> None:
        self._app = app

    def enqueue(self, notification_id: str, webhook_name: str) -> None:
        self._app.send_task(
            DELIVER_TASK, args=[notification_id, webhook_name], queue=NOTIFICATION_QUEUE
        )


class InMemoryNotificationQueue:
    """Collects enqueued deliveries; for unit tests of the services."""

    def __init__(self) -> None:
        self.enqueued: list[tuple[str, str]] = []

    def enqueue(self, notification_id: str, webhook_name: str) -> None:
        self.enqueued.append((notification_id, webhook_name))

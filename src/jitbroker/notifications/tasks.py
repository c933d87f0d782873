"""Celery tasks: thin shells that reload a notification by id and call the delivery service."""

from __future__ import annotations

from celery import shared_task

from jitbroker.bootstrap import worker_broker
from jitbroker.errors import DeliveryFailed, StateUnavailable
from jitbroker.notifications import service


@shared_task(
    name="notifications.deliver_webhook",
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(DeliveryFailed, StateUnavailable),
    retry_backoff=2,
    retry_backoff_max=240,
    retry_jitter=True,
    # Ten retries span up to about 18 minutes; a receiver down longer misses the notification
    # (the audit log still has the decision).
    max_retries=10,
    ignore_result=True,
)
def deliver_webhook_task(notification_id: str, webhook_name: str) -> None:
    """Post one stored notification to one webhook, retrying with backoff until it answers 2xx."""
    service.deliver(worker_broker(), notification_id=notification_id, webhook_name=webhook_name)

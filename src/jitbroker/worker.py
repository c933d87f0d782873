"""The Celery application: Redis broker, late acks, prefetch 1, ids-only JSON messages."""

from __future__ import annotations

from celery import Celery

from jitbroker.config import Settings
from jitbroker.redis_client import celery_broker

REVOCATION_QUEUE = "jitbroker.revocation"
NOTIFICATION_QUEUE = "jitbroker.notifications"


def create_celery(settings: Settings) -> Celery:
    """A Celery app for `settings`; the worker process and the API's sender share this shape."""
    broker_url, transport_options = celery_broker(settings.task_queue_url)
    app = Celery(
        "jitbroker",
        broker=broker_url,
        include=["jitbroker.revocation.tasks", "jitbroker.notifications.tasks"],
    )
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_store_errors_even_if_ignored=False,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=REVOCATION_QUEUE,
        task_routes={
            "revocation.*": {"queue": REVOCATION_QUEUE},
            "notifications.*": {"queue": NOTIFICATION_QUEUE},
        },
        task_soft_time_limit=60,
        task_time_limit=90,
        broker_connection_retry_on_startup=True,
        # Unacknowledged messages come back after this long; the expiry ledger re-enqueues
        # sooner (revocation_redelivery_seconds), so this is only a second line of defence.
        broker_transport_options={"visibility_timeout": 300, **transport_options},
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    return app

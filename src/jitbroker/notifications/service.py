"""Notify: store a notification and fan it out to webhooks; deliver: sign and post one."""

from __future__ import annotations

import logging
import os
from typing import Any

import httpx

from jitbroker.bootstrap import Broker
from jitbroker.config import WebhookConfig
from jitbroker.errors import DeliveryFailed
from jitbroker.notifications.repository import NotificationRepository
from jitbroker.notifications.schemas import ALL_EVENTS, Notification, NotificationEvent
from jitbroker.notifications.signing import SIGNATURE_HEADER, sign

log = logging.getLogger(__name__)

DELIVERY_TIMEOUT_SECONDS = 5.0


def _repository(broker: Broker) -> NotificationRepository:
    # Stateless over the shared Redis client, so it is cheaper to build than to wire.
    return NotificationRepository(broker.redis, broker.settings.key_prefix)


def subscribed_webhooks(broker: Broker, event: NotificationEvent) -> list[WebhookConfig]:
    """The configured webhooks whose `events` name `event` or "*"."""
    return [
        webhook
        for webhook in broker.config.webhooks.values()
        if event in webhook.events or ALL_EVENTS in webhook.events
    ]


def slack_escape(text: str) -> str:
    """Neutralise Slack markup in text that quotes requesters (no fake links, no @channel)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def notify(
    broker: Broker, *, event: NotificationEvent, text: str, fields: dict[str, Any]
) -> list[str]:
    """Store a notification and enqueue one delivery per subscribed webhook; never raises."""
    webhooks = subscribed_webhooks(broker, event)
    if not webhooks:
        return []
    try:
        notification = Notification(
            event=event, time=broker.clock(), text=slack_escape(text), fields=fields
        )
        _repository(broker).save(notification)
    except Exception:  # noqa: BLE001 - a lost notification must never block a decision
        log.exception("%s notification not stored; no webhook will get it", event)
        return []
    enqueued: list[str] = []
    for webhook in webhooks:
        try:
            broker.notifications.enqueue(notification.id, webhook.name)
        except Exception:  # noqa: BLE001 - as above; the other webhooks still get theirs
            log.exception(
                "delivery of notification %s to webhook %s not enqueued",
                notification.id,
                webhook.name,
            )
        else:
            enqueued.append(webhook.name)
    return enqueued


def deliver(
    broker: Broker,
    *,
    notification_id: str,
    webhook_name: str,
    transport: httpx.BaseTransport | None = None,
) -> int:
    """Sign and post one stored notification to one webhook; the receiver's status, or 0."""
    notification = _repository(broker).get(notification_id)
    if notification is None:
        log.info("notification %s is gone (expired); nothing to deliver", notification_id)
        return 0
    webhook = broker.config.webhooks.get(webhook_name)
    if webhook is None:
        log.warning(
            "notification %s dropped: no webhook named %s is configured any more",
            notification_id,
            webhook_name,
        )
        return 0
    secret = os.environ.get(webhook.secret_env)
    if not secret:
        # Retrying cannot conjure the variable; sending unsigned would defeat the receiver.
        log.error(
            "notification %s not sent to webhook %s: environment variable %s is not set",
            notification_id,
            webhook_name,
            webhook.secret_env,
        )
        return 0
    body = notification.body()
    timestamp = int(broker.clock().timestamp())
    headers = {
        "Content-Type": "application/json",
        "X-Jitbroker-Event": notification.event,
        "X-Jitbroker-Delivery": notification.id,
        SIGNATURE_HEADER: sign(secret.encode(), timestamp, body),
    }
    try:
        with httpx.Client(transport=transport, timeout=DELIVERY_TIMEOUT_SECONDS) as client:
            response = client.post(webhook.url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        # Only the exception type: webhook URLs (Slack's, for one) embed a credential.
        raise DeliveryFailed(
            f"webhook {webhook_name} unreachable: {type(exc).__name__}",
            notification_id=notification_id,
        ) from None
    if not response.is_success:
        raise DeliveryFailed(
            f"webhook {webhook_name} answered {response.status_code}",
            notification_id=notification_id,
        )
    log.info(
        "notification %s (%s) delivered to webhook %s",
        notification.id,
        notification.event,
        webhook_name,
    )
    return response.status_code

"""The only code that touches Redis for notifications."""

from __future__ import annotations

import redis

from jitbroker.errors import StateUnavailable
from jitbroker.notifications.schemas import Notification

# Outlives the whole retry chain (under 20 minutes) and a worker outage of a few days.
NOTIFICATION_TTL_SECONDS = 7 * 86400


class NotificationRepository:
    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._redis = client
        self._prefix = prefix

    def key(self, notification_id: str) -> str:
        return f"{self._prefix}:notification:{notification_id}"

    def save(self, notification: Notification) -> None:
        try:
            self._redis.set(
                self.key(notification.id),
                notification.model_dump_json(),
                ex=NOTIFICATION_TTL_SECONDS,
            )
        except redis.RedisError as exc:
            raise StateUnavailable(f"cannot record notification: {type(exc).__name__}") from None

    def get(self, notification_id: str) -> Notification | None:
        try:
            raw = self._redis.get(self.key(notification_id))
        except redis.RedisError as exc:
            raise StateUnavailable(f"cannot read notification: {type(exc).__name__}") from None
        if raw is None:
            return None
        return Notification.model_validate_json(raw)

"""The only code that touches Redis for the inventory: first sightings, sign-offs, reviews,
last use per profile and scope, and review reminders."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import redis
from redis.typing import EncodableT, FieldT

from jitbroker.errors import StateUnavailable
from jitbroker.inventory.schemas import ReviewRecord, SignOff


class InventoryRepository:
    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._redis = client
        self._prefix = prefix

    def _key(self, workload_id: str, what: str) -> str:
        return f"{self._prefix}:workload:{workload_id}:{what}"

    def first_seen(self, workload_id: str, now: datetime) -> datetime:
        """When the broker first saw the workload; `now` is recorded if it never had."""
        key = self._key(workload_id, "first-seen")
        try:
            self._redis.set(key, now.isoformat(), nx=True)
            raw = self._redis.get(key)
        except redis.RedisError as exc:
            raise StateUnavailable(f"cannot read the review clock: {type(exc).__name__}") from None
        return now if raw is None else datetime.fromisoformat(_text(raw))

    def sign_off_key(self, workload_id: str) -> str:
        """Where the workload's sign-off lives, for a read batched with other state."""
        return self._key(workload_id, "sign-off")

    def sign_off(self, workload_id: str) -> SignOff | None:
        return parse_sign_off(self._get(self.sign_off_key(workload_id)))

    def save_sign_off(self, sign_off: SignOff) -> None:
        self._set(self._key(sign_off.workload, "sign-off"), sign_off.model_dump_json())

    def last_review(self, workload_id: str) -> ReviewRecord | None:
        raw = self._get(self._key(workload_id, "review"))
        return None if raw is None else ReviewRecord.model_validate_json(raw)

    def save_review(self, review: ReviewRecord) -> None:
        """Record the latest review (the audit log keeps every one)."""
        self._set(self._key(review.workload, "review"), review.model_dump_json())

    def record_use(
        self,
        workload_id: str,
        profile: str,
        scopes: Iterable[str],
        at: datetime,
        *,
        pipe: redis.client.Pipeline | None = None,
    ) -> None:
        """Remember when each `profile/scope` was last issued to the workload (on `pipe`, if
        given: one command, whose error the caller finds in the pipeline's results)."""
        mapping: dict[FieldT, EncodableT] = {
            f"{profile}/{scope}": at.isoformat() for scope in scopes
        }
        if pipe is not None:
            pipe.hset(self._key(workload_id, "last-used"), mapping=mapping)
            return
        try:
            self._redis.hset(self._key(workload_id, "last-used"), mapping=mapping)
        except redis.RedisError as exc:
            raise StateUnavailable(f"cannot record last use: {type(exc).__name__}") from None

    def last_used(self, workload_id: str) -> dict[str, datetime]:
        """`profile/scope` → when it was last issued to the workload."""
        try:
            raw = self._redis.hgetall(self._key(workload_id, "last-used"))
        except redis.RedisError as exc:
            raise StateUnavailable(f"cannot read last use: {type(exc).__name__}") from None
        return {_text(k): datetime.fromisoformat(_text(v)) for k, v in raw.items()}

    def claim_reminder(self, workload_id: str, due_at: datetime, ttl_seconds: int) -> bool:
        """True once per due date: whether this caller should send the review reminder."""
        key = self._key(workload_id, f"reminded:{int(due_at.timestamp())}")
        try:
            return bool(self._redis.set(key, "1", nx=True, ex=max(ttl_seconds, 1)))
        except redis.RedisError as exc:
            raise StateUnavailable(f"cannot record a reminder: {type(exc).__name__}") from None

    def _get(self, key: str) -> str | None:
        try:
            raw = self._redis.get(key)
        except redis.RedisError as exc:
            raise StateUnavailable(f"cannot read the inventory: {type(exc).__name__}") from None
        return None if raw is None else _text(raw)

    def _set(self, key: str, value: str) -> None:
        try:
            self._redis.set(key, value)
        except redis.RedisError as exc:
            raise StateUnavailable(f"cannot write the inventory: {type(exc).__name__}") from None


def parse_sign_off(raw: bytes | str | None) -> SignOff | None:
    """The sign-off stored at `sign_off_key` (None: never signed off)."""
    return None if raw is None else SignOff.model_validate_json(raw)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

"""The only code that touches Redis for revocation receipts (kept after the grant is gone)."""

from __future__ import annotations

import redis

from jitbroker.errors import StateUnavailable
from jitbroker.revocation.receipts import RevocationReceipt


class ReceiptRepository:
    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._redis = client
        self._prefix = prefix

    def _key(self, grant_id: str) -> str:
        return f"{self._prefix}:receipt:{grant_id}"

    def save(self, receipt: RevocationReceipt) -> None:
        try:
            self._redis.set(self._key(receipt.grant_id), receipt.model_dump_json())
        except redis.RedisError as exc:
            raise StateUnavailable(f"cannot store receipt: {type(exc).__name__}") from None

    def get(self, grant_id: str) -> RevocationReceipt | None:
        try:
            raw = self._redis.get(self._key(grant_id))
        except redis.RedisError as exc:
            raise StateUnavailable(f"cannot read receipt: {type(exc).__name__}") from None
        return RevocationReceipt.model_validate_json(raw) if raw else None

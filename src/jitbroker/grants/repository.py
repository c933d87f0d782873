"""The only code that touches Redis for grants and their idempotency keys."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import redis

from jitbroker.errors import StateUnavailable
from jitbroker.grants.schemas import GrantRecord
from jitbroker.records import VersionedStore
from jitbroker.revocation.ledger import ExpiryLedger
from jitbroker.tasks.repository import TaskRepository

# Claim an idempotency key for one request; return what is already there if someone has.
CLAIM_KEY = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.call('HMGET', KEYS[1], 'fingerprint', 'grant_id')
end
redis.call('HSET', KEYS[1], 'fingerprint', ARGV[1], 'grant_id', '')
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
return false
"""


@dataclass(frozen=True)
class IdempotencyClaim:
    """Who holds an idempotency key: the request's fingerprint and, once recorded, its grant."""

    fingerprint: str
    grant_id: str | None


class GrantRepository:
    def __init__(
        self, client: redis.Redis, prefix: str, *, tasks: TaskRepository, ledger: ExpiryLedger
    ) -> None:
        self._redis = client
        self._prefix = prefix
        self._tasks = tasks
        self._ledger = ledger
        self._store = VersionedStore(
            client, GrantRecord, key_pattern=f"{prefix}:grant:{{id}}", id_field="grant_id"
        )
        self._claim_key = client.register_script(CLAIM_KEY)

    def get(self, grant_id: str) -> GrantRecord | None:
        return self._store.get(grant_id)

    def replace(self, grant: GrantRecord) -> bool:
        return self._store.replace(grant)

    def create(
        self,
        grant: GrantRecord,
        *,
        expires_at: float | None = None,
        idempotency: tuple[str, str, int] | None = None,
    ) -> None:
        """Write a new grant, link it to its task, put it on the expiry ledger, settle its key."""
        try:
            pipe = self._redis.pipeline(transaction=True)
            pipe.hset(self._store.key(grant.grant_id), mapping=self._store.fields(grant))
            pipe.sadd(self._tasks.grants_key(grant.task_id), grant.grant_id)
            if expires_at is not None:
                self._ledger.schedule(grant.grant_id, expires_at, pipe=pipe)
            if idempotency is not None:
                workload, key, ttl = idempotency
                pipe.hset(self._idempotency_key(workload, key), "grant_id", grant.grant_id)
                pipe.expire(self._idempotency_key(workload, key), ttl)
            pipe.execute()
        except redis.RedisError as exc:
            raise StateUnavailable(f"cannot record grant: {type(exc).__name__}") from None

    def claim_idempotency_key(
        self, workload: str, key: str, fingerprint: str, *, ttl_seconds: int
    ) -> IdempotencyClaim | None:
        """None when this request now owns `key`; otherwise the claim already holding it."""
        try:
            held = self._claim_key(
                keys=[self._idempotency_key(workload, key)], args=[fingerprint, ttl_seconds]
            )
        except redis.RedisError as exc:
            raise StateUnavailable(f"cannot check idempotency key: {type(exc).__name__}") from None
        if not held:
            return None
        stored_fingerprint, grant_id = (_text(v) for v in held)
        return IdempotencyClaim(fingerprint=stored_fingerprint, grant_id=grant_id or None)

    def release_idempotency_key(self, workload: str, key: str) -> None:
        try:
            self._redis.delete(self._idempotency_key(workload, key))
        except redis.RedisError:
            pass  # the key expires on its own; a stuck claim only delays a retry

    def _idempotency_key(self, workload: str, key: str) -> str:
        digest = hashlib.sha256(key.encode()).hexdigest()
        return f"{self._prefix}:idem:{workload}:{digest}"


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value

"""The expiry ledger: a Redis sorted set of grant id -> when it must be revoked."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import TypeVar

import redis

from jitbroker.errors import StateUnavailable

# Take due entries and push them `redelivery` seconds into the future in one step: two sweepers
# never claim the same entry, and an entry whose revocation is lost comes due again.
CLAIM_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  redis.call('ZADD', KEYS[1], ARGV[3], member)
end
return due
"""


T = TypeVar("T")


class ExpiryLedger:
    """When every live grant must die; an entry leaves only once revocation is confirmed."""

    def __init__(self, client: redis.Redis, key: str) -> None:
        self._redis = client
        self.key = key
        self._claim = client.register_script(CLAIM_DUE)

    def schedule(
        self, grant_id: str, due: float, pipe: redis.client.Pipeline | None = None
    ) -> None:
        if pipe is not None:
            pipe.zadd(self.key, {grant_id: due})
            return
        self._call(lambda: self._redis.zadd(self.key, {grant_id: due}))

    def remove(self, grant_id: str) -> None:
        self._call(lambda: self._redis.zrem(self.key, grant_id))

    def due_at(self, grant_id: str) -> float | None:
        score = self._call(lambda: self._redis.zscore(self.key, grant_id))
        return float(score) if score is not None else None

    def claim_due(self, now: float, *, limit: int, redelivery_seconds: float) -> list[str]:
        """Grant ids due at `now`, each pushed back by `redelivery_seconds` until removed."""
        members: list[bytes | str] = self._call(
            lambda: self._claim(keys=[self.key], args=[now, limit, now + redelivery_seconds])
        )
        return [m.decode() if isinstance(m, bytes) else str(m) for m in members]

    def members(self, *, chunk: int = 500) -> Iterator[str]:
        """Every grant id on the ledger (that is, every live grant), each once, read in chunks."""
        # ZSCAN rather than ZRANGE by index or score: entries leave (revoked) and move (claimed)
        # while we read, which shifts ranks and scores, but an entry on the ledger for the whole
        # scan is always returned.
        seen: set[str] = set()
        cursor: int = 0
        while True:
            cursor, batch = self._call(
                functools.partial(self._redis.zscan, self.key, cursor, count=chunk)
            )
            for member, _ in batch:
                grant_id = member.decode() if isinstance(member, bytes) else str(member)
                if grant_id not in seen:
                    seen.add(grant_id)
                    yield grant_id
            if cursor == 0:
                return

    def size(self) -> int:
        return int(self._call(lambda: self._redis.zcard(self.key)))

    @staticmethod
    def _call(fn: Callable[[], T]) -> T:
        try:
            return fn()
        except redis.RedisError as exc:
            raise StateUnavailable(f"expiry ledger unavailable: {type(exc).__name__}") from None

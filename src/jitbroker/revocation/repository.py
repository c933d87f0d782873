"""The only code that touches Redis for revocation receipts and the revocation backlog."""

from __future__ import annotations

from typing import cast

import redis

from jitbroker.errors import StateUnavailable
from jitbroker.revocation.receipts import RevocationReceipt

# A Lua function for scripts on the issuing path: failing revocations, and revocations in
# progress since before `since`, over KEYS[first..] in pairs per profile: failing, revoking.
COUNT_BACKLOG_FUNCTION = """
local function count_backlog(first, since)
  local failing, stuck = 0, 0
  for i = first, #KEYS, 2 do
    failing = failing + redis.call('ZCARD', KEYS[i])
    stuck = stuck + redis.call('ZCOUNT', KEYS[i + 1], '-inf', '(' .. since)
  end
  return failing, stuck
end
"""

# One consistent read of the backlog: every KEYS pair, in progress since before ARGV[1].
COUNT_BACKLOG = (
    COUNT_BACKLOG_FUNCTION
    + """
local failing, stuck = count_backlog(1, ARGV[1])
return {failing, stuck}
"""
)


class ReceiptRepository:
    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._redis = client
        self._prefix = prefix

    def _key(self, grant_id: str) -> str:
        return f"{self._prefix}:receipt:{grant_id}"

    def save(self, receipt: RevocationReceipt) -> RevocationReceipt:
        """Store the grant's one receipt; if one is stored already, that one stands (returned)."""
        try:
            if self._redis.set(self._key(receipt.grant_id), receipt.model_dump_json(), nx=True):
                return receipt
            raw = self._redis.get(self._key(receipt.grant_id))
        except redis.RedisError as exc:
            raise StateUnavailable(f"cannot store receipt: {type(exc).__name__}") from None
        return RevocationReceipt.model_validate_json(raw) if raw else receipt

    def get(self, grant_id: str) -> RevocationReceipt | None:
        try:
            raw = self._redis.get(self._key(grant_id))
        except redis.RedisError as exc:
            raise StateUnavailable(f"cannot read receipt: {type(exc).__name__}") from None
        return RevocationReceipt.model_validate_json(raw) if raw else None


class RevocationBacklogRepository:
    """Per profile, revocations in progress (since when) and failing ones (since their first
    failure), and the grants whose incident was raised. GrantRepository drops a grant from all
    three in the same step that takes it out of `revoking`."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._redis = client
        self._prefix = prefix
        self.incidents_key = f"{prefix}:revocations:incidents"
        self._count = client.register_script(COUNT_BACKLOG)

    def revoking_key(self, profile: str) -> str:
        return f"{self._prefix}:revocations:revoking:{profile}"

    def failing_key(self, profile: str) -> str:
        return f"{self._prefix}:revocations:failing:{profile}"

    def record_failure(self, profile: str, grant_id: str, at: float) -> float:
        """Note a failed attempt at `at`; returns when the grant's revocation first failed."""
        try:
            pipe = self._redis.pipeline(transaction=True)
            pipe.zadd(self.failing_key(profile), {grant_id: at}, nx=True)
            pipe.zscore(self.failing_key(profile), grant_id)
            _, first = pipe.execute()
        except redis.RedisError as exc:
            raise StateUnavailable(
                f"cannot record revocation failure: {type(exc).__name__}"
            ) from None
        return float(first)

    def forget(self, profile: str, grant_id: str) -> None:
        """Drop a grant whose revocation completed from the failing list and the incidents."""
        try:
            pipe = self._redis.pipeline(transaction=True)
            pipe.zrem(self.failing_key(profile), grant_id)
            pipe.hdel(self.incidents_key, grant_id)
            pipe.execute()
        except redis.RedisError as exc:
            raise StateUnavailable(f"cannot update failing list: {type(exc).__name__}") from None

    def open_incident(self, grant_id: str, at: float) -> bool:
        """Mark the grant's incident as raised; True only for the first caller."""
        try:
            return bool(self._redis.hsetnx(self.incidents_key, grant_id, repr(at)))
        except redis.RedisError as exc:
            raise StateUnavailable(f"cannot record incident: {type(exc).__name__}") from None

    def failing(self, profile: str) -> list[tuple[str, float]]:
        """The profile's failing revocations and when each first failed, oldest first."""
        try:
            entries = cast(
                "list[tuple[bytes | str, float]]",
                self._redis.zrange(self.failing_key(profile), 0, -1, withscores=True),
            )
        except redis.RedisError as exc:
            raise StateUnavailable(f"cannot read failing list: {type(exc).__name__}") from None
        return [(_text(member), float(score)) for member, score in entries]

    def incidents(self, grant_ids: list[str]) -> dict[str, float]:
        """When the incident of each of `grant_ids` was raised (absent: not raised)."""
        if not grant_ids:
            return {}
        try:
            raised = self._redis.hmget(self.incidents_key, grant_ids)
        except redis.RedisError as exc:
            raise StateUnavailable(f"cannot read incidents: {type(exc).__name__}") from None
        return {g: float(at) for g, at in zip(grant_ids, raised, strict=True) if at is not None}

    def failing_counts(self, profiles: list[str]) -> dict[str, int]:
        """How many revocations are failing, for each of `profiles`."""
        try:
            pipe = self._redis.pipeline(transaction=False)
            for profile in profiles:
                pipe.zcard(self.failing_key(profile))
            sizes = pipe.execute()
        except redis.RedisError as exc:
            raise StateUnavailable(f"cannot read failing list: {type(exc).__name__}") from None
        return {profile: int(size) for profile, size in zip(profiles, sizes, strict=True)}

    def counts(self, profiles: list[str], *, revoking_since: float) -> tuple[int, int]:
        """Over `profiles`: failing revocations, and revocations in progress since before
        `revoking_since`."""
        keys = [key for p in profiles for key in (self.failing_key(p), self.revoking_key(p))]
        try:
            failing, stuck = self._count(keys=keys, args=[repr(revoking_since)])
        except redis.RedisError as exc:
            raise StateUnavailable(
                f"cannot read revocation backlog: {type(exc).__name__}"
            ) from None
        return int(failing), int(stuck)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

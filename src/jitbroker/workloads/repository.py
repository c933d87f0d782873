"""The only code that touches Redis for workloads: their suspensions."""

from __future__ import annotations

import redis

from jitbroker.errors import StateUnavailable
from jitbroker.workloads.schemas import Suspension, SuspensionCause

# A suspension of another cause (say, a manual one recorded meanwhile) must survive.
RESUME_IF_CAUSE = """
local raw = redis.call('GET', KEYS[1])
if raw and cjson.decode(raw)['cause'] == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class WorkloadRepository:
    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._redis = client
        self._prefix = prefix
        self._resume_if = client.register_script(RESUME_IF_CAUSE)

    def _suspension_key(self, workload_id: str) -> str:
        return f"{self._prefix}:workload:{workload_id}:suspension"

    def suspension_key(self, workload_id: str) -> str:
        """Where the suspension lives, for a read batched with other state."""
        return self._suspension_key(workload_id)

    def suspension(self, workload_id: str) -> Suspension | None:
        """The workload's suspension, or None while it is active."""
        try:
            raw = self._redis.get(self._suspension_key(workload_id))
        except redis.RedisError as exc:
            raise StateUnavailable(f"cannot read workload state: {type(exc).__name__}") from None
        return parse_suspension(raw)

    def suspend(self, suspension: Suspension, *, only_if_active: bool = False) -> bool:
        """Record (or replace) the workload's suspension; with `only_if_active`, never replace
        one (False when the workload was already suspended)."""
        try:
            return bool(
                self._redis.set(
                    self._suspension_key(suspension.workload),
                    suspension.model_dump_json(),
                    nx=only_if_active,
                )
            )
        except redis.RedisError as exc:
            raise StateUnavailable(f"cannot suspend workload: {type(exc).__name__}") from None

    def resume_if(self, workload_id: str, cause: SuspensionCause) -> bool:
        """Drop the suspension only while it is one of this cause (compare-and-delete)."""
        try:
            return bool(
                self._resume_if(keys=[self._suspension_key(workload_id)], args=[cause.value])
            )
        except redis.RedisError as exc:
            raise StateUnavailable(f"cannot resume workload: {type(exc).__name__}") from None

    def resume(self, workload_id: str) -> bool:
        """Drop the workload's suspension; False when it was not suspended."""
        try:
            return bool(self._redis.delete(self._suspension_key(workload_id)))
        except redis.RedisError as exc:
            raise StateUnavailable(f"cannot resume workload: {type(exc).__name__}") from None


def parse_suspension(raw: bytes | str | None) -> Suspension | None:
    """The suspension stored at `suspension_key` (None: the workload is active)."""
    return None if raw is None else Suspension.model_validate_json(raw)

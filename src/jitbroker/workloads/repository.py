"""The only code that touches Redis for workloads: their suspensions."""

from __future__ import annotations

import redis

from jitbroker.errors import StateUnavailable
from jitbroker.workloads.schemas import Suspension


class WorkloadRepository:
    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._redis = client
        self._prefix = prefix

    def _suspension_key(self, workload_id: str) -> str:
        return f"{self._prefix}:workload:{workload_id}:suspension"

    def suspension(self, workload_id: str) -> Suspension | None:
        """The workload's suspension, or None while it is active."""
        try:
            raw = self._redis.get(self._suspension_key(workload_id))
        except redis.RedisError as exc:
            raise StateUnavailable(f"cannot read workload state: {type(exc).__name__}") from None
        return None if raw is None else Suspension.model_validate_json(raw)

    def suspend(self, suspension: Suspension) -> None:
        """Record (or replace) the workload's suspension."""
        try:
            self._redis.set(self._suspension_key(suspension.workload), suspension.model_dump_json())
        except redis.RedisError as exc:
            raise StateUnavailable(f"cannot suspend workload: {type(exc).__name__}") from None

    def resume(self, workload_id: str) -> bool:
        """Drop the workload's suspension; False when it was not suspended."""
        try:
            return bool(self._redis.delete(self._suspension_key(workload_id)))
        except redis.RedisError as exc:
            raise StateUnavailable(f"cannot resume workload: {type(exc).__name__}") from None

"""The only code that touches Redis for tasks."""

from __future__ import annotations

import redis

from jitbroker.errors import StateUnavailable
from jitbroker.records import VersionedStore
from jitbroker.tasks.schemas import TaskRecord


class TaskRepository:
    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._redis = client
        self._prefix = prefix
        self._store = VersionedStore(
            client, TaskRecord, key_pattern=f"{prefix}:task:{{id}}", id_field="task_id"
        )

    def grants_key(self, task_id: str) -> str:
        return f"{self._prefix}:task:{task_id}:grants"

    def create(self, task: TaskRecord) -> None:
        try:
            self._redis.hset(self._store.key(task.task_id), mapping=self._store.fields(task))
        except redis.RedisError as exc:
            raise StateUnavailable(f"cannot record task: {type(exc).__name__}") from None

    def get(self, task_id: str) -> TaskRecord | None:
        return self._store.get(task_id)

    def key(self, task_id: str) -> str:
        """The task's hash (fields `doc`, `state`, `version`), for reads batched with others."""
        return self._store.key(task_id)

    def state_key(self, task_id: str) -> tuple[str, str]:
        """The hash key and field holding the task's state, for a transaction that checks it."""
        return self._store.key(task_id), "state"

    def replace(self, task: TaskRecord) -> bool:
        return self._store.replace(task)

    def grant_ids(self, task_id: str) -> list[str]:
        try:
            members = self._redis.smembers(self.grants_key(task_id))
        except redis.RedisError as exc:
            raise StateUnavailable(f"cannot read task grants: {type(exc).__name__}") from None
        return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)


def parse_task(doc: bytes | str | None, version: bytes | str | None) -> TaskRecord | None:
    """The task from its hash's `doc` and `version` fields (None when it does not exist)."""
    if doc is None or version is None:
        return None
    task = TaskRecord.model_validate_json(doc)
    task.version = int(version)
    return task

"""Versioned records in Redis hashes: a JSON document, `state` and `version` for compare-and-set."""

from __future__ import annotations

from typing import Generic, TypeVar

import redis
from pydantic import BaseModel
from redis.typing import EncodableT, FieldT

from jitbroker.errors import StateUnavailable

# Replace the document only if nobody changed it since we read it.
COMPARE_AND_SET = """
local version = redis.call('HGET', KEYS[1], 'version')
if version == false then return -1 end
if tonumber(version) ~= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'doc', ARGV[2], 'state', ARGV[3], 'version', tonumber(version) + 1)
return 1
"""


class VersionedModel(BaseModel):
    state: str
    version: int = 0


M = TypeVar("M", bound=VersionedModel)


class VersionedStore(Generic[M]):
    """Load and compare-and-set one kind of versioned record."""

    def __init__(
        self, client: redis.Redis, model: type[M], *, key_pattern: str, id_field: str
    ) -> None:
        self._redis = client
        self._model = model
        self._key_pattern = key_pattern
        self._id_field = id_field
        self._cas = client.register_script(COMPARE_AND_SET)

    def key(self, record_id: str) -> str:
        return self._key_pattern.format(id=record_id)

    def fields(self, record: M) -> dict[FieldT, EncodableT]:
        """The hash fields of a new record, for a pipeline that creates it."""
        return {
            "doc": record.model_dump_json(exclude={"version"}),
            "state": record.state,
            "version": record.version,
        }

    def get(self, record_id: str) -> M | None:
        try:
            raw = self._redis.hmget(self.key(record_id), ["doc", "version"])
        except redis.RedisError as exc:
            raise StateUnavailable(f"cannot read state: {type(exc).__name__}") from None
        doc, version = raw
        if doc is None or version is None:
            return None
        record = self._model.model_validate_json(doc)
        record.version = int(version)
        return record

    def replace(self, record: M) -> bool:
        """Write `record` if its version is still current; on success bump its version."""
        try:
            result = self._cas(
                keys=[self.key(str(getattr(record, self._id_field)))],
                args=[record.version, record.model_dump_json(exclude={"version"}), record.state],
            )
        except redis.RedisError as exc:
            raise StateUnavailable(f"cannot write state: {type(exc).__name__}") from None
        if result == 1:
            record.version += 1
            return True
        return False

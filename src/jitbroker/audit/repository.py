"""The only code that touches Redis for the audit trail: the chained stream, its head, the
per-task index and the signed checkpoints. Nothing here ever trims the stream."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import redis

from jitbroker.audit.chain import GENESIS_HASH, ChainEntry, parse_entry
from jitbroker.errors import StateUnavailable

# Append only if nobody appended since the caller read the head: seq and prev_hash are assigned
# from that head, so concurrent writers (API replicas, workers) retry instead of forking the chain.
# KEYS: stream, head, [task index]; ARGV: expected head, record JSON, new head.
APPEND_IF_HEAD = """
local head = redis.call('GET', KEYS[2]) or ''
if head ~= ARGV[1] then
  return {0, head}
end
local id = redis.call('XADD', KEYS[1], '*', 'event', ARGV[2])
redis.call('SET', KEYS[2], ARGV[3])
if #KEYS > 2 then
  redis.call('RPUSH', KEYS[3], id)
end
return {1, id}
"""
RECORD_FIELD = b"event"
CHECKPOINT_FIELD = b"checkpoint"
PAGE_SIZE = 1000


@dataclass(frozen=True)
class ChainHead:
    """The last record of the chain: its seq and hash (seq 0 and the genesis hash when empty)."""

    seq: int
    hash: str

    @classmethod
    def parse(cls, stored: str) -> ChainHead:
        if not stored:
            return cls(0, GENESIS_HASH)
        seq, _, chain_hash = stored.partition(":")
        return cls(int(seq), chain_hash)

    def stored(self) -> str:
        return f"{self.seq}:{self.hash}" if self.seq else ""


class AuditStream:
    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._redis = client
        self.stream_key = f"{prefix}:audit"
        self.head_key = f"{prefix}:audit:head"
        self.checkpoints_key = f"{prefix}:audit:checkpoints"
        self._prefix = prefix
        self._append = client.register_script(APPEND_IF_HEAD)

    def task_index_key(self, task_id: str) -> str:
        return f"{self._prefix}:audit:task:{task_id}"

    def head(self) -> ChainHead:
        """Where the chain ends now. Raises redis.RedisError (the writer handles it)."""
        return ChainHead.parse(_text(self._redis.get(self.head_key)))

    def append_if_head(
        self, expected: ChainHead, record_json: str, new_head: ChainHead, *, task_id: str | None
    ) -> tuple[str | None, ChainHead]:
        """(stream id, new head) if the head was still `expected`, else (None, head found)."""
        keys = [self.stream_key, self.head_key]
        if task_id:
            keys.append(self.task_index_key(task_id))
        added, value = self._append(
            keys=keys, args=[expected.stored(), record_json, new_head.stored()]
        )
        if int(added):
            return _text(value), new_head
        return None, ChainHead.parse(_text(value))

    def add_checkpoint(self, checkpoint_json: str) -> str:
        """Store a signed checkpoint. Raises redis.RedisError (the writer handles it)."""
        return _text(self._redis.xadd(self.checkpoints_key, {"checkpoint": checkpoint_json}))

    def records_after(self, cursor: str | None, count: int) -> list[ChainEntry]:
        """Up to `count` records after stream id `cursor` (from the start when None)."""
        start = f"({cursor}" if cursor else "-"
        try:
            entries = self._redis.xrange(self.stream_key, min=start, count=count)
        except (redis.RedisError, ValueError) as exc:
            raise StateUnavailable(f"cannot read the audit stream: {type(exc).__name__}") from None
        return [_entry(entry_id, fields, RECORD_FIELD) for entry_id, fields in entries or []]

    def all_records(self) -> Iterator[ChainEntry]:
        """Every record, oldest first, read in pages."""
        cursor: str | None = None
        while page := self.records_after(cursor, PAGE_SIZE):
            yield from page
            cursor = page[-1].position

    def task_records(self, task_id: str) -> list[ChainEntry]:
        """The records about one task, oldest first (through the per-task index)."""
        try:
            ids = [_text(i) for i in self._redis.lrange(self.task_index_key(task_id), 0, -1)]
            pipe = self._redis.pipeline(transaction=False)
            for entry_id in ids:
                pipe.xrange(self.stream_key, min=entry_id, max=entry_id)
            found = pipe.execute()
        except redis.RedisError as exc:
            raise StateUnavailable(f"cannot read the audit stream: {type(exc).__name__}") from None
        return [_entry(i, e[0][1], RECORD_FIELD) for i, e in zip(ids, found, strict=True) if e]

    def checkpoints(self) -> list[ChainEntry]:
        """Every signed checkpoint, oldest first."""
        try:
            entries = self._redis.xrange(self.checkpoints_key)
        except redis.RedisError as exc:
            raise StateUnavailable(f"cannot read audit checkpoints: {type(exc).__name__}") from None
        return [_entry(entry_id, fields, CHECKPOINT_FIELD) for entry_id, fields in entries or []]

    def current_head(self) -> ChainHead:
        """The head for readers: StateUnavailable when Redis cannot be read."""
        try:
            return self.head()
        except (redis.RedisError, ValueError) as exc:
            raise StateUnavailable(f"cannot read the audit head: {type(exc).__name__}") from None


def _entry(entry_id: Any, fields: dict[Any, Any] | None, name: bytes) -> ChainEntry:
    raw = fields.get(name, fields.get(name.decode())) if fields else None
    return parse_entry(_text(entry_id), cast("str | bytes | None", raw))


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)

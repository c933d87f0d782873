"""Append audit events to a Redis stream and, as one JSON line each, to stdout."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import redis

from jitbroker.audit.events import AuditEvent

log = logging.getLogger(__name__)


class AuditLog:
    """Appends events; a failing sink is logged loudly but never turns a decision into a 500."""

    def __init__(
        self, client: redis.Redis, stream_key: str, *, stdout: TextIO | None = sys.stdout
    ) -> None:
        self._redis = client
        self.stream_key = stream_key
        self._stdout = stdout

    def record(self, event: AuditEvent) -> None:
        line = event.model_dump_json(exclude_none=True)
        if self._stdout is not None:
            self._stdout.write(line + "\n")
            self._stdout.flush()
        try:
            self._redis.xadd(self.stream_key, {"event": line})
        except redis.RedisError as exc:
            log.error("audit event %s not written to Redis: %s", event.id, exc)

    def read_all(self) -> list[AuditEvent]:
        """Every event in the stream, oldest first (for tests and small exports)."""
        entries = self._redis.xrange(self.stream_key) or []
        return [AuditEvent.model_validate_json(fields[b"event"]) for _, fields in entries if fields]

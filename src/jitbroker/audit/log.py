"""Append audit events to the hash chain in Redis, to an append-only JSON-lines file and, as
one JSON line each, to stdout; sign a checkpoint every N records."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import redis

from jitbroker import metrics
from jitbroker.audit.chain import chained, signed_checkpoint
from jitbroker.audit.events import AuditEvent
from jitbroker.audit.repository import AuditStream, ChainHead
from jitbroker.config import Settings
from jitbroker.signing import BrokerSigningKey

log = logging.getLogger(__name__)
MAX_APPEND_ATTEMPTS = 100
REDACTED = "[redacted]"
# Whole bearer tokens never belong in the trail, whichever field they slipped into: compact
# JWS/JWE (base64url of '{"' starts with eyJ) and OpenBao/Vault tokens (s., hvs., hvb., hvr.).
TOKEN_PATTERN = re.compile(
    r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_.-]*|\b(?:hv[sbr]|s)\.[A-Za-z0-9]{24,}"
)


def utc_now() -> datetime:
    return datetime.now(UTC)


class AuditLog:
    """Chains every event; a failing sink is logged loudly but never turns a decision into a 500.

    Writers sharing `file` serialise on an flock around the Redis append and the file write, so
    the file holds the records in chain order; writers on other hosts retry the conditional
    append instead of forking the chain."""

    def __init__(
        self,
        stream: AuditStream,
        *,
        file: Path | None = None,
        stdout: TextIO | None = sys.stdout,
        signing_key: BrokerSigningKey | None = None,
        checkpoint_every: int = 100,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.stream = stream
        self.stream_key = stream.stream_key
        self.file = file
        self._stdout = stdout
        self._signing_key = signing_key
        self._checkpoint_every = checkpoint_every
        self._clock = clock
        self._head_hint: ChainHead | None = None

    def record(self, event: AuditEvent) -> dict[str, Any] | None:
        """Append `event` to the chain and the sinks; the chained record, None if Redis failed."""
        document = redact_tokens(
            event.model_dump(mode="json", exclude_none=True, exclude={"seq", "prev_hash", "hash"})
        )
        with self._file_lock() as fd:
            record, serialised = self._append(document, task_id=event.task_id)
            # The line is the chained record exactly as stored in Redis (serialised once).
            line = (serialised if record is not None else _json(document)) + "\n"
            if fd is not None:
                self._write_line(fd, line)
            if record is not None and record["seq"] % self._checkpoint_every == 0:
                self._checkpoint(fd, ChainHead(record["seq"], record["hash"]))
        if self._stdout is not None:
            try:
                self._stdout.write(line)
                self._stdout.flush()
            except (OSError, ValueError) as exc:
                log.error("audit event %s not written to stdout: %s", event.id, exc)
        return record

    def checkpoint(self) -> dict[str, Any] | None:
        """Sign the current head now; the checkpoint, or None when the chain is still empty."""
        if self._signing_key is None:
            raise ValueError("no signing key: checkpoints cannot be signed")
        with self._file_lock() as fd:
            head = self.stream.head()
            return self._checkpoint(fd, head, raise_errors=True) if head.seq else None

    def read_all(self) -> list[AuditEvent]:
        """Every event in the stream, oldest first (for tests and small exports)."""
        return [
            AuditEvent.model_validate(entry.document)
            for entry in self.stream.all_records()
            if entry.document is not None
        ]

    def _append(
        self, document: dict[str, Any], *, task_id: str | None
    ) -> tuple[dict[str, Any] | None, str]:
        """The chained record and its JSON as stored; (None, "") when Redis failed."""
        try:
            head = self._head_hint or self.stream.head()
            for _ in range(MAX_APPEND_ATTEMPTS):
                record = chained(document, seq=head.seq + 1, prev_hash=head.hash)
                new_head = ChainHead(record["seq"], record["hash"])
                serialised = _json(record)
                stream_id, head = self.stream.append_if_head(
                    head, serialised, new_head, task_id=task_id
                )
                if stream_id is not None:
                    self._head_hint = head
                    return record, serialised
            reason = f"the head moved {MAX_APPEND_ATTEMPTS} times in a row"
        except (redis.RedisError, ValueError) as exc:
            self._head_hint = None
            reason = f"{type(exc).__name__}: {exc}"
        metrics.AUDIT_SINK_FAILURES.labels("redis").inc()
        log.error(
            "audit event %s NOT chained in Redis (%s); it is outside the chain: %s",
            document.get("id"),
            reason,
            _json(document),
        )
        return None, ""

    def _checkpoint(
        self, fd: int | None, head: ChainHead, *, raise_errors: bool = False
    ) -> dict[str, Any] | None:
        if self._signing_key is None:
            return None
        checkpoint = signed_checkpoint(
            seq=head.seq, chain_hash=head.hash, time=self._clock(), key=self._signing_key
        )
        try:
            self.stream.add_checkpoint(_json(checkpoint))
        except redis.RedisError as exc:
            if raise_errors:
                raise
            metrics.AUDIT_SINK_FAILURES.labels("redis").inc()
            log.error("audit checkpoint at seq %s not stored in Redis: %s", head.seq, exc)
        if fd is not None:
            self._write_line(fd, _json_line(checkpoint))
        return checkpoint

    @contextmanager
    def _file_lock(self) -> Iterator[int | None]:
        """The audit file, opened for appending and locked; None when disabled or failing."""
        if self.file is None:
            yield None
            return
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            metrics.AUDIT_SINK_FAILURES.labels("file").inc()
            log.error("audit file %s cannot be opened: %s", self.file, exc)
            yield None
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)  # also releases the lock

    def _write_line(self, fd: int, line: str) -> None:
        try:
            os.write(fd, line.encode())  # one write(2) per line: O_APPEND keeps it whole
        except OSError as exc:
            metrics.AUDIT_SINK_FAILURES.labels("file").inc()
            log.error("audit line not written to %s: %s", self.file, exc)


def build_audit_log(
    settings: Settings, client: redis.Redis, *, signing_key: BrokerSigningKey | None
) -> AuditLog:
    """The audit log the settings describe."""
    return AuditLog(
        AuditStream(client, settings.key_prefix),
        file=settings.audit_file,
        stdout=sys.stdout if settings.audit_stdout else None,
        signing_key=signing_key,
        checkpoint_every=settings.audit_checkpoint_every,
    )


def redact_tokens(value: Any) -> Any:
    """`value` with every whole bearer token in its strings replaced by a marker."""
    if isinstance(value, str):
        return TOKEN_PATTERN.sub(REDACTED, value)
    if isinstance(value, dict):
        return {key: redact_tokens(item) for key, item in value.items()}
    if isinstance(value, list):
        return [redact_tokens(item) for item in value]
    return value


def _json(document: dict[str, Any]) -> str:
    return json.dumps(document, separators=(",", ":"))


def _json_line(document: dict[str, Any]) -> str:
    return _json(document) + "\n"

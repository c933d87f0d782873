"""Audit logs on fakeredis with a file sink and a signing key; API clients and caller tokens."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import fakeredis
import pytest

from jitbroker.audit.chain import ChainReport, split_file_lines, verify_chain
from jitbroker.audit.events import AuditEvent
from jitbroker.audit.log import AuditLog
from jitbroker.audit.repository import AuditStream
from jitbroker.signing import BrokerSigningKey

PREFIX = "jbunit"
CHECKPOINT_EVERY = 5


def event(number: int, *, task_id: str = "tsk_unit") -> AuditEvent:
    return AuditEvent(
        type="grant.decided",
        outcome="allow",
        workload="demo-pipeline",
        task_id=task_id,
        rule="read-only",
        details={"number": number},
    )


def redis_report(log: AuditLog, key: BrokerSigningKey) -> ChainReport:
    stream = log.stream
    checkpoints, head = stream.checkpoints(), stream.current_head()
    return verify_chain(
        list(stream.all_records()),
        checkpoints=checkpoints,
        keys=[key.public_jwk()],
        head=(head.seq, head.hash),
    )


def file_report(path: Path, key: BrokerSigningKey) -> ChainReport:
    records, checkpoints = split_file_lines(path.read_text().splitlines())
    return verify_chain(records, checkpoints=checkpoints, keys=[key.public_jwk()])


@pytest.fixture
def signing_key(tmp_path: Path) -> BrokerSigningKey:
    return BrokerSigningKey.load_or_create(tmp_path / "broker-signing-key.pem")


@pytest.fixture
def audit_redis() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


@pytest.fixture
def audit_path(tmp_path: Path) -> Path:
    return tmp_path / "audit" / "audit.jsonl"


@pytest.fixture
def make_audit_log(
    audit_redis: fakeredis.FakeRedis, audit_path: Path, signing_key: BrokerSigningKey
) -> Callable[[], AuditLog]:
    """A writer on the shared fakeredis and file (call twice for two processes' writers)."""

    def make() -> AuditLog:
        return AuditLog(
            AuditStream(audit_redis, PREFIX),
            file=audit_path,
            stdout=None,
            signing_key=signing_key,
            checkpoint_every=CHECKPOINT_EVERY,
        )

    return make


@pytest.fixture
def audit_log(make_audit_log: Callable[[], AuditLog]) -> AuditLog:
    return make_audit_log()


@pytest.fixture
def twelve_records(audit_log: AuditLog) -> AuditLog:
    """Twelve chained events: checkpoints at seq 5 and 10."""
    for number in range(1, 13):
        audit_log.record(event(number))
    return audit_log

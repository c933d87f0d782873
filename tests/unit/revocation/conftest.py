from __future__ import annotations

from pathlib import Path

import pytest
from tests.unit.fakes import FakeEngine, memory_broker, write_config

from jitbroker.audit.events import RequestContext
from jitbroker.bootstrap import Broker
from jitbroker.grants import service as grants
from jitbroker.grants.schemas import GrantRecord, GrantRequest
from jitbroker.identity.schemas import WorkloadIdentity
from jitbroker.revocation.queue import InMemoryRevocationQueue
from jitbroker.tasks import service as tasks

PIPELINE = WorkloadIdentity(workload_id="demo-pipeline", issuer="test-workloads", subject="p")


@pytest.fixture
def wired(tmp_path: Path) -> tuple[Broker, FakeEngine, InMemoryRevocationQueue]:
    return memory_broker(write_config(tmp_path))


@pytest.fixture
def broker(wired: tuple[Broker, FakeEngine, InMemoryRevocationQueue]) -> Broker:
    return wired[0]


@pytest.fixture
def engine(wired: tuple[Broker, FakeEngine, InMemoryRevocationQueue]) -> FakeEngine:
    return wired[1]


@pytest.fixture
def queue(wired: tuple[Broker, FakeEngine, InMemoryRevocationQueue]) -> InMemoryRevocationQueue:
    return wired[2]


@pytest.fixture
def issued_grant(broker: Broker) -> GrantRecord:
    task = tasks.open_task(
        broker, PIPELINE, purpose="unit", ttl_seconds=600, context=RequestContext()
    )
    outcome = grants.request_grant(
        broker,
        PIPELINE,
        task_id=task.task_id,
        request=GrantRequest(
            profile="demo-db", scopes=["read"], ttl_seconds=60, justification="unit"
        ),
        idempotency_key=None,
        context=RequestContext(),
    )
    return outcome.grant

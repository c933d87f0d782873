"""Grant issuance rules that need no OpenBao: recording, idempotency, the completion race."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from redis.client import Pipeline
from redis.connection import Connection
from tests.unit.fakes import PIPELINE, READ_REQUEST, FakeEngine

from jitbroker.audit.events import RequestContext
from jitbroker.bootstrap import Broker
from jitbroker.config import ProfileConfig, ScopeBinding
from jitbroker.engines.base import IssuedCredential
from jitbroker.errors import Conflict, PolicyDenied, StateUnavailable
from jitbroker.grants import service as grants
from jitbroker.grants.schemas import GrantState
from jitbroker.identity.schemas import WorkloadIdentity
from jitbroker.tasks import service as tasks


class CompletesTaskWhileIssuing(FakeEngine):
    """Completes the task between OpenBao issuing and the broker recording the grant."""

    def __init__(self, broker: Broker) -> None:
        super().__init__()
        self.broker = broker

    def issue(
        self,
        profile: ProfileConfig,
        binding: ScopeBinding,
        *,
        ttl_seconds: int,
        grant_id: str,
        labels: dict[str, str],
        public_key: str | None = None,
    ) -> IssuedCredential:
        credential = super().issue(
            profile, binding, ttl_seconds=ttl_seconds, grant_id=grant_id, labels=labels
        )
        tasks.complete_task(
            self.broker,
            workload=PIPELINE,
            task_id=labels["task_id"],
            wait=False,
            context=RequestContext(),
        )
        return credential


def test_grant_issued_while_its_task_completes_is_revoked_and_refused(
    broker: Broker, open_task_id: str
) -> None:
    racing = CompletesTaskWhileIssuing(broker)
    broker.engines["database"] = racing

    with pytest.raises(Conflict, match="completed while this grant was being issued"):
        grants.request_grant(
            broker,
            workload=PIPELINE,
            task_id=open_task_id,
            request=READ_REQUEST,
            idempotency_key=None,
            context=RequestContext(),
        )

    (grant_id,) = broker.tasks.grant_ids(open_task_id)
    stored = broker.grants.get(grant_id)
    assert stored is not None
    assert stored.state == GrantState.revoking


def test_issued_grant_records_lease_but_no_secret(broker: Broker, open_task_id: str) -> None:
    outcome = grants.request_grant(
        broker,
        workload=PIPELINE,
        task_id=open_task_id,
        request=READ_REQUEST,
        idempotency_key=None,
        context=RequestContext(),
    )

    assert outcome.credential is not None
    password = outcome.credential.reveal()["password"]
    stored = broker.redis.hget(f"jb:grant:{outcome.grant.grant_id}", "doc")
    assert stored is not None
    assert outcome.grant.lease_ref is not None
    assert outcome.grant.lease_ref.encode() in stored
    assert password.encode() not in stored
    assert password not in repr(outcome.credential)


def test_grant_ttl_is_clamped_to_what_is_left_of_the_task(broker: Broker) -> None:
    task = tasks.open_task(
        broker, workload=PIPELINE, purpose="short", ttl_seconds=30, context=RequestContext()
    )

    outcome = grants.request_grant(
        broker,
        workload=PIPELINE,
        task_id=task.task_id,
        request=READ_REQUEST,
        idempotency_key=None,
        context=RequestContext(),
    )

    assert outcome.grant.lease_ttl_seconds is not None
    assert outcome.grant.lease_ttl_seconds <= 30
    assert outcome.grant.expires_at is not None
    assert outcome.grant.expires_at <= task.expires_at


def test_denied_request_releases_its_idempotency_key(broker: Broker) -> None:
    denied = READ_REQUEST.model_copy(update={"profile": "demo-token"})
    other = WorkloadIdentity(workload_id="other-pipeline", issuer="test-workloads", subject="o")
    task = tasks.open_task(
        broker, workload=other, purpose="x", ttl_seconds=60, context=RequestContext()
    )

    for _ in range(2):
        with pytest.raises(PolicyDenied, match="no policy rule allows"):
            grants.request_grant(
                broker,
                workload=other,
                task_id=task.task_id,
                request=denied,
                idempotency_key="same",
                context=RequestContext(),
            )


def test_issuing_a_grant_takes_at_most_four_redis_round_trips(
    broker: Broker, open_task_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Reads batched into one script, the record (with the route, the inventory's last use and
    # the task's state) in one transaction: state (with the revocation backlog), decision audit,
    # record, issue audit.
    # A first grant loads the Lua scripts, which later requests do not pay for.
    grants.request_grant(
        broker,
        workload=PIPELINE,
        task_id=open_task_id,
        request=READ_REQUEST,
        idempotency_key=None,
        context=RequestContext(),
    )
    sent: list[bytes] = []
    send = Connection.send_packed_command

    def counting(self: Connection, command: Any, check_health: bool = True) -> None:
        sent.append(command)
        send(self, command, check_health)

    monkeypatch.setattr(Connection, "send_packed_command", counting)

    outcome = grants.request_grant(
        broker,
        workload=PIPELINE,
        task_id=open_task_id,
        request=READ_REQUEST,
        idempotency_key=None,
        context=RequestContext(),
    )

    assert outcome.credential is not None
    assert len(sent) <= 4, len(sent)


def test_issued_grant_records_its_last_use_with_the_grant(
    broker: Broker, open_task_id: str
) -> None:
    outcome = grants.request_grant(
        broker,
        workload=PIPELINE,
        task_id=open_task_id,
        request=READ_REQUEST,
        idempotency_key=None,
        context=RequestContext(),
    )

    used = broker.redis.hgetall("jb:workload:demo-pipeline:last-used")
    assert outcome.grant.issued_at is not None
    assert used == {b"demo-db/read": outcome.grant.issued_at.isoformat().encode()}


def test_issued_grant_opens_its_route_expiring_with_the_grant(
    broker: Broker, open_task_id: str
) -> None:
    outcome = grants.request_grant(
        broker,
        workload=PIPELINE,
        task_id=open_task_id,
        request=READ_REQUEST,
        idempotency_key=None,
        context=RequestContext(),
    )

    grant = outcome.grant
    assert grant.expires_at is not None
    route_key = f"jb:route:{grant.grant_id}"
    fingerprint = broker.redis.hget(route_key, "fingerprint")
    assert fingerprint is not None
    expires_ms = int(grant.expires_at.timestamp() * 1000)
    assert broker.redis.pexpiretime(route_key) == expires_ms
    assert broker.redis.pexpiretime(f"jb:route:fp:{fingerprint.decode()}") == expires_ms


def test_revocation_closes_the_route_opened_with_the_grant(
    broker: Broker, open_task_id: str
) -> None:
    outcome = grants.request_grant(
        broker,
        workload=PIPELINE,
        task_id=open_task_id,
        request=READ_REQUEST,
        idempotency_key=None,
        context=RequestContext(),
    )

    grants.revoke_own_grant(
        broker, workload=PIPELINE, grant_id=outcome.grant.grant_id, context=RequestContext()
    )

    assert broker.redis.keys("jb:route:*") == []


def test_recording_whose_answer_is_lost_revokes_the_lease_and_leaves_no_route_open(
    broker: Broker, engine: FakeEngine, open_task_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worst case: the transaction committed (grant and route written), its reply was lost.
    execute = Pipeline.execute

    def committed_then_lost(self: Pipeline, raise_on_error: bool = True) -> Any:
        if len(self) > 4:
            execute(self, raise_on_error)
            raise redis.ConnectionError("reply lost")
        return execute(self, raise_on_error)

    monkeypatch.setattr(Pipeline, "execute", committed_then_lost)

    with pytest.raises(StateUnavailable, match="could not be recorded, so it was revoked"):
        grants.request_grant(
            broker,
            workload=PIPELINE,
            task_id=open_task_id,
            request=READ_REQUEST,
            idempotency_key=None,
            context=RequestContext(),
        )

    assert engine.issued == 1
    assert engine.live == set()
    assert broker.redis.keys("jb:route:*") == []

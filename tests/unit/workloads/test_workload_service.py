"""The kill switch over fakeredis and a fake engine: suspend, revoke by selector, removal."""

from __future__ import annotations

import pytest
from tests.unit.fakes import PIPELINE, READ_REQUEST

from jitbroker.approvals import service as approvals
from jitbroker.audit.events import RequestContext
from jitbroker.bootstrap import Broker
from jitbroker.errors import Forbidden, WorkloadSuspended
from jitbroker.grants import service as grants
from jitbroker.grants.schemas import GrantRecord, GrantRequest, GrantState, RevokeReason
from jitbroker.identity.schemas import HumanIdentity, WorkloadIdentity
from jitbroker.notifications.queue import InMemoryNotificationQueue
from jitbroker.revocation.queue import InMemoryRevocationQueue
from jitbroker.tasks import service as tasks
from jitbroker.workloads import service as workloads
from jitbroker.workloads.repository import WorkloadRepository
from jitbroker.workloads.schemas import RevocationCounts, RevokeSelector, Suspension

ADMIN = HumanIdentity(subject="root-admin", issuer="test-humans", groups=("platform-admins",))
APPROVER = HumanIdentity(subject="alice", issuer="test-humans", groups=("dba",))
OTHER = WorkloadIdentity(
    workload_id="other-pipeline", issuer="test-workloads", subject="other-pipeline"
)
WRITE_REQUEST = READ_REQUEST.model_copy(update={"scopes": ["write"]})
TOKEN_REQUEST = GrantRequest(
    profile="demo-token", scopes=["read"], ttl_seconds=60, justification="unit"
)


def grant_for(broker: Broker, workload: WorkloadIdentity, request: GrantRequest) -> GrantRecord:
    task = tasks.open_task(
        broker, workload=workload, purpose="unit", ttl_seconds=600, context=RequestContext()
    )
    return grants.request_grant(
        broker,
        workload=workload,
        task_id=task.task_id,
        request=request,
        idempotency_key=None,
        context=RequestContext(),
    ).grant


def state_of(broker: Broker, grant: GrantRecord) -> GrantState:
    stored = broker.grants.get(grant.grant_id)
    assert stored is not None
    return stored.state


def record_suspension_only(broker: Broker, workload_id: str) -> None:
    """What a suspension racing with an issuance leaves behind: recorded, nothing revoked."""
    WorkloadRepository(broker.redis, broker.settings.key_prefix).suspend(
        Suspension(
            workload=workload_id,
            suspended_by="root-admin",
            suspended_at=broker.clock(),
            reason="racing",
        )
    )


def test_suspend_revokes_issued_grants_and_cancels_pending_ones(
    broker: Broker, queue: InMemoryRevocationQueue
) -> None:
    issued = grant_for(broker, PIPELINE, READ_REQUEST)
    pending = grant_for(broker, PIPELINE, WRITE_REQUEST)

    view = workloads.suspend_workload(
        broker,
        admin=ADMIN,
        workload_id="demo-pipeline",
        reason="runner compromised",
        context=RequestContext(),
    )

    assert view.revocations == RevocationCounts(matched=2, revocation_requested=1, cancelled=1)
    assert state_of(broker, issued) == GrantState.revoking
    assert state_of(broker, pending) == GrantState.cancelled
    assert queue.enqueued == [issued.grant_id]
    stored = broker.grants.get(issued.grant_id)
    assert stored is not None
    assert stored.revoke_reason == RevokeReason.workload_suspended


def test_suspend_leaves_other_workloads_grants_alone(broker: Broker) -> None:
    others = grant_for(broker, OTHER, READ_REQUEST)

    workloads.suspend_workload(
        broker, admin=ADMIN, workload_id="demo-pipeline", reason="x", context=RequestContext()
    )

    assert state_of(broker, others) == GrantState.issued


def test_suspend_is_audited_with_who_and_the_counts(broker: Broker) -> None:
    grant_for(broker, PIPELINE, READ_REQUEST)

    workloads.suspend_workload(
        broker, admin=ADMIN, workload_id="demo-pipeline", reason="leak", context=RequestContext()
    )

    (event,) = [e for e in broker.audit.read_all() if e.type == "workload.suspended"]
    assert event.workload == "demo-pipeline"
    assert event.reason == "leak"
    assert event.details["by"] == "root-admin"
    assert event.details["revocation_requested"] == 1


def test_suspend_by_a_human_outside_the_admin_groups_is_refused(broker: Broker) -> None:
    with pytest.raises(Forbidden, match="platform-admins"):
        workloads.suspend_workload(
            broker,
            admin=APPROVER,
            workload_id="demo-pipeline",
            reason="x",
            context=RequestContext(),
        )


def test_suspended_workload_cannot_request_a_grant_in_an_open_task(
    broker: Broker, open_task_id: str
) -> None:
    workloads.suspend_workload(
        broker, admin=ADMIN, workload_id="demo-pipeline", reason="leak", context=RequestContext()
    )

    with pytest.raises(WorkloadSuspended, match="workload demo-pipeline is suspended: leak"):
        grants.request_grant(
            broker,
            workload=PIPELINE,
            task_id=open_task_id,
            request=READ_REQUEST,
            idempotency_key=None,
            context=RequestContext(),
        )


def test_approved_grant_of_a_suspended_workload_is_not_issued(broker: Broker) -> None:
    pending = grant_for(broker, PIPELINE, WRITE_REQUEST)
    approvals.approve(
        broker,
        approver=APPROVER,
        grant_id=pending.grant_id,
        comment="ok",
        ttl_seconds=None,
        scopes=None,
        context=RequestContext(),
    )
    record_suspension_only(broker, "demo-pipeline")

    with pytest.raises(WorkloadSuspended):
        grants.issue_approved_grant(
            broker, workload=PIPELINE, grant_id=pending.grant_id, context=RequestContext()
        )


def test_revoke_by_profile_revokes_only_that_profile(broker: Broker) -> None:
    database = grant_for(broker, PIPELINE, READ_REQUEST)
    token = grant_for(broker, PIPELINE, TOKEN_REQUEST)

    counts = workloads.revoke_matching(
        broker,
        admin=ADMIN,
        selector=RevokeSelector(profile="demo-token", reason="token leaked"),
        context=RequestContext(),
    )

    assert counts == RevocationCounts(matched=1, revocation_requested=1, cancelled=0)
    assert state_of(broker, token) == GrantState.revoking
    assert state_of(broker, database) == GrantState.issued


def test_revoke_by_destination_pattern_matches_wildcards(broker: Broker) -> None:
    database = grant_for(broker, PIPELINE, READ_REQUEST)
    theirs = grant_for(broker, OTHER, READ_REQUEST)
    unrelated = grant_for(broker, PIPELINE, TOKEN_REQUEST)

    counts = workloads.revoke_matching(
        broker,
        admin=ADMIN,
        selector=RevokeSelector(destination="postgres://127.0.0.1:*", reason="db incident"),
        context=RequestContext(),
    )

    assert counts.matched == 2
    assert state_of(broker, database) == state_of(broker, theirs) == GrantState.revoking
    assert state_of(broker, unrelated) == GrantState.issued


def test_revoke_selector_fields_must_all_match(broker: Broker) -> None:
    mine = grant_for(broker, PIPELINE, READ_REQUEST)
    theirs = grant_for(broker, OTHER, READ_REQUEST)

    workloads.revoke_matching(
        broker,
        admin=ADMIN,
        selector=RevokeSelector(workload="other-pipeline", profile="demo-db", reason="x"),
        context=RequestContext(),
    )

    assert state_of(broker, theirs) == GrantState.revoking
    assert state_of(broker, mine) == GrantState.issued


def test_incident_revoke_is_audited_and_notified(
    broker: Broker, notification_queue: InMemoryNotificationQueue
) -> None:
    grant_for(broker, PIPELINE, TOKEN_REQUEST)

    workloads.revoke_matching(
        broker,
        admin=ADMIN,
        selector=RevokeSelector(profile="demo-token", reason="token leaked"),
        context=RequestContext(),
    )

    (event,) = [e for e in broker.audit.read_all() if e.type == "incident.revoke"]
    assert event.details["selector"] == {"profile": "demo-token"}
    assert event.details["matched"] == 1
    assert event.reason == "token leaked"
    assert [webhook for _, webhook in notification_queue.enqueued] == ["security"]


def test_removed_workload_sweep_revokes_only_that_workloads_grants(broker: Broker) -> None:
    kept = grant_for(broker, PIPELINE, READ_REQUEST)
    orphaned = grant_for(broker, OTHER, READ_REQUEST)
    broker.config = broker.config.model_copy(
        update={"workloads": {"demo-pipeline": broker.config.workloads["demo-pipeline"]}}
    )

    counts = workloads.revoke_grants_of_inactive_workloads(broker)

    assert counts == RevocationCounts(matched=1, revocation_requested=1, cancelled=0)
    assert state_of(broker, orphaned) == GrantState.revoking
    assert state_of(broker, kept) == GrantState.issued
    stored = broker.grants.get(orphaned.grant_id)
    assert stored is not None
    assert stored.revoke_reason == RevokeReason.workload_removed
    (event,) = [e for e in broker.audit.read_all() if e.type == "workload.removed"]
    assert event.workload == "other-pipeline"


def test_removed_workload_sweep_with_nothing_to_do_records_nothing(broker: Broker) -> None:
    grant_for(broker, PIPELINE, READ_REQUEST)

    counts = workloads.revoke_grants_of_inactive_workloads(broker)

    assert counts == RevocationCounts()
    assert not [e for e in broker.audit.read_all() if e.type == "workload.removed"]


def test_sweep_revokes_a_grant_issued_while_its_workload_was_being_suspended(
    broker: Broker,
) -> None:
    late = grant_for(broker, PIPELINE, READ_REQUEST)
    record_suspension_only(broker, "demo-pipeline")

    workloads.revoke_grants_of_inactive_workloads(broker)

    stored = broker.grants.get(late.grant_id)
    assert stored is not None
    assert stored.state == GrantState.revoking
    assert stored.revoke_reason == RevokeReason.workload_suspended

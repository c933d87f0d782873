"""Sign-off, access reviews and their enforcement over fakeredis, a fake engine and a clock the
tests move: the review clock, reminders, suspension, retirement, last use."""

from __future__ import annotations

from datetime import timedelta

import pytest
from tests.unit.fakes import PIPELINE, READ_REQUEST
from tests.unit.inventory.conftest import (
    ADMIN,
    LEDGER_AGENT,
    LEDGER_SYNC,
    MALLORY,
    OWEN,
    START,
    STRAY_PROD,
    MovableClock,
)

from jitbroker.audit.events import RequestContext
from jitbroker.bootstrap import Broker
from jitbroker.errors import Conflict, Forbidden, PolicyDenied, WorkloadSuspended
from jitbroker.grants import service as grants
from jitbroker.grants.schemas import GrantRecord, GrantRequest, GrantState
from jitbroker.identity.schemas import WorkloadIdentity
from jitbroker.inventory import service as inventory
from jitbroker.inventory.schemas import ReviewDecision
from jitbroker.notifications.queue import InMemoryNotificationQueue
from jitbroker.notifications.repository import NotificationRepository
from jitbroker.notifications.schemas import Notification
from jitbroker.policy.guards import SignOffState
from jitbroker.tasks import service as tasks
from jitbroker.workloads import service as workloads
from jitbroker.workloads.schemas import WorkloadState

PROD_READ = GrantRequest(
    profile="ledger-prod-db", scopes=["read"], ttl_seconds=60, justification="settle"
)
DAY = 86400


def request(broker: Broker, workload: WorkloadIdentity, body: GrantRequest) -> GrantRecord:
    task = tasks.open_task(
        broker, workload=workload, purpose="unit", ttl_seconds=600, context=RequestContext()
    )
    return grants.request_grant(
        broker,
        workload=workload,
        task_id=task.task_id,
        request=body,
        idempotency_key=None,
        context=RequestContext(),
    ).grant


def review(broker: Broker, decision: ReviewDecision, comment: str = "still needed") -> None:
    inventory.review_workload(
        broker,
        person=OWEN,
        workload_id="ledger-agent",
        decision=decision,
        comment=comment,
        context=RequestContext(),
    )


def sign_off(broker: Broker, workload_id: str = "ledger-sync") -> None:
    inventory.sign_off_workload(
        broker, person=OWEN, workload_id=workload_id, comment="", context=RequestContext()
    )


def notifications(broker: Broker) -> list[Notification]:
    queue = broker.notifications
    assert isinstance(queue, InMemoryNotificationQueue)
    repository = NotificationRepository(broker.redis, broker.settings.key_prefix)
    found = [repository.get(notification_id) for notification_id, _ in queue.enqueued]
    return [n for n in found if n is not None]


def state_of(broker: Broker, workload_id: str) -> WorkloadState:
    [item] = [i for i in inventory.list_inventory(broker, admin=ADMIN) if i.id == workload_id]
    return item.state


def test_review_clock_starts_when_the_broker_first_sees_the_workload(
    broker: Broker, clock: MovableClock
) -> None:
    first = inventory.review_clock(broker, workload=broker.config.workloads["ledger-agent"])
    clock.advance(days=3)
    later = inventory.review_clock(broker, workload=broker.config.workloads["ledger-agent"])

    assert first.started_at == later.started_at == START
    assert later.due_at == START + timedelta(days=30)


def test_review_due_within_the_grace_period_reminds_the_owner_once(
    broker: Broker, clock: MovableClock
) -> None:
    inventory.enforce_reviews(broker)
    clock.advance(days=31)

    first = inventory.enforce_reviews(broker)
    second = inventory.enforce_reviews(broker)

    assert first.reminded == ["ledger-agent"]
    assert second.reminded == []
    assert first.suspended == []
    [reminder] = [n for n in notifications(broker) if n.event == "review.due"]
    assert (reminder.fields["workload"], reminder.fields["owner_team"]) == (
        "ledger-agent",
        "ledger-team",
    )


def test_review_overdue_past_the_grace_period_suspends_and_revokes_everything_live(
    broker: Broker, clock: MovableClock
) -> None:
    inventory.enforce_reviews(broker)
    grant = request(broker, LEDGER_AGENT, READ_REQUEST)
    clock.advance(days=38)

    done = inventory.enforce_reviews(broker)

    assert done.suspended == ["ledger-agent"]
    stored = broker.grants.get(grant.grant_id)
    assert stored is not None
    assert stored.state == GrantState.revoking
    overdue = [n for n in notifications(broker) if n.event == "review.overdue"]
    assert [n.fields["workload"] for n in overdue] == ["ledger-agent"]
    assert overdue[0].fields["revocation_requested"] == 1
    with pytest.raises(WorkloadSuspended, match="access review overdue"):
        request(broker, LEDGER_AGENT, READ_REQUEST)


def test_workload_with_no_owner_to_review_it_is_suspended_when_overdue(
    broker: Broker, clock: MovableClock
) -> None:
    inventory.enforce_reviews(broker)
    clock.advance(days=98)

    done = inventory.enforce_reviews(broker)

    assert "demo-pipeline" in done.suspended
    suspension = workloads.workload_suspension(broker, workload_id="demo-pipeline")
    assert suspension is not None
    assert "no owner_team to review it" in suspension.reason


def test_keep_review_restarts_the_clock_and_lifts_the_overdue_suspension(
    broker: Broker, clock: MovableClock
) -> None:
    inventory.enforce_reviews(broker)
    clock.advance(days=38)
    inventory.enforce_reviews(broker)

    review(broker, ReviewDecision.keep)

    clock_now = inventory.review_clock(broker, workload=broker.config.workloads["ledger-agent"])
    assert clock_now.due_at == clock.now + timedelta(days=30)
    assert state_of(broker, "ledger-agent") == WorkloadState.active
    request(broker, LEDGER_AGENT, READ_REQUEST)


def test_review_never_lifts_a_suspension_an_admin_made(broker: Broker, clock: MovableClock) -> None:
    workloads.suspend_workload(
        broker,
        admin=ADMIN,
        workload_id="ledger-agent",
        reason="token leaked",
        context=RequestContext(),
    )

    review(broker, ReviewDecision.keep)

    assert state_of(broker, "ledger-agent") == WorkloadState.suspended


def test_overdue_check_leaves_a_suspension_an_admin_made_in_place(
    broker: Broker, clock: MovableClock
) -> None:
    inventory.enforce_reviews(broker)
    workloads.suspend_workload(
        broker, admin=ADMIN, workload_id="ledger-agent", reason="leak", context=RequestContext()
    )
    clock.advance(days=38)

    done = inventory.enforce_reviews(broker)

    assert "ledger-agent" not in done.suspended
    suspension = workloads.workload_suspension(broker, workload_id="ledger-agent")
    assert suspension is not None
    assert suspension.reason == "leak"


def test_retire_review_revokes_everything_and_cannot_be_resumed(
    broker: Broker, clock: MovableClock
) -> None:
    grant = request(broker, LEDGER_AGENT, READ_REQUEST)

    review(broker, ReviewDecision.retire, "the agent pilot ended")

    stored = broker.grants.get(grant.grant_id)
    assert stored is not None
    assert stored.state == GrantState.revoking
    assert state_of(broker, "ledger-agent") == WorkloadState.retired
    with pytest.raises(Conflict, match="cannot be resumed"):
        workloads.resume_workload(
            broker, admin=ADMIN, workload_id="ledger-agent", context=RequestContext()
        )
    with pytest.raises(Conflict, match="is retired"):
        review(broker, ReviewDecision.keep)
    workload_events = [e.type for e in broker.audit.read_all() if e.type.startswith("workload.")]
    assert workload_events == ["workload.reviewed", "workload.retired"]


def test_workload_past_expires_on_is_retired_by_the_scheduler_check(
    broker: Broker, clock: MovableClock
) -> None:
    clock.advance(days=28)

    done = inventory.enforce_reviews(broker)

    assert done.retired == ["old-export"]
    assert state_of(broker, "old-export") == WorkloadState.retired
    assert "workload.retired" in [n.event for n in notifications(broker)]


def test_only_the_owner_team_may_review(broker: Broker, clock: MovableClock) -> None:
    with pytest.raises(Forbidden, match="owner team 'ledger-team'"):
        inventory.review_workload(
            broker,
            person=MALLORY,
            workload_id="ledger-agent",
            decision=ReviewDecision.keep,
            comment="",
            context=RequestContext(),
        )


def test_unowned_workload_cannot_be_reviewed(broker: Broker, clock: MovableClock) -> None:
    with pytest.raises(Conflict, match="has no owner_team"):
        inventory.review_workload(
            broker,
            person=OWEN,
            workload_id="demo-pipeline",
            decision=ReviewDecision.keep,
            comment="",
            context=RequestContext(),
        )


def test_reviews_due_lists_overdue_workloads_with_their_suspension_date(
    broker: Broker, clock: MovableClock
) -> None:
    inventory.enforce_reviews(broker)
    clock.advance(days=31)

    due = inventory.reviews_due(broker, admin=ADMIN)

    assert [item.workload for item in due] == ["ledger-agent"]
    assert due[0].overdue_seconds == DAY
    assert due[0].suspends_at == START + timedelta(days=37)


def test_prod_workload_gets_nothing_until_its_owner_team_signs_it_off(
    broker: Broker, clock: MovableClock
) -> None:
    with pytest.raises(PolicyDenied, match="no sign-off from its owner team"):
        request(broker, LEDGER_SYNC, PROD_READ)

    sign_off(broker)

    assert request(broker, LEDGER_SYNC, PROD_READ).state == GrantState.issued


def test_sign_off_goes_stale_when_the_workload_binding_changes(
    broker: Broker, clock: MovableClock
) -> None:
    sign_off(broker)
    workload = broker.config.workloads["ledger-sync"]
    broker.config.workloads["ledger-sync"] = workload.model_copy(update={"subject": "other"})

    assert (
        inventory.sign_off_state(broker, workload=broker.config.workloads["ledger-sync"])
        == SignOffState.stale
    )


def test_only_the_owner_team_may_sign_off(broker: Broker, clock: MovableClock) -> None:
    with pytest.raises(Forbidden):
        inventory.sign_off_workload(
            broker,
            person=MALLORY,
            workload_id="ledger-sync",
            comment="",
            context=RequestContext(),
        )


def test_dev_workload_needs_no_sign_off(broker: Broker, clock: MovableClock) -> None:
    with pytest.raises(Conflict, match="only production workloads need a sign-off"):
        sign_off(broker, "ledger-agent")


def test_unowned_prod_workload_is_denied_even_though_a_rule_allows_it(
    broker: Broker, clock: MovableClock
) -> None:
    with pytest.raises(PolicyDenied, match="is unowned") as denied:
        request(broker, STRAY_PROD, PROD_READ)

    assert denied.value.extra["rule"] == "ownership-required"
    [decided] = [e for e in broker.audit.read_all() if e.type == "grant.decided"]
    assert (decided.rule, decided.outcome) == ("ownership-required", "deny")


def test_every_decision_records_whether_the_request_was_privileged(
    broker: Broker, clock: MovableClock
) -> None:
    read = request(broker, PIPELINE, READ_REQUEST)
    admin = request(broker, PIPELINE, READ_REQUEST.model_copy(update={"scopes": ["admin"]}))

    assert (read.decision["privileged"], admin.decision["privileged"]) == (False, True)
    audited = [
        e.details["privileged"] for e in broker.audit.read_all() if e.type == "grant.decided"
    ]
    assert audited == [False, True]


def test_issuance_records_last_use_and_the_unused_report_lists_the_rest(
    broker: Broker, clock: MovableClock
) -> None:
    request(broker, PIPELINE, READ_REQUEST)

    unused = inventory.unused_scopes(broker, admin=ADMIN, days=30)

    pipeline = [(u.profile, u.scope) for u in unused if u.workload == "demo-pipeline"]
    assert ("demo-db", "read") not in pipeline
    assert ("demo-db", "admin") in pipeline
    assert ("ledger-prod-db", "read") not in pipeline
    [item] = [i for i in inventory.list_inventory(broker, admin=ADMIN) if i.id == "demo-pipeline"]
    assert item.last_used_at == START


def test_scope_used_longer_ago_than_the_window_is_reported_unused(
    broker: Broker, clock: MovableClock
) -> None:
    request(broker, PIPELINE, READ_REQUEST)
    clock.advance(days=31)

    unused = inventory.unused_scopes(broker, admin=ADMIN, days=30)

    [read] = [
        u
        for u in unused
        if (u.workload, u.profile, u.scope) == ("demo-pipeline", "demo-db", "read")
    ]
    assert read.last_used_at == START

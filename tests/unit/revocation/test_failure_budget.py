"""The failure budget over fakeredis and a fake engine: failing list, incidents, backpressure."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from tests.unit.fakes import PIPELINE, READ_REQUEST, FakeEngine, write_demo_config

from jitbroker.audit.events import RequestContext
from jitbroker.bootstrap import Broker
from jitbroker.errors import Forbidden, RevocationBacklog, VaultUnavailable
from jitbroker.grants import service as grants
from jitbroker.grants.schemas import GrantRecord, GrantRequest, GrantState, RevokeReason
from jitbroker.identity.schemas import HumanIdentity
from jitbroker.metrics import BrokerStateCollector
from jitbroker.notifications.queue import InMemoryNotificationQueue
from jitbroker.revocation.failures import failing_counts, failing_revocations
from jitbroker.revocation.service import request_revocation, revoke_grant
from jitbroker.tasks import service as tasks

ADMIN = HumanIdentity(subject="root-admin", issuer="test-humans", groups=("platform-admins",))
APPROVER = HumanIdentity(subject="alice", issuer="test-humans", groups=("dba",))
TOKEN_REQUEST = GrantRequest(
    profile="demo-token", scopes=["read"], ttl_seconds=60, justification="unit"
)
ONCALL_WEBHOOK = """
webhooks:
  - name: oncall
    url: https://hooks.example.test/oncall
    secret_env: JITBROKER_UNIT_WEBHOOK_SECRET
    events: [revocation.incident]
"""


@pytest.fixture
def demo_config_dir(tmp_path: Path) -> Path:
    """The unit demo configuration plus a webhook subscribed to revocation.incident."""
    directory = tmp_path / "demo-config"
    directory.mkdir()
    write_demo_config(directory)
    (directory / "webhooks.yaml").write_text(ONCALL_WEBHOOK)
    return directory


@pytest.fixture
def budget_of_one(broker: Broker) -> Broker:
    broker.settings = broker.settings.model_copy(update={"revocation_failure_budget": 1})
    return broker


def issue(broker: Broker, request: GrantRequest = READ_REQUEST) -> GrantRecord:
    task = tasks.open_task(
        broker, workload=PIPELINE, purpose="unit", ttl_seconds=600, context=RequestContext()
    )
    return grants.request_grant(
        broker,
        workload=PIPELINE,
        task_id=task.task_id,
        request=request,
        idempotency_key=None,
        context=RequestContext(),
    ).grant


def attempt_while_down(broker: Broker, engine: FakeEngine, grant: GrantRecord) -> None:
    engine.down = True
    with pytest.raises(VaultUnavailable):
        revoke_grant(broker, grant_id=grant.grant_id)


def failing_grant(broker: Broker, engine: FakeEngine) -> GrantRecord:
    grant = issue(broker)
    request_revocation(broker, grant_id=grant.grant_id, reason=RevokeReason.task_completed)
    attempt_while_down(broker, engine, grant)
    return grant


def later(broker: Broker, seconds: float) -> None:
    moved = broker.clock() + timedelta(seconds=seconds)
    broker.clock = lambda: moved


def incident_events(broker: Broker) -> list[str]:
    return [e.grant_id or "" for e in broker.audit.read_all() if e.type == "revocation.incident"]


def test_failed_revocation_is_listed_with_its_attempts_and_last_error(
    broker: Broker, engine: FakeEngine
) -> None:
    grant = failing_grant(broker, engine)

    listing = failing_revocations(broker, admin=ADMIN)

    (entry,) = listing.grants
    assert entry.grant_id == grant.grant_id
    assert entry.profile == "demo-db"
    assert entry.backend == "database:database"
    assert entry.attempts == 1
    assert entry.last_error is not None
    assert "unavailable" in entry.last_error
    assert entry.incident is False


def test_completed_revocation_leaves_the_failing_list(broker: Broker, engine: FakeEngine) -> None:
    grant = failing_grant(broker, engine)
    engine.down = False

    revoked = revoke_grant(broker, grant_id=grant.grant_id)

    assert revoked is not None
    assert revoked.state == GrantState.revoked
    assert failing_revocations(broker, admin=ADMIN).grants == []
    assert failing_counts(broker) == dict.fromkeys(broker.config.profiles, 0)


def test_first_failure_time_stays_when_the_revocation_fails_again(
    broker: Broker, engine: FakeEngine
) -> None:
    grant = failing_grant(broker, engine)
    first = failing_revocations(broker, admin=ADMIN).grants[0].first_failure_at
    later(broker, 20)

    attempt_while_down(broker, engine, grant)

    (entry,) = failing_revocations(broker, admin=ADMIN).grants
    assert entry.first_failure_at == first
    assert entry.attempts == 2


def test_no_incident_while_failing_for_less_than_the_threshold(
    broker: Broker, engine: FakeEngine
) -> None:
    grant = failing_grant(broker, engine)
    later(broker, broker.settings.revocation_incident_seconds - 1)

    attempt_while_down(broker, engine, grant)

    assert incident_events(broker) == []
    assert failing_revocations(broker, admin=ADMIN).grants[0].incident is False


def test_incident_is_raised_once_after_failing_past_the_threshold(
    broker: Broker, engine: FakeEngine
) -> None:
    notifications = broker.notifications
    assert isinstance(notifications, InMemoryNotificationQueue)
    grant = failing_grant(broker, engine)
    later(broker, broker.settings.revocation_incident_seconds + 1)

    attempt_while_down(broker, engine, grant)
    attempt_while_down(broker, engine, grant)

    assert incident_events(broker) == [grant.grant_id]
    assert [webhook for _, webhook in notifications.enqueued] == ["oncall"]
    (entry,) = failing_revocations(broker, admin=ADMIN).grants
    assert entry.incident is True
    assert entry.incident_at is not None


def test_failing_list_needs_an_admin(broker: Broker) -> None:
    with pytest.raises(Forbidden):
        failing_revocations(broker, admin=APPROVER)


def test_issuance_continues_with_failures_at_the_budget(
    budget_of_one: Broker, engine: FakeEngine
) -> None:
    failing_grant(budget_of_one, engine)
    engine.down = False

    assert issue(budget_of_one).state == GrantState.issued


def test_issuance_is_refused_with_retry_after_when_failures_exceed_the_budget(
    budget_of_one: Broker, engine: FakeEngine
) -> None:
    failing_grant(budget_of_one, engine)
    failing_grant(budget_of_one, engine)
    engine.down = False
    issued_before = engine.issued

    with pytest.raises(RevocationBacklog) as refused:
        issue(budget_of_one)

    assert refused.value.status == 503
    assert refused.value.headers["Retry-After"] == "30"
    assert refused.value.extra["failing"] == 2
    assert engine.issued == issued_before
    assert [e.type for e in budget_of_one.audit.read_all()][-1] == "grant.issue_failed"


def test_issuance_is_refused_when_revocations_stay_pending_past_redelivery(
    budget_of_one: Broker, engine: FakeEngine
) -> None:
    for grant in (issue(budget_of_one), issue(budget_of_one)):
        request_revocation(
            budget_of_one, grant_id=grant.grant_id, reason=RevokeReason.task_completed
        )
    assert issue(budget_of_one).state == GrantState.issued
    later(budget_of_one, budget_of_one.settings.revocation_redelivery_seconds + 1)

    with pytest.raises(RevocationBacklog) as refused:
        issue(budget_of_one)

    assert refused.value.extra["stuck"] == 2


def test_budget_is_kept_per_backend(budget_of_one: Broker, engine: FakeEngine) -> None:
    failing_grant(budget_of_one, engine)
    failing_grant(budget_of_one, engine)
    engine.down = False

    token_grant = issue(budget_of_one, TOKEN_REQUEST)

    assert token_grant.state == GrantState.issued
    standing = {b.backend: b for b in failing_revocations(budget_of_one, admin=ADMIN).backends}
    assert standing["database:database"].refusing_issuance is True
    assert standing["token:auth/token"].refusing_issuance is False


def test_failing_count_per_profile_is_exported_as_a_metric(
    broker: Broker, engine: FakeEngine
) -> None:
    failing_grant(broker, engine)
    collector = BrokerStateCollector(
        broker.revocation_stats, broker.ledger, failing=lambda: failing_counts(broker)
    )

    (family,) = [m for m in collector.collect() if m.name == "jitbroker_revocations_failing"]

    assert {s.labels["profile"]: s.value for s in family.samples} == {
        **dict.fromkeys(broker.config.profiles, 0.0),
        "demo-db": 1.0,
    }

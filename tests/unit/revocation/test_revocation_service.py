"""revoke_grant, request_revocation and the sweeper over fakeredis and a fake engine."""

from __future__ import annotations

from datetime import timedelta

import pytest
from tests.unit.fakes import FakeEngine

from jitbroker.bootstrap import Broker
from jitbroker.errors import VaultUnavailable
from jitbroker.grants.schemas import GrantRecord, GrantState, RevokeReason
from jitbroker.revocation.queue import InMemoryRevocationQueue
from jitbroker.revocation.service import request_revocation, revoke_grant, sweep_expired


def test_issued_grant_is_on_the_ledger_at_its_expiry(
    broker: Broker, issued_grant: GrantRecord
) -> None:
    assert issued_grant.expires_at is not None
    assert broker.ledger.due_at(issued_grant.grant_id) == pytest.approx(
        issued_grant.expires_at.timestamp()
    )


def test_requested_revocation_is_enqueued_and_kept_on_the_ledger(
    broker: Broker, issued_grant: GrantRecord, queue: InMemoryRevocationQueue
) -> None:
    request_revocation(broker, grant_id=issued_grant.grant_id, reason=RevokeReason.task_completed)

    stored = broker.grants.get(issued_grant.grant_id)
    assert stored is not None
    assert stored.state == GrantState.revoking
    assert queue.enqueued == [issued_grant.grant_id]
    assert broker.ledger.due_at(issued_grant.grant_id) is not None


def test_revoking_twice_revokes_once_and_leaves_the_ledger(
    broker: Broker, issued_grant: GrantRecord, engine: FakeEngine
) -> None:
    request_revocation(broker, grant_id=issued_grant.grant_id, reason=RevokeReason.task_completed)

    first = revoke_grant(broker, grant_id=issued_grant.grant_id)
    second = revoke_grant(broker, grant_id=issued_grant.grant_id)

    assert first is not None
    assert second is not None
    assert first.state == second.state == GrantState.revoked
    assert issued_grant.lease_ref not in engine.live
    assert broker.ledger.due_at(issued_grant.grant_id) is None


def test_early_sweeper_claim_is_put_back_at_the_real_expiry(
    broker: Broker, issued_grant: GrantRecord, engine: FakeEngine
) -> None:
    result = revoke_grant(broker, grant_id=issued_grant.grant_id)

    assert result is not None
    assert result.state == GrantState.issued
    assert issued_grant.lease_ref in engine.live
    assert issued_grant.expires_at is not None
    assert broker.ledger.due_at(issued_grant.grant_id) == pytest.approx(
        issued_grant.expires_at.timestamp()
    )


def test_due_grant_expires_with_state_expired(
    broker: Broker, issued_grant: GrantRecord, engine: FakeEngine
) -> None:
    assert issued_grant.expires_at is not None
    later = issued_grant.expires_at + timedelta(seconds=1)
    broker.clock = lambda: later

    result = revoke_grant(broker, grant_id=issued_grant.grant_id)

    assert result is not None
    assert result.state == GrantState.expired
    assert issued_grant.lease_ref not in engine.live


def test_revocation_while_openbao_is_down_raises_and_stays_on_the_ledger(
    broker: Broker, issued_grant: GrantRecord, engine: FakeEngine
) -> None:
    request_revocation(broker, grant_id=issued_grant.grant_id, reason=RevokeReason.task_completed)
    engine.down = True

    with pytest.raises(VaultUnavailable):
        revoke_grant(broker, grant_id=issued_grant.grant_id)

    stored = broker.grants.get(issued_grant.grant_id)
    assert stored is not None
    assert stored.state == GrantState.revoking
    assert stored.revocation_attempts == 1
    assert broker.ledger.due_at(issued_grant.grant_id) is not None


def test_sweeper_claims_a_due_grant_once_until_redelivery(
    broker: Broker, issued_grant: GrantRecord, queue: InMemoryRevocationQueue
) -> None:
    assert issued_grant.expires_at is not None
    due = issued_grant.expires_at.timestamp() + 0.1

    first = sweep_expired(broker, now=due)
    again = sweep_expired(broker, now=due + 1)
    after_redelivery = sweep_expired(
        broker, now=due + broker.settings.revocation_redelivery_seconds + 0.1
    )

    assert first == [issued_grant.grant_id]
    assert again == []
    assert after_redelivery == [issued_grant.grant_id]
    assert queue.enqueued == [issued_grant.grant_id, issued_grant.grant_id]


def test_sweeper_ignores_grants_not_yet_due(
    broker: Broker, issued_grant: GrantRecord, queue: InMemoryRevocationQueue
) -> None:
    assert issued_grant.expires_at is not None

    claimed = sweep_expired(broker, now=issued_grant.expires_at.timestamp() - 1)

    assert claimed == []
    assert queue.enqueued == []


def test_stale_writer_cannot_overwrite_a_newer_state(
    broker: Broker, issued_grant: GrantRecord
) -> None:
    stale = broker.grants.get(issued_grant.grant_id)
    request_revocation(broker, grant_id=issued_grant.grant_id, reason=RevokeReason.task_completed)
    assert stale is not None

    stale.state = GrantState.issued
    written = broker.grants.replace(stale)

    assert written is False
    current = broker.grants.get(issued_grant.grant_id)
    assert current is not None
    assert current.state == GrantState.revoking

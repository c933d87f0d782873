"""The reconciler's decisions over fakeredis and a fake engine: orphans, grace, lost leases."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

from tests.unit.fakes import FakeEngine

from jitbroker.bootstrap import Broker
from jitbroker.grants.schemas import GrantRecord, GrantState, RevokeReason
from jitbroker.revocation.queue import InMemoryRevocationQueue
from jitbroker.revocation.reconciler import reconcile
from jitbroker.revocation.scheduler import run_scheduler
from jitbroker.revocation.service import request_revocation, revoke_grant

ORPHAN = "database/creds/demo-ro/orphan"


def plant_lease(engine: FakeEngine, lease: str, *, age_seconds: float) -> None:
    """A lease OpenBao holds that no grant recorded (issued behind the broker's back)."""
    engine.live.add(lease)
    engine.issued_at[lease] = datetime.now(UTC) - timedelta(seconds=age_seconds)


def events_of(broker: Broker, kind: str) -> list[str]:
    return [
        e.details.get("lease_id") or e.grant_id or ""
        for e in broker.audit.read_all()
        if e.type == kind
    ]


def test_orphan_older_than_the_grace_period_is_revoked(broker: Broker, engine: FakeEngine) -> None:
    plant_lease(engine, ORPHAN, age_seconds=broker.settings.orphan_grace_seconds + 1)

    report = reconcile(broker)

    assert report.orphans_revoked == [ORPHAN]
    assert ORPHAN not in engine.live
    assert events_of(broker, "reconcile.orphan_revoked") == [ORPHAN]
    assert broker.revocation_stats.snapshot()["orphan|demo-db"] == 1


def test_orphan_within_the_grace_period_is_left_alone(broker: Broker, engine: FakeEngine) -> None:
    plant_lease(engine, ORPHAN, age_seconds=broker.settings.orphan_grace_seconds - 30)

    report = reconcile(broker)

    assert report.orphans_revoked == []
    assert report.orphans_in_grace == [ORPHAN]
    assert ORPHAN in engine.live


def test_lease_of_a_live_grant_is_never_taken_for_an_orphan(
    broker: Broker, engine: FakeEngine, issued_grant: GrantRecord
) -> None:
    broker.settings = broker.settings.model_copy(update={"orphan_grace_seconds": 0})

    report = reconcile(broker)

    assert report.leases_listed == 1
    assert report.orphans_revoked == []
    assert issued_grant.lease_ref in engine.live


def test_lease_of_a_grant_recorded_before_the_index_existed_is_kept(
    broker: Broker, engine: FakeEngine, issued_grant: GrantRecord
) -> None:
    broker.settings = broker.settings.model_copy(update={"orphan_grace_seconds": 0})
    broker.redis.delete(broker.grants.lease_index_key("database"))

    report = reconcile(broker)

    assert report.orphans_revoked == []
    assert issued_grant.lease_ref in engine.live


def test_revoked_grant_leaves_the_lease_index(broker: Broker, issued_grant: GrantRecord) -> None:
    assert issued_grant.lease_ref is not None
    request_revocation(broker, grant_id=issued_grant.grant_id, reason=RevokeReason.task_completed)

    revoke_grant(broker, grant_id=issued_grant.grant_id)

    assert not broker.grants.holds_lease("database", issued_grant.lease_ref)


def test_grant_whose_lease_openbao_lost_is_revoked(
    broker: Broker,
    engine: FakeEngine,
    issued_grant: GrantRecord,
    queue: InMemoryRevocationQueue,
) -> None:
    assert issued_grant.lease_ref is not None
    engine.live.discard(issued_grant.lease_ref)

    report = reconcile(broker)

    assert report.lost_leases == [issued_grant.grant_id]
    assert queue.enqueued == [issued_grant.grant_id]
    stored = broker.grants.get(issued_grant.grant_id)
    assert stored is not None
    assert stored.state == GrantState.revoking
    assert stored.revoke_reason == RevokeReason.lease_lost
    assert events_of(broker, "reconcile.lost_lease") == [issued_grant.grant_id]
    finished = revoke_grant(broker, grant_id=issued_grant.grant_id)
    assert finished is not None
    assert finished.state == GrantState.revoked
    assert broker.receipts.get(issued_grant.grant_id) is not None


def test_lease_gone_at_its_grants_expiry_is_left_to_the_ledger(
    broker: Broker,
    engine: FakeEngine,
    issued_grant: GrantRecord,
    queue: InMemoryRevocationQueue,
) -> None:
    assert issued_grant.lease_ref is not None
    assert issued_grant.expires_at is not None
    engine.live.discard(issued_grant.lease_ref)
    at_expiry = issued_grant.expires_at - timedelta(seconds=1)
    broker.clock = lambda: at_expiry

    report = reconcile(broker)

    assert report.lost_leases == []
    assert queue.enqueued == []


def test_scheduler_runs_the_reconciler(broker: Broker, engine: FakeEngine) -> None:
    plant_lease(engine, ORPHAN, age_seconds=broker.settings.orphan_grace_seconds + 1)
    stop = threading.Event()
    scheduler = threading.Thread(target=run_scheduler, args=(broker, stop))
    scheduler.start()
    try:
        deadline = time.monotonic() + 5
        while ORPHAN in engine.live and time.monotonic() < deadline:
            stop.wait(0.05)
    finally:
        stop.set()
        scheduler.join(timeout=5)

    assert ORPHAN not in engine.live


def test_index_entry_of_a_vanished_grant_is_dropped(
    broker: Broker, issued_grant: GrantRecord
) -> None:
    assert issued_grant.lease_ref is not None
    index = broker.grants.lease_index_key("database")
    broker.redis.hset(index, "database/creds/demo-ro/stale", "grt_vanished")

    reconcile(broker)

    assert not broker.grants.holds_lease("database", "database/creds/demo-ro/stale")
    assert broker.grants.holds_lease("database", issued_grant.lease_ref)

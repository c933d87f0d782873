"""Scenarios 4 and 5: the scheduler SIGKILLed and restarted, and two schedulers (plus duplicate
revocation messages and a lockless sweep) at once."""

from __future__ import annotations

import signal
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from jitbroker.bootstrap import Broker
from jitbroker.cli import app as cli
from jitbroker.config import Settings
from jitbroker.grants.schemas import GrantState, RevokeReason
from jitbroker.revocation.service import sweep_expired
from tests.integration.support import wait_for
from tests.resilience.support import Aftermath, SchedulerFleet

pytestmark = [pytest.mark.integration, pytest.mark.resilience]

SHORT = {"profile": "demo-db", "scopes": ["read"], "ttl_seconds": 2, "justification": "expiry"}
# The scheduler lock's TTL with the stack's 0.1 s sweep interval: max(5 * interval, 2 s).
LOCK_TTL_SECONDS = 2.0
# From the restart to the last expired grant: interpreter start-up, the dead holder's lock
# running out, a sweep and the worker's revocation, on two CPUs shared with other suites.
RESTART_BOUND_SECONDS = 25.0


def issue_short_grants(
    client: TestClient, auth: dict[str, str], count: int
) -> list[dict[str, Any]]:
    task = client.post("/v1/tasks", json={"purpose": "expiry"}, headers=auth).json()
    issued = []
    for _ in range(count):
        grant = client.post(f"/v1/tasks/{task['task_id']}/grants", json=SHORT, headers=auth)
        assert grant.status_code == 201, grant.text
        issued.append(grant.json())
    return issued


def all_past_expiry(broker: Broker, issued: list[dict[str, Any]]) -> bool:
    now = datetime.now(UTC)
    grants = [broker.grants.get(g["grant_id"]) for g in issued]
    return all(g is not None and g.expires_at is not None and g.expires_at < now for g in grants)


def states(broker: Broker, issued: list[dict[str, Any]]) -> set[GrantState]:
    return {g.state for g in (broker.grants.get(i["grant_id"]) for i in issued) if g is not None}


def lock_holder(broker: Broker) -> bytes | None:
    holder: bytes | None = broker.redis.get(f"{broker.settings.key_prefix}:scheduler:lock")
    return holder


def test_scheduler_killed_and_restarted_revokes_grants_that_expired_while_it_was_down(
    client: TestClient,
    broker: Broker,
    pipeline_auth: dict[str, str],
    schedulers: SchedulerFleet,
    aftermath: Aftermath,
) -> None:
    """Pass: the active scheduler is SIGKILLed; its lock carries a TTL (it cannot wedge); grants
    of 2 s expire while no scheduler runs and stay `issued` in Redis; a restarted scheduler takes
    the lock (a new holder) and every one of them is `expired` (reason `expired`) within 25 s of
    the restart, with a receipt; the aftermath check holds."""
    first = wait_for(lambda: lock_holder(broker), timeout=30, what="an active scheduler")
    (process,) = schedulers.running()
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    assert broker.redis.pttl(f"{broker.settings.key_prefix}:scheduler:lock") > 0

    issued = issue_short_grants(client, pipeline_auth, 3)
    wait_for(lambda: all_past_expiry(broker, issued), what="the grants' TTLs to pass")
    assert states(broker, issued) == {GrantState.issued}, "nothing sweeps without a scheduler"

    restarted_at = time.monotonic()
    schedulers.start()
    wait_for(
        lambda: states(broker, issued) == {GrantState.expired},
        timeout=RESTART_BOUND_SECONDS,
        what="the grants that expired meanwhile to be revoked",
    )

    assert time.monotonic() - restarted_at < RESTART_BOUND_SECONDS
    assert lock_holder(broker) not in (None, first)
    for grant in issued:
        recorded = broker.grants.get(grant["grant_id"])
        assert recorded is not None
        assert recorded.revoke_reason == RevokeReason.expired
    aftermath.check(issued)


def test_two_schedulers_at_once_revoke_each_grant_exactly_once(
    client: TestClient,
    broker: Broker,
    settings: Settings,
    pipeline_auth: dict[str, str],
    schedulers: SchedulerFleet,
    aftermath: Aftermath,
) -> None:
    """Pass: two schedulers run; both are paused until their lock has expired and the grants are
    due, then resumed together (both mid-loop, racing for the lock) while the test also sweeps
    without the lock and enqueues two duplicate revocations per grant. Every grant ends
    `expired` exactly once: one `grant.expired` event, one stored receipt whose signature is the
    one that event names, no `grant.revocation_failed`, nothing on the failing list; both
    schedulers are still running; `jitbroker audit verify` reports the chain INTACT; the
    aftermath check holds."""
    schedulers.start()
    running = schedulers.running()
    assert len(running) == 2
    wait_for(lambda: lock_holder(broker), timeout=30, what="one of them to hold the lock")

    issued = issue_short_grants(client, pipeline_auth, 6)
    for process in running:
        process.send_signal(signal.SIGSTOP)
    try:
        wait_for(lambda: lock_holder(broker) is None, what="the paused holder's lock to expire")
        wait_for(lambda: all_past_expiry(broker, issued), what="the grants' TTLs to pass")
        for grant in issued:
            broker.revocations.enqueue(grant["grant_id"])
            broker.revocations.enqueue(grant["grant_id"])
    finally:
        for process in running:
            process.send_signal(signal.SIGCONT)
    sweep_expired(broker)

    wait_for(
        lambda: states(broker, issued) == {GrantState.expired},
        timeout=30,
        what="every grant to be expired",
    )
    events = broker.audit.read_all()
    ids = [g["grant_id"] for g in issued]
    expired = Counter(e.grant_id for e in events if e.type == "grant.expired")
    assert {grant_id: expired[grant_id] for grant_id in ids} == dict.fromkeys(ids, 1)
    assert [e.grant_id for e in events if e.type == "grant.revocation_failed"] == []
    for event in (e for e in events if e.type == "grant.expired"):
        receipt = broker.receipts.get(str(event.grant_id))
        assert receipt is not None
        assert receipt.signature == event.details["receipt_signature"], event.grant_id
    assert broker.revocation_backlog.failing("demo-db") == []
    assert broker.revocation_backlog.incidents(ids) == {}
    assert len(schedulers.running()) == 2
    verified = CliRunner().invoke(
        cli,
        [
            "audit",
            "verify",
            "--redis",
            settings.redis_url,
            "--prefix",
            settings.key_prefix,
            "--key",
            str(settings.signing_key_file),
        ],
    )
    assert verified.exit_code == 0, verified.output
    assert "INTACT" in verified.output
    aftermath.check(issued)

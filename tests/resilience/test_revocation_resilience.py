"""Scenario 3, revocation that survives its failures, against real OpenBao, PostgreSQL, Redis and
Celery: a worker SIGKILLed mid-revocation, OpenBao stopped mid-revocation, leases created or
revoked behind the broker's back."""

from __future__ import annotations

import dataclasses
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hvac
import pytest
from celery import Celery
from fastapi.testclient import TestClient

from jitbroker.bootstrap import Broker
from jitbroker.config import Settings
from jitbroker.grants.schemas import GrantRecord, GrantState, RevokeReason
from jitbroker.identity.dev_issuer import DevIssuer
from jitbroker.revocation.queue import REVOKE_TASK
from jitbroker.revocation.reconciler import reconcile
from jitbroker.revocation.service import request_revocation
from jitbroker.worker import create_celery
from tests.integration.support import ROOT_TOKEN, pg_connect, role_exists, wait_for
from tests.real_stack import process_env
from tests.resilience.support import Aftermath, OpenBaoPause

pytestmark = [pytest.mark.integration, pytest.mark.resilience]

READ = {"profile": "demo-db", "scopes": ["read"], "ttl_seconds": 300, "justification": "resilience"}
DEDICATED_QUEUE = "jitbroker.revocation.dedicated"
# A worker on one queue only, so the test decides which worker gets the revocation first.
DEDICATED_WORKER_MAIN = """
import sys
from jitbroker.config import Settings
from jitbroker.worker import create_celery
queue, name = sys.argv[1:]
create_celery(Settings()).worker_main(
    ["worker", "-Q", queue, "-n", name, "--concurrency=1", "--loglevel=INFO",
     "--without-gossip", "--without-mingle"]
)
"""


class DedicatedQueue:
    """Sends revocations to the dedicated worker's queue only."""

    def __init__(self, app: Celery) -> None:
        self._app = app

    def enqueue(self, grant_id: str) -> None:
        self._app.send_task(REVOKE_TASK, args=[grant_id], queue=DEDICATED_QUEUE)


@dataclasses.dataclass
class DedicatedWorker:
    name: str
    process: subprocess.Popen[bytes]

    def kill(self) -> None:
        """SIGKILL the worker and its pool children (its own process group)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)


@pytest.fixture
def dedicated_worker(
    settings: Settings, broker: Broker, logs_dir: Path
) -> Iterator[DedicatedWorker]:
    """A second Celery worker, on its own queue, whose OpenBao calls wait a long time."""
    name = f"dedicated-{secrets.token_hex(4)}@jitbroker-test"
    log = (logs_dir / f"{name}.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-c", DEDICATED_WORKER_MAIN, DEDICATED_QUEUE, name],
        env={**process_env(settings), "JITBROKER_VAULT_TIMEOUT_SECONDS": "60"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    worker = DedicatedWorker(name, process)
    celery = create_celery(settings)
    try:
        wait_for(
            lambda: celery.control.ping(destination=[name], timeout=0.5),
            timeout=60,
            what="the dedicated worker",
        )
        yield worker
    finally:
        worker.kill()


@pytest.fixture
def admin_auth(broker: Broker, dev_issuer: DevIssuer) -> dict[str, str]:
    return {"Authorization": f"Bearer {dev_issuer.human_token(broker.config, 'root-admin')}"}


def issue(client: TestClient, auth: dict[str, str]) -> dict[str, Any]:
    task = client.post("/v1/tasks", json={"purpose": "resilience"}, headers=auth).json()
    grant = client.post(f"/v1/tasks/{task['task_id']}/grants", json=READ, headers=auth)
    assert grant.status_code == 201, grant.text
    body: dict[str, Any] = grant.json()
    return body


def stored(broker: Broker, grant_id: str) -> GrantRecord:
    grant = broker.grants.get(grant_id)
    assert grant is not None
    return grant


def wait_until_revoked(broker: Broker, grant_id: str) -> GrantRecord:
    wait_for(
        lambda: stored(broker, grant_id).state == GrantState.revoked,
        timeout=40,
        what=f"grant {grant_id} to be revoked",
    )
    return stored(broker, grant_id)


def running_on(celery: Celery, worker: str, grant_id: str) -> bool:
    active = celery.control.inspect(destination=[worker], timeout=0.5).active() or {}
    return any(grant_id in str(task.get("args")) for task in active.get(worker, []))


def test_worker_killed_mid_revocation_still_leads_to_the_lease_being_revoked(
    client: TestClient,
    broker: Broker,
    settings: Settings,
    pipeline_auth: dict[str, str],
    openbao: OpenBaoPause,
    dedicated_worker: DedicatedWorker,
    aftermath: Aftermath,
) -> None:
    """Pass: with OpenBao stopped, the worker revoking the grant is SIGKILLed and the grant is
    left `revoking`; after OpenBao resumes another worker revokes it (reason kept) with a
    receipt, the PostgreSQL role and the lease are gone, and the aftermath check holds."""
    grant = issue(client, pipeline_auth)
    grant_id, username = grant["grant_id"], grant["credential"]["username"]
    celery = create_celery(settings)
    to_dedicated = dataclasses.replace(broker, revocations=DedicatedQueue(celery))

    with openbao.paused():
        request_revocation(to_dedicated, grant_id=grant_id, reason=RevokeReason.task_completed)
        # OpenBao is paused, so the worker is now stuck inside the revoke call.
        wait_for(
            lambda: running_on(celery, dedicated_worker.name, grant_id),
            what="the dedicated worker to be revoking the grant",
        )
        dedicated_worker.kill()
        assert stored(broker, grant_id).state == GrantState.revoking

    revoked = wait_until_revoked(broker, grant_id)
    assert revoked.revoke_reason == RevokeReason.task_completed
    assert broker.receipts.get(grant_id) is not None
    assert not role_exists(username)
    assert not broker.vault.lease_exists(str(revoked.lease_ref))
    aftermath.check([grant])


def test_revocation_during_an_openbao_outage_is_listed_as_failing_then_completes(
    client: TestClient,
    broker: Broker,
    pipeline_auth: dict[str, str],
    admin_auth: dict[str, str],
    openbao: OpenBaoPause,
    aftermath: Aftermath,
) -> None:
    """Pass: a revocation requested while OpenBao is stopped is listed as failing (attempts,
    `unavailable`, backend); once OpenBao resumes it completes with a receipt, the role is gone,
    the failing list is empty again, and the aftermath check holds."""
    grant = issue(client, pipeline_auth)
    grant_id, username = grant["grant_id"], grant["credential"]["username"]

    def listed_as_failing() -> list[dict[str, Any]]:
        listing = client.get("/v1/revocations/failing", headers=admin_auth).json()
        return [g for g in listing["grants"] if g["grant_id"] == grant_id]

    with openbao.paused():
        revoking = client.post(f"/v1/grants/{grant_id}/revoke", headers=pipeline_auth)
        assert revoking.status_code == 200, revoking.text
        (failing,) = wait_for(listed_as_failing, timeout=20, what="the grant to be listed")

    assert failing["attempts"] >= 1
    assert "unavailable" in failing["last_error"]
    assert failing["backend"] == "database:database"
    revoked = wait_until_revoked(broker, grant_id)
    assert broker.receipts.get(grant_id) is not None
    assert not role_exists(username)
    assert revoked.revocation_attempts >= 1
    assert listed_as_failing() == []
    aftermath.check([grant])


def test_orphan_lease_created_behind_the_brokers_back_is_revoked_by_the_reconciler(
    broker: Broker, settings: Settings
) -> None:
    """Pass: a lease no grant holds, past the grace period, is revoked by one reconcile round,
    its PostgreSQL role is gone and `reconcile.orphan_revoked` names it."""
    root = hvac.Client(url=settings.vault_addr, token=ROOT_TOKEN)
    orphan = root.read("database/creds/demo-ro")
    lease_id, username = orphan["lease_id"], orphan["data"]["username"]
    assert role_exists(username)
    eager = dataclasses.replace(
        broker, settings=settings.model_copy(update={"orphan_grace_seconds": 0})
    )

    report = reconcile(eager)

    assert lease_id in report.orphans_revoked
    assert not role_exists(username)
    assert not broker.vault.lease_exists(lease_id)
    revoked = [e for e in broker.audit.read_all() if e.type == "reconcile.orphan_revoked"]
    assert lease_id in [e.details["lease_id"] for e in revoked]


def test_reconciler_leaves_the_lease_of_a_live_grant_alone(
    client: TestClient, broker: Broker, settings: Settings, pipeline_auth: dict[str, str]
) -> None:
    """Pass: with no grace period, the reconciler does not touch a live grant's lease: the grant
    stays `issued` and its credential still logs in."""
    grant = issue(client, pipeline_auth)
    eager = dataclasses.replace(
        broker, settings=settings.model_copy(update={"orphan_grace_seconds": 0})
    )

    report = reconcile(eager)

    assert stored(broker, grant["grant_id"]).lease_ref not in report.orphans_revoked
    assert stored(broker, grant["grant_id"]).state == GrantState.issued
    with pg_connect(grant["credential"]["username"], grant["credential"]["password"]) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_grant_whose_lease_was_revoked_behind_the_brokers_back_is_revoked_with_a_receipt(
    client: TestClient,
    broker: Broker,
    settings: Settings,
    pipeline_auth: dict[str, str],
    aftermath: Aftermath,
) -> None:
    """Pass: a live grant whose lease was revoked in OpenBao directly is revoked by the broker
    (`lease_lost`) with a receipt and a `reconcile.lost_lease` event; the aftermath check holds."""
    grant = issue(client, pipeline_auth)
    grant_id = grant["grant_id"]
    lease_id = str(stored(broker, grant_id).lease_ref)
    hvac.Client(url=settings.vault_addr, token=ROOT_TOKEN).sys.revoke_lease(lease_id)

    reconcile(broker)

    revoked = wait_until_revoked(broker, grant_id)
    assert revoked.revoke_reason == RevokeReason.lease_lost
    assert broker.receipts.get(grant_id) is not None
    lost = [e for e in broker.audit.read_all() if e.type == "reconcile.lost_lease"]
    assert grant_id in [e.grant_id for e in lost]
    aftermath.check([grant])

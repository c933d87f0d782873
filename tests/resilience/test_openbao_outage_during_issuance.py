"""Scenario 2: OpenBao stopped (SIGSTOP) while a grant is being issued: the caller gets a 503 with
Retry-After, nothing is half-issued, and a lease OpenBao created without a grant record is
revoked by the reconciler or dies at its short initial TTL."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from jitbroker.app import create_app
from jitbroker.bootstrap import Broker
from jitbroker.config import Settings
from jitbroker.dev.openbao import INITIAL_LEASE_SECONDS
from jitbroker.engines.database import DatabaseEngine
from jitbroker.revocation.reconciler import reconcile
from jitbroker.vault import VaultClient
from tests.integration.support import role_exists, wait_for
from tests.resilience.support import (
    DB_READ,
    Aftermath,
    OpenBaoPause,
    database_leases,
    grant_records,
    problem_of,
)

pytestmark = [pytest.mark.integration, pytest.mark.resilience]


class StopsAfterCreds(VaultClient):
    """The broker's own OpenBao client, but OpenBao is stopped the moment it has handed out
    database credentials: the broker holds a lease it has not renewed or recorded yet."""

    pause: OpenBaoPause
    usernames: list[str]

    def read(self, path: str) -> dict[str, Any]:
        result = super().read(path)
        if "/creds/" in path:
            self.usernames.append(str(result["data"]["username"]))
            self.pause.stop()
        return result


@pytest.fixture
def stops_after_creds(
    broker: Broker, settings: Settings, openbao: OpenBaoPause
) -> Iterator[tuple[TestClient, StopsAfterCreds]]:
    vault = StopsAfterCreds.from_settings(settings)
    assert isinstance(vault, StopsAfterCreds)
    vault.pause, vault.usernames = openbao, []
    stopping = dataclasses.replace(
        broker, engines={**broker.engines, "database": DatabaseEngine(vault)}
    )
    with TestClient(create_app(broker=stopping)) as client:
        yield client, vault


def reconciled_away(broker: Broker, root: VaultClient, before: set[str]) -> bool:
    """One eager reconcile round (no grace); True once no lease of this scenario is left."""
    eager = dataclasses.replace(
        broker, settings=broker.settings.model_copy(update={"orphan_grace_seconds": 0})
    )
    reconcile(eager)
    return database_leases(root) <= before


def open_task(client: TestClient, auth: dict[str, str]) -> str:
    task = client.post("/v1/tasks", json={"purpose": "openbao outage"}, headers=auth)
    assert task.status_code == 201, task.text
    return str(task.json()["task_id"])


def test_grant_asked_while_openbao_is_stopped_gets_503_and_nothing_is_half_issued(
    client: TestClient,
    broker: Broker,
    settings: Settings,
    pipeline_auth: dict[str, str],
    openbao: OpenBaoPause,
    root_vault: VaultClient,
    aftermath: Aftermath,
) -> None:
    """Pass: with OpenBao stopped, a grant request answers 503 problem+json
    (`vault-unavailable`, Retry-After) within two OpenBao timeouts; no grant is recorded; once
    OpenBao resumes, any lease it created for the abandoned request (it may still serve the
    buffered request) is revoked by a reconcile round and its PostgreSQL role is gone; a new
    grant is issued again; the aftermath check holds."""
    task_id = open_task(client, pipeline_auth)
    before = aftermath.leases_before

    with openbao.paused():
        started = time.monotonic()
        refused = client.post(f"/v1/tasks/{task_id}/grants", json=DB_READ, headers=pipeline_auth)
        elapsed = time.monotonic() - started

    assert refused.status_code == 503, refused.text
    assert problem_of(refused)["type"].endswith("vault-unavailable")
    assert refused.headers["Retry-After"].isdigit()
    assert elapsed < 2 * settings.vault_timeout_seconds + 5
    assert grant_records(broker) == []
    wait_for(
        lambda: reconciled_away(broker, root_vault, before),
        timeout=20,
        what="leases of the abandoned request to be reconciled away",
    )
    issued = client.post(f"/v1/tasks/{task_id}/grants", json=DB_READ, headers=pipeline_auth)
    assert issued.status_code == 201, issued.text
    client.post(f"/v1/tasks/{task_id}/complete?wait=true", headers=pipeline_auth)
    aftermath.check([issued.json()])


def test_openbao_stopped_between_creds_and_renewal_leaves_no_grant_and_the_user_is_dropped(
    stops_after_creds: tuple[TestClient, StopsAfterCreds],
    broker: Broker,
    settings: Settings,
    pipeline_auth: dict[str, str],
    openbao: OpenBaoPause,
    root_vault: VaultClient,
    aftermath: Aftermath,
) -> None:
    """Pass: OpenBao is stopped right after it created a PostgreSQL user for the grant, before
    the broker could renew the lease to the grant TTL or record it: the caller gets 503
    problem+json with Retry-After and no secret; no grant is recorded; the user exists only
    under a lease no longer than the role's initial TTL (30 s) or the grant TTL; once OpenBao
    resumes, a reconcile round revokes that lease and the user is gone from `pg_roles`."""
    client, vault = stops_after_creds
    task_id = open_task(client, pipeline_auth)
    before = aftermath.leases_before

    try:
        refused = client.post(f"/v1/tasks/{task_id}/grants", json=DB_READ, headers=pipeline_auth)
    finally:
        openbao.resume()

    assert refused.status_code == 503, refused.text
    assert problem_of(refused)["type"].endswith("vault-unavailable")
    assert refused.headers["Retry-After"].isdigit()
    assert "password" not in refused.text
    (username,) = vault.usernames
    assert grant_records(broker) == []
    orphans = database_leases(root_vault) - before
    for lease in orphans:
        ttl = int(root_vault.write("sys/leases/lookup", lease_id=lease)["data"]["ttl"])
        assert ttl <= max(INITIAL_LEASE_SECONDS, DB_READ["ttl_seconds"])
    wait_for(
        lambda: reconciled_away(broker, root_vault, before),
        timeout=20,
        what="the half-issued lease to be reconciled away",
    )
    wait_for(lambda: not role_exists(username), what=f"PostgreSQL role {username} to be dropped")
    aftermath.check([])

"""The tamper-evident audit trail after a real credential lifecycle: verify in Redis and in the
file, tampering found in real Redis, the evidence bundle, and who may page through the trail."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from jitbroker.bootstrap import Broker
from jitbroker.cli import app as cli
from jitbroker.config import Settings
from jitbroker.identity.dev_issuer import DevIssuer
from jitbroker.revocation.receipts import verify_receipt
from tests.integration.support import wait_for
from tests.tampering import edit_stream_record, stream_id_of

pytestmark = pytest.mark.integration

READ = {"profile": "demo-db", "scopes": ["read"], "ttl_seconds": 300, "justification": "audit"}


@pytest.fixture
def finished_task(
    client: TestClient, broker: Broker, pipeline_auth: dict[str, str]
) -> dict[str, Any]:
    """A task whose demo-db grant was issued and then revoked when the task completed."""
    task = client.post("/v1/tasks", json={"purpose": "audit trail"}, headers=pipeline_auth).json()
    grant = client.post(f"/v1/tasks/{task['task_id']}/grants", json=READ, headers=pipeline_auth)
    assert grant.status_code == 201, grant.text
    completed = client.post(
        f"/v1/tasks/{task['task_id']}/complete?wait=true", headers=pipeline_auth
    ).json()
    assert completed["state"] == "completed"
    # The worker records grant.revoked just after the state change the completion waited for.
    wait_for(
        lambda: "grant.revoked" in [e.type for e in broker.audit.read_all()],
        what="grant.revoked in the audit trail",
    )
    return {"task_id": task["task_id"], "grant": grant.json()}


@pytest.fixture
def keys_file(client: TestClient, tmp_path: Path) -> Path:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps(client.get("/v1/keys").json()))
    return path


def verify(settings: Settings, keys_file: Path, *source: str) -> Any:
    return CliRunner().invoke(
        cli,
        [
            "audit",
            "verify",
            "--redis",
            settings.redis_url,
            "--prefix",
            settings.key_prefix,
            "--key",
            str(keys_file),
            *source,
        ],
    )


def test_verify_passes_on_redis_and_on_the_file_after_a_real_lifecycle(
    finished_task: dict[str, Any], settings: Settings, keys_file: Path
) -> None:
    assert settings.audit_file is not None

    in_redis = verify(settings, keys_file)
    in_file = verify(settings, keys_file, "--file", str(settings.audit_file))

    assert in_redis.exit_code == 0, in_redis.output
    assert in_file.exit_code == 0, in_file.output
    assert "INTACT" in in_redis.output
    assert "INTACT" in in_file.output
    # Every 5 records (the test stack's setting) a checkpoint is signed, by whichever process.
    assert "0 signed checkpoints" not in in_redis.output
    assert "0 signed checkpoints" not in in_file.output


def test_one_tampered_record_in_real_redis_fails_verify_naming_its_seq(
    finished_task: dict[str, Any],
    settings: Settings,
    state_redis: redis.Redis,
    keys_file: Path,
) -> None:
    stream = f"{settings.key_prefix}:audit"
    edit_stream_record(state_redis, stream, 3, outcome="nothing happened")

    result = verify(settings, keys_file)

    assert result.exit_code == 1
    assert f"TAMPERED seq 3 ({stream_id_of(state_redis, stream, 3)}): altered" in result.output


def test_evidence_bundle_holds_decision_issuance_revocation_and_a_signed_receipt(
    finished_task: dict[str, Any], client: TestClient, pipeline_auth: dict[str, str]
) -> None:
    response = client.get(f"/v1/tasks/{finished_task['task_id']}/evidence", headers=pipeline_auth)
    key = client.get("/v1/keys").json()["keys"][0]

    bundle = response.json()
    assert response.status_code == 200, response.text
    types = [event["type"] for event in bundle["events"]]
    for expected in ("grant.decided", "grant.issued", "grant.revoked"):
        assert expected in types
    (receipt,) = bundle["receipts"]
    assert verify_receipt(receipt, key)
    (access,) = bundle["access"]
    assert access["principal"] == finished_task["grant"]["credential"]["username"]
    assert access["ended_at"] is not None


def test_audit_listing_requires_an_admin(
    finished_task: dict[str, Any],
    client: TestClient,
    broker: Broker,
    dev_issuer: DevIssuer,
    pipeline_auth: dict[str, str],
) -> None:
    admin = {"Authorization": f"Bearer {dev_issuer.human_token(broker.config, 'root-admin')}"}
    approver = {"Authorization": f"Bearer {dev_issuer.human_token(broker.config, 'alice')}"}
    params = {"task": finished_task["task_id"]}

    as_admin = client.get("/v1/audit", params=params, headers=admin)

    assert client.get("/v1/audit", params=params, headers=pipeline_auth).status_code == 403
    assert client.get("/v1/audit", params=params, headers=approver).status_code == 403
    assert as_admin.status_code == 200
    assert {r["task_id"] for r in as_admin.json()["records"]} == {finished_task["task_id"]}

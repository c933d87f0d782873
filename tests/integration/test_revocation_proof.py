"""Revocation that propagates and proves it: live sessions die, gateways deny, receipts verify."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from jitbroker.cli import app as cli
from jitbroker.revocation.receipts import verify_receipt
from tests.integration.support import POSTGRES_ADMIN, pg_connect, role_exists, wait_for

pytestmark = pytest.mark.integration

READ = {"profile": "demo-db", "scopes": ["read"], "ttl_seconds": 300, "justification": "report"}
DESTINATION = "postgres://127.0.0.1:5432/postgres"


def issued(client: TestClient, auth: dict[str, str]) -> dict[str, Any]:
    task = client.post("/v1/tasks", json={"purpose": "proof"}, headers=auth).json()
    grant = client.post(f"/v1/tasks/{task['task_id']}/grants", json=READ, headers=auth)
    assert grant.status_code == 201, grant.text
    body: dict[str, Any] = grant.json()
    return body


def test_completion_terminates_idle_and_busy_sessions(
    client: TestClient, pipeline_auth: dict[str, str]
) -> None:
    grant = issued(client, pipeline_auth)
    user, password = grant["credential"]["username"], grant["credential"]["password"]
    idle = pg_connect(user, password)
    busy = pg_connect(user, password)
    outcome: dict[str, BaseException | None] = {}

    def long_query() -> None:
        try:
            busy.execute("SELECT pg_sleep(30)")
            outcome["error"] = None
        except psycopg.Error as exc:
            outcome["error"] = exc

    runner = threading.Thread(target=long_query)
    runner.start()
    wait_for(lambda: _sessions_of(user) == 2, what="both sessions to be live")

    completed = client.post(
        f"/v1/tasks/{grant['task_id']}/complete?wait=true", headers=pipeline_auth
    )
    runner.join(timeout=10)

    assert completed.json()["state"] == "completed"
    assert not runner.is_alive()
    assert isinstance(outcome["error"], psycopg.OperationalError)
    with pytest.raises(psycopg.OperationalError):
        idle.execute("SELECT 1")
    assert _sessions_of(user) == 0
    assert not role_exists(user)


def test_receipt_proves_every_check_and_verifies_with_the_public_key(
    client: TestClient, pipeline_auth: dict[str, str]
) -> None:
    grant = issued(client, pipeline_auth)

    completed = client.post(
        f"/v1/tasks/{grant['task_id']}/complete?wait=true", headers=pipeline_auth
    ).json()
    stored = client.get(f"/v1/tasks/{grant['task_id']}/receipt", headers=pipeline_auth).json()
    key = client.get("/v1/keys").json()["keys"][0]

    (receipt,) = completed["receipts"]
    assert stored["receipts"] == [receipt]
    assert {c["name"]: c["status"] for c in receipt["checks"]} == {
        "openbao_lease_absent": "passed",
        "route_closed": "passed",
        "postgres_role_absent": "passed",
        "postgres_sessions_absent": "passed",
    }
    assert receipt["principal"] == grant["credential"]["username"]
    assert verify_receipt(receipt, key)
    assert grant["credential"]["password"] not in json.dumps(receipt)


def test_receipt_with_one_byte_changed_fails_verification_offline(
    client: TestClient, pipeline_auth: dict[str, str], tmp_path: Path
) -> None:
    grant = issued(client, pipeline_auth)
    completed = client.post(
        f"/v1/tasks/{grant['task_id']}/complete?wait=true", headers=pipeline_auth
    ).json()
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps(client.get("/v1/keys").json()))
    good = tmp_path / "receipt.json"
    good.write_text(json.dumps(completed))
    tampered = tmp_path / "tampered.json"
    text = good.read_text()
    index = text.index('"duration_ms":') + len('"duration_ms":') + 1
    digit = text[index]
    tampered.write_text(text[:index] + ("1" if digit != "1" else "2") + text[index + 1 :])

    ok = CliRunner().invoke(cli, ["receipt", "verify", str(good), "--key", str(keys)])
    bad = CliRunner().invoke(cli, ["receipt", "verify", str(tampered), "--key", str(keys)])

    assert ok.exit_code == 0, ok.output
    assert ok.stdout.startswith("VALID")
    assert bad.exit_code == 1
    assert bad.stdout.startswith("INVALID")


def test_gateway_check_allows_before_and_denies_after_completion(
    client: TestClient, pipeline_auth: dict[str, str]
) -> None:
    grant = issued(client, pipeline_auth)
    by_id = {"grant_id": grant["grant_id"], "destination": DESTINATION}
    by_credential = {"credential": grant["credential"]["password"], "destination": DESTINATION}

    before = client.post("/v1/authz/check", json=by_id)
    before_by_credential = client.post("/v1/authz/check", json=by_credential)
    elsewhere = client.post(
        "/v1/authz/check", json={**by_id, "destination": "postgres://10.0.0.9:5432/billing"}
    )
    client.post(f"/v1/tasks/{grant['task_id']}/complete", headers=pipeline_auth)
    after = client.post("/v1/authz/check", json=by_id)
    after_by_credential = client.post("/v1/authz/check", json=by_credential)

    assert before.status_code == 200
    assert before.json()["workload"] == "demo-pipeline"
    assert before_by_credential.status_code == 200
    assert elsewhere.status_code == 403
    assert after.status_code == 403
    assert after_by_credential.status_code == 403


def _sessions_of(user: str) -> int:
    with psycopg.connect(POSTGRES_ADMIN) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (user,)
        ).fetchone()
    return int(row[0]) if row else 0


def test_gateway_header_form_needs_the_credential_not_just_a_grant_id(
    client: TestClient, pipeline_auth: dict[str, str]
) -> None:
    grant = issued(client, pipeline_auth)
    url = "/v1/authz/http/api/orders/1"
    host = {"host": "orders.internal", "x-forwarded-proto": "https"}
    credential = {"authorization": f"Bearer {grant['credential']['password']}"}

    with_grant_id_only = client.get(url, headers={**host, "x-jitbroker-grant": grant["grant_id"]})
    with_credential = client.get(url, headers={**host, **credential})
    other_api = client.get(url, headers={**host, **credential, "x-original-uri": "/admin/1"})
    with_dot_segments = client.get(
        url, headers={**host, **credential, "x-original-uri": "/api/..%2fadmin"}
    )

    assert with_grant_id_only.status_code == 403
    assert with_credential.status_code == 200
    assert with_credential.headers["x-jitbroker-workload"] == "demo-pipeline"
    assert other_api.status_code == 403
    assert with_dot_segments.status_code == 403
    assert with_dot_segments.json()["reason"] == "the request path is not canonical"

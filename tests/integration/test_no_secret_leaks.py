"""Invariant 2 and issue 5: after a full lifecycle, no issued password or token (nor the caller's
bearer token) is anywhere in the audit stream, the audit file, Redis or the process logs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from jitbroker.bootstrap import Broker
from jitbroker.config import Settings
from tests.integration.support import redis_texts, wait_for

pytestmark = pytest.mark.integration

DB_READ = {"profile": "demo-db", "scopes": ["read"], "ttl_seconds": 300, "justification": "scan"}
TOKEN_READ = {
    "profile": "demo-token",
    "scopes": ["read"],
    "ttl_seconds": 300,
    "justification": "kv",
}


def test_no_issued_secret_is_in_the_audit_trail_redis_or_the_logs(
    client: TestClient,
    broker: Broker,
    settings: Settings,
    pipeline_auth: dict[str, str],
    logs_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    task = client.post("/v1/tasks", json={"purpose": "leak scan"}, headers=pipeline_auth).json()
    grants = f"/v1/tasks/{task['task_id']}/grants"
    database = client.post(grants, json=DB_READ, headers=pipeline_auth)
    token = client.post(grants, json=TOKEN_READ, headers=pipeline_auth)
    assert database.status_code == token.status_code == 201, (database.text, token.text)
    completed = client.post(
        f"/v1/tasks/{task['task_id']}/complete?wait=true", headers=pipeline_auth
    ).json()
    assert completed["state"] == "completed"
    wait_for(
        lambda: [e.type for e in broker.audit.read_all()].count("grant.revoked") == 2,
        what="both revocations in the audit trail",
    )
    secrets = {
        "demo-db password": database.json()["credential"]["password"],
        "demo-token token": token.json()["credential"]["token"],
        "workload bearer token": pipeline_auth["Authorization"].removeprefix("Bearer "),
    }
    assert settings.audit_file is not None
    haystacks: list[tuple[str, str]] = [
        ("audit stream", json.dumps([e.document for e in broker.audit.stream.all_records()])),
        ("audit file", settings.audit_file.read_text()),
        ("test process log", caplog.text),
    ]
    haystacks += [(f"log {p.name}", p.read_text(errors="replace")) for p in logs_dir.glob("*")]
    for url in (settings.redis_url, settings.task_queue_url):
        haystacks += [
            (f"{url} {key}", text) for key, text in redis_texts(redis.Redis.from_url(url))
        ]

    leaks = [(where, name) for where, text in haystacks for name, s in secrets.items() if s in text]

    assert leaks == []
    # The scan saw what it was meant to: the records, both grants' principals, the worker's log.
    stream_text = haystacks[0][1]
    assert database.json()["credential"]["username"] in stream_text
    assert token.json()["credential"]["accessor"] in stream_text
    assert any(where == "log worker.log" and "revoke_grant" in t for where, t in haystacks)
    assert any(where.endswith(f"{settings.key_prefix}:audit") for where, _ in haystacks)

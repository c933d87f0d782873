"""Revocation propagation: from the `complete` call to the first refused PostgreSQL login.

Run with `make bench`; writes bench/report.json and bench/report.md. Not part of `make test`."""

from __future__ import annotations

import time

import psycopg
import pytest
from fastapi.testclient import TestClient
from tests.integration.support import pg_connect

from bench.conftest import Report, percentile

TASKS = 50
READ = {"profile": "demo-db", "scopes": ["read"], "ttl_seconds": 300, "justification": "bench"}
TARGET_P99_SECONDS = 1.0


def refused(username: str, password: str) -> bool:
    try:
        pg_connect(username, password).close()
    except psycopg.OperationalError:
        return True
    return False


def propagation_seconds(client: TestClient, auth: dict[str, str]) -> float:
    task = client.post("/v1/tasks", json={"purpose": "bench"}, headers=auth).json()
    grant = client.post(f"/v1/tasks/{task['task_id']}/grants", json=READ, headers=auth).json()
    username, password = grant["credential"]["username"], grant["credential"]["password"]
    assert not refused(username, password)
    started = time.perf_counter()
    client.post(f"/v1/tasks/{task['task_id']}/complete", headers=auth)
    deadline = started + 30
    while not refused(username, password):
        assert time.perf_counter() < deadline, "revocation did not propagate within 30 s"
    return time.perf_counter() - started


@pytest.mark.bench
def test_revocation_propagation(
    client: TestClient, pipeline_auth: dict[str, str], report: Report
) -> None:
    samples = sorted(propagation_seconds(client, pipeline_auth) for _ in range(TASKS))
    p50, p99 = percentile(samples, 50), percentile(samples, 99)
    report.sections["revocation_propagation"] = {
        "what": "POST /v1/tasks/{id}/complete → first refused PostgreSQL login",
        "tasks": TASKS,
        "p50_seconds": round(p50, 4),
        "p99_seconds": round(p99, 4),
        "max_seconds": round(samples[-1], 4),
        "target_p99_seconds": TARGET_P99_SECONDS,
        "pass": p99 <= TARGET_P99_SECONDS,
    }
    report.row(
        f"revocation propagation, {TASKS} tasks (complete → refused login)",
        f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms",
        f"p99 ≤ {TARGET_P99_SECONDS * 1000:.0f} ms",
        p99 <= TARGET_P99_SECONDS,
    )
    assert samples[-1] < 30

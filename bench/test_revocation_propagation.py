"""Revocation propagation: from the `complete` call to the first refused PostgreSQL login.

Run with `make bench`; writes bench/report.json and bench/report.md. Not part of `make test`."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from tests.integration.support import pg_connect

TASKS = 50
READ = {"profile": "demo-db", "scopes": ["read"], "ttl_seconds": 300, "justification": "bench"}
REPORT_DIR = Path(__file__).parent
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
def test_revocation_propagation(client: TestClient, pipeline_auth: dict[str, str]) -> None:
    samples = sorted(propagation_seconds(client, pipeline_auth) for _ in range(TASKS))
    p50 = statistics.median(samples)
    p99 = samples[min(len(samples) - 1, round(0.99 * len(samples)) - 1)]
    result: dict[str, Any] = {
        "measured_at": datetime.now(UTC).isoformat(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "revocation_propagation": {
            "what": "POST /v1/tasks/{id}/complete → first refused PostgreSQL login",
            "tasks": TASKS,
            "p50_seconds": round(p50, 4),
            "p99_seconds": round(p99, 4),
            "max_seconds": round(samples[-1], 4),
            "target_p99_seconds": TARGET_P99_SECONDS,
            "pass": p99 <= TARGET_P99_SECONDS,
        },
    }
    (REPORT_DIR / "report.json").write_text(json.dumps(result, indent=2) + "\n")
    rev = result["revocation_propagation"]
    (REPORT_DIR / "report.md").write_text(
        "# jitbroker benchmark report\n\n"
        f"Measured {result['measured_at']} on {result['machine']['platform']} "
        f"({result['machine']['cpus']} CPUs, Python {result['machine']['python']}).\n\n"
        "| measure | p50 | p99 | max | target | result |\n|---|---|---|---|---|---|\n"
        f"| revocation propagation, {TASKS} tasks (complete → refused login) | "
        f"{rev['p50_seconds'] * 1000:.0f} ms | {rev['p99_seconds'] * 1000:.0f} ms | "
        f"{rev['max_seconds'] * 1000:.0f} ms | p99 ≤ {TARGET_P99_SECONDS * 1000:.0f} ms | "
        f"{'pass' if rev['pass'] else 'FAIL'} |\n"
    )
    assert samples[-1] < 30

"""Issuance against raw OpenBao, expiry lag, gateway checks, JWT/policy cost, sweeper cost.

Run with `make bench`; results go into bench/report.json and bench/report.md. Load comes from a
separate client process (httpx/hvac threads) so it does not share the API server's interpreter."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import psycopg
import pytest
import redis
from fastapi.testclient import TestClient
from tests.integration.support import POSTGRES_ADMIN, ROOT_TOKEN, wait_for

from bench import authz_load, load
from bench.conftest import API_PROCESSES, Report, percentile
from jitbroker.bootstrap import Broker
from jitbroker.config import Settings
from jitbroker.identity.dev_issuer import DevIssuer
from jitbroker.policy.guards import workload_facts
from jitbroker.policy.schemas import PolicyInput
from jitbroker.revocation.ledger import ExpiryLedger
from jitbroker.vault import VaultClient

REQUESTS = 100
CONCURRENCY = (1, 8, 32)
TTL = 300
PROFILES = {
    # profile id: (direct load function, OpenBao role, throughput ratio target)
    "demo-db": (load.bao_db, "demo-ro", 0.85),
    "demo-token": (load.bao_token, "demo-kv-read", 0.7),
}
ADDED_P50_TARGET = 0.010
EXPIRY_GRANTS = 24
EXPIRY_P99_TARGET = 1.5
AUTHZ_SECONDS = 5.0
AUTHZ_MAX_REQUESTS = 40_000
AUTHZ_CONCURRENCY = 8
AUTHZ_RPS_TARGET = 2000
AUTHZ_P99_TARGET = 0.005


def grant_body(profile: str, ttl: int) -> dict[str, Any]:
    return {"profile": profile, "scopes": ["read"], "ttl_seconds": ttl, "justification": "bench"}


def open_tasks(client: TestClient | httpx.Client, auth: dict[str, str], n: int) -> list[str]:
    return [
        client.post("/v1/tasks", json={"purpose": "bench"}, headers=auth).json()["task_id"]
        for _ in range(n)
    ]


def complete_tasks(
    client: TestClient | httpx.Client, auth: dict[str, str], task_ids: list[str]
) -> None:
    """Revoke everything the tasks hold and wait for it, so the next point starts quiet."""
    for task_id in task_ids:
        client.post(f"/v1/tasks/{task_id}/complete", headers=auth)


def summary(run: dict[str, Any], count: int) -> dict[str, Any]:
    latencies = run["latencies"]
    assert run["error_count"] == 0, run["errors"]
    assert len(latencies) == count
    return {
        "requests": count,
        "throughput_per_second": round(count / run["wall_seconds"], 1),
        "p50_ms": round(percentile(latencies, 50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 99) * 1000, 2),
    }


def revoke_direct(vault: VaultClient, profile: str, refs: list[str]) -> None:
    with ThreadPoolExecutor(4) as pool:
        if profile == "demo-db":
            list(pool.map(vault.revoke_lease, refs))
        else:
            list(pool.map(lambda a: vault.write("auth/token/revoke-accessor", accessor=a), refs))


@pytest.fixture
def http(live_url: str) -> Iterator[httpx.Client]:
    """Set-up calls against the live server (a TestClient would start a second app)."""
    with httpx.Client(base_url=live_url, timeout=60) as client:
        yield client


@dataclass(frozen=True)
class IssuanceRig:
    """What every issuance point measures with: set-up client, broker, caller, OpenBao, load."""

    http: httpx.Client
    broker: Broker
    auth: dict[str, str]
    vault: VaultClient
    openbao_addr: str
    load_process: ProcessPoolExecutor
    report: Report


@pytest.fixture
def rig(
    http: httpx.Client,
    broker: Broker,
    pipeline_auth: dict[str, str],
    demo_openbao: VaultClient,
    openbao_addr: str,
    load_process: ProcessPoolExecutor,
    report: Report,
) -> IssuanceRig:
    return IssuanceRig(
        http, broker, pipeline_auth, demo_openbao, openbao_addr, load_process, report
    )


def issuance_point(
    rig: IssuanceRig, *, url: str, processes: int, profile: str, concurrency: int
) -> dict[str, Any]:
    """One side-by-side point: raw OpenBao, then the broker at `url`, same load shape."""
    http, broker, auth, vault = rig.http, rig.broker, rig.auth, rig.vault
    openbao_addr, load_process, report = rig.openbao_addr, rig.load_process, rig.report
    direct_load, role, ratio_target = PROFILES[profile]
    count = max(REQUESTS, 4 * concurrency)
    # Warm both paths (connections, OpenBao's plugin, the broker's caches).
    load_process.submit(direct_load, openbao_addr, ROOT_TOKEN, role, TTL, 2, 4).result()
    direct_run = load_process.submit(
        direct_load, openbao_addr, ROOT_TOKEN, role, TTL, concurrency, count
    ).result()
    revoke_direct(vault, profile, direct_run["results"])
    tasks = open_tasks(http, auth, concurrency)
    body = grant_body(profile, TTL)
    load_process.submit(load.broker_grants, url, auth, tasks[:1], body, 4).result()
    broker_run = load_process.submit(load.broker_grants, url, auth, tasks, body, count).result()
    complete_tasks(http, auth, tasks)
    wait_for(lambda: broker.ledger.size() == 0, timeout=120, what="revocations")
    direct, brokered = summary(direct_run, count), summary(broker_run, count)
    ratio = brokered["throughput_per_second"] / direct["throughput_per_second"]
    added = (brokered["p50_ms"] - direct["p50_ms"]) / 1000
    where = f"{profile} c={concurrency}, {processes} API process{'es' if processes > 1 else ''}"
    report.series[f"{profile} c{concurrency} p{processes} bao"] = direct_run["latencies"]
    report.series[f"{profile} c{concurrency} p{processes} broker"] = broker_run["latencies"]
    report.row(
        f"issuance {where}: throughput broker/OpenBao",
        f"{brokered['throughput_per_second']:.0f}/s vs "
        f"{direct['throughput_per_second']:.0f}/s = {ratio:.2f}×",
        f"≥ {ratio_target}×",
        ratio >= ratio_target,
    )
    report.row(
        f"issuance {where}: p50 / p99 broker vs OpenBao",
        f"p50 {brokered['p50_ms']:.1f} vs {direct['p50_ms']:.1f} ms "
        f"(+{added * 1000:.1f} ms); p99 {brokered['p99_ms']:.1f} vs "
        f"{direct['p99_ms']:.1f} ms",
        "≤ 10 ms added p50",
        added <= ADDED_P50_TARGET,
    )
    return {
        "profile": profile,
        "concurrency": concurrency,
        "api_processes": processes,
        "openbao": direct,
        "broker": brokered,
        "throughput_ratio": round(ratio, 3),
        "ratio_target": ratio_target,
        "added_p50_ms": round(added * 1000, 2),
        "pass": ratio >= ratio_target and added <= ADDED_P50_TARGET,
    }


ISSUANCE_WHAT = (
    "POST /v1/tasks/{id}/grants over HTTP (uvicorn) vs hvac against OpenBao "
    "(database/creds/demo-ro + lease renew to the TTL; auth/token/create/demo-kv-read)"
)


@pytest.mark.bench
def test_issuance_broker_vs_openbao(rig: IssuanceRig, live_url: str) -> None:
    """One API process (uvicorn in a thread of this process), concurrency 1, 8 and 32."""
    points = [
        issuance_point(rig, url=live_url, processes=1, profile=profile, concurrency=concurrency)
        for profile in PROFILES
        for concurrency in CONCURRENCY
    ]
    rig.report.sections["issuance"] = {"what": ISSUANCE_WHAT, "points": points}


@pytest.mark.bench
def test_issuance_on_several_api_processes(rig: IssuanceRig, served_url: str) -> None:
    """`jitbroker serve --workers 2`, as deployed, under the concurrent loads."""
    points = [
        issuance_point(
            rig,
            url=served_url,
            processes=API_PROCESSES,
            profile=profile,
            concurrency=concurrency,
        )
        for profile in PROFILES
        for concurrency in CONCURRENCY[1:]
    ]
    rig.report.sections["issuance_several_processes"] = {"what": ISSUANCE_WHAT, "points": points}


def parse_time(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


@pytest.mark.bench
def test_expiry_lag(
    client: TestClient,
    pipeline_auth: dict[str, str],
    demo_openbao: VaultClient,
    report: Report,
) -> None:
    task_id = open_tasks(client, pipeline_auth, 1)[0]
    pending: dict[str, float] = {}
    for index in range(EXPIRY_GRANTS):
        response = client.post(
            f"/v1/tasks/{task_id}/grants",
            json=grant_body("demo-db", 2 + index % 2),
            headers=pipeline_auth,
        )
        assert response.status_code == 201, response.text
        pending[response.json()["grant_id"]] = parse_time(response.json()["expires_at"])
    lags: list[float] = []
    deadline = time.time() + 30
    while pending and time.time() < deadline:
        for grant_id, expires_at in sorted(pending.items(), key=lambda item: item[1]):
            if expires_at > time.time():
                break
            state = client.get(f"/v1/grants/{grant_id}", headers=pipeline_auth).json()["state"]
            if state == "expired":
                lags.append(time.time() - expires_at)
                del pending[grant_id]
        time.sleep(0.01)
    assert not pending, f"{len(pending)} grants never reached `expired`"
    bao_lags = openbao_expiry_lags(demo_openbao)
    p50, p99 = percentile(lags, 50), percentile(lags, 99)
    bao_p50, bao_p99 = percentile(bao_lags, 50), percentile(bao_lags, 99)
    report.sections["expiry_lag"] = {
        "what": "grant expires_at → GET /v1/grants/{id} says `expired` (ttl 2–3 s)",
        "grants": EXPIRY_GRANTS,
        "p50_seconds": round(p50, 4),
        "p99_seconds": round(p99, 4),
        "target_p99_seconds": EXPIRY_P99_TARGET,
        "pass": p99 <= EXPIRY_P99_TARGET,
        "openbao": {
            "what": "lease renewed to ttl 2 s directly → role gone from pg_roles",
            "leases": len(bao_lags),
            "p50_seconds": round(bao_p50, 4),
            "p99_seconds": round(bao_p99, 4),
        },
    }
    report.row(
        f"expiry lag, {EXPIRY_GRANTS} grants (expires_at → state `expired`)",
        f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms",
        f"p99 ≤ {EXPIRY_P99_TARGET * 1000:.0f} ms",
        p99 <= EXPIRY_P99_TARGET,
    )
    report.row(
        f"OpenBao's own expiry lag, {len(bao_lags)} leases (expiry → role gone)",
        f"p50 {bao_p50 * 1000:.0f} ms, p99 {bao_p99 * 1000:.0f} ms",
        "comparison",
    )


def openbao_expiry_lags(vault: VaultClient, n: int = 20) -> list[float]:
    expiring: dict[str, float] = {}
    for _ in range(n):
        created = vault.read("database/creds/demo-ro")
        before = time.time()
        renewed = vault.renew_lease(str(created["lease_id"]), 2)
        after = time.time()
        expiring[created["data"]["username"]] = (before + after) / 2 + renewed["lease_duration"]
    lags: list[float] = []
    deadline = time.time() + 30
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as conn:
        while expiring and time.time() < deadline:
            present = {
                row[0]
                for row in conn.execute(
                    "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (list(expiring),)
                )
            }
            now = time.time()
            for username in [u for u in expiring if u not in present]:
                lags.append(now - expiring.pop(username))
            time.sleep(0.01)
    assert not expiring, "OpenBao did not drop its expired roles within 30 s"
    return lags


@pytest.mark.bench
def test_authz_check_throughput(
    http: httpx.Client,
    live_url: str,
    pipeline_auth: dict[str, str],
    load_process: ProcessPoolExecutor,
    report: Report,
) -> None:
    task_id = open_tasks(http, pipeline_auth, 1)[0]
    grant = http.post(
        f"/v1/tasks/{task_id}/grants", json=grant_body("demo-db", TTL), headers=pipeline_auth
    ).json()
    body = {"destination": "postgres://127.0.0.1:5432/postgres", "grant_id": grant["grant_id"]}
    load_process.submit(authz_load.authz_checks, live_url, body, 2, 200, 5).result()
    run = load_process.submit(
        authz_load.authz_checks,
        live_url,
        body,
        AUTHZ_CONCURRENCY,
        AUTHZ_MAX_REQUESTS,
        AUTHZ_SECONDS,
    ).result()
    complete_tasks(http, pipeline_auth, [task_id])
    assert run["error_count"] == 0, run["errors"]
    latencies = run["latencies"]
    rps = len(latencies) / run["wall_seconds"]
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    passed = rps >= AUTHZ_RPS_TARGET and p99 <= AUTHZ_P99_TARGET
    report.sections["authz_check"] = {
        "what": f"POST /v1/authz/check, one uvicorn process, {AUTHZ_CONCURRENCY} keep-alive "
        "connections on one asyncio event loop in a separate process on the same machine",
        "requests": len(latencies),
        "seconds": round(run["wall_seconds"], 2),
        "requests_per_second": round(rps, 1),
        "p50_ms": round(p50 * 1000, 2),
        "p99_ms": round(p99 * 1000, 2),
        "targets": {"requests_per_second": AUTHZ_RPS_TARGET, "p99_ms": AUTHZ_P99_TARGET * 1000},
        "pass": passed,
    }
    report.row(
        f"authz/check, one API process, c={AUTHZ_CONCURRENCY}",
        f"{rps:.0f} req/s, p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms",
        f"≥ {AUTHZ_RPS_TARGET} req/s, p99 ≤ {AUTHZ_P99_TARGET * 1000:.0f} ms",
        passed,
    )


def micro_seconds(call: Any, n: int) -> float:
    """Best of five runs of `n` calls, in µs per call."""
    best = float("inf")
    for _ in range(5):
        began = time.perf_counter()
        for _ in range(n):
            call()
        best = min(best, (time.perf_counter() - began) / n)
    return best * 1e6


@pytest.mark.bench
def test_jwt_and_policy_cost(broker: Broker, dev_issuer: DevIssuer, report: Report) -> None:
    fresh = [dev_issuer.workload_token(broker.config, "demo-pipeline") for _ in range(300)]
    principal = broker.verifier.verify(fresh[0])
    # Each token once (the verifier remembers verified tokens for a while), then one again.
    first_use: list[float] = []
    for token in fresh[1:]:
        began = time.perf_counter()
        broker.verifier.verify(token)
        first_use.append(time.perf_counter() - began)
    first_use_us = statistics.median(first_use) * 1e6
    repeat_us = micro_seconds(lambda: broker.verifier.verify(fresh[-1]), 500)
    registered = broker.config.workloads["demo-pipeline"]
    subject = PolicyInput.of(
        workload={
            **workload_facts(registered),
            "id": "demo-pipeline",
            "issuer": registered.issuer,
            "subject": registered.subject,
            "claims": getattr(principal, "claims", {}),
        },
        request={"profile": "demo-db", "scopes": ["read"], "ttl_seconds": TTL},
        profile=broker.config.profiles["demo-db"],
        now=broker.clock(),
    )
    decision = broker.policy.decide(subject)
    decide_us = micro_seconds(lambda: broker.policy.decide(subject), 2000)
    report.sections["per_request_cost"] = {
        "jwt_verify_first_use_us": round(first_use_us, 1),
        "jwt_verify_repeat_us": round(repeat_us, 1),
        "policy_decide_us": round(decide_us, 1),
        "policy_decision": decision.effect,
        "policy_rules": len(broker.policy.rules),
    }
    report.row(
        "JWT verification (TokenVerifier.verify, dev ES256 token): first use / again",
        f"{first_use_us:.0f} µs / {repeat_us:.0f} µs",
    )
    report.row(
        f"policy evaluation (PolicyEngine.decide, demo policy → {decision.effect})",
        f"{decide_us:.0f} µs",
    )


def claim_seconds(client: redis.Redis, live: int, due: int) -> float:
    """Median time of ExpiryLedger.claim_due taking `due` entries out of `live`."""
    key = "bench:scratch-ledger"
    ledger = ExpiryLedger(client, key)
    now = 1_000_000.0
    times: list[float] = []
    for _ in range(7):
        client.delete(key)
        entries = {f"g{i}": (now if i < due else now + 3600 + i) for i in range(live)}
        for start in range(0, live, 5000):
            chunk = dict(list(entries.items())[start : start + 5000])
            client.zadd(key, chunk)
        began = time.perf_counter()
        claimed = ledger.claim_due(now, limit=due, redelivery_seconds=30)
        times.append(time.perf_counter() - began)
        assert len(claimed) == due
    client.delete(key)
    return statistics.median(times)


@pytest.mark.bench
def test_sweeper_cost(settings: Settings, report: Report) -> None:
    client = redis.Redis.from_url(settings.redis_url)
    large, small = claim_seconds(client, 10_000, 1_000), claim_seconds(client, 1_000, 1_000)
    ratio = large / small
    passed = ratio <= 1.5
    report.sections["sweeper"] = {
        "what": "ExpiryLedger.claim_due taking 1,000 due entries, median of 7 (scratch key)",
        "live_10000_ms": round(large * 1000, 2),
        "live_1000_ms": round(small * 1000, 2),
        "ratio": round(ratio, 2),
        "pass": passed,
    }
    report.row(
        "sweeper: claim 1,000 due of 10,000 vs of 1,000 live grants",
        f"{large * 1000:.1f} ms vs {small * 1000:.1f} ms ({ratio:.2f}×)",
        "independent of live grants (≤ 1.5×)",
        passed,
    )


MEMORY_TASKS = 20
MEMORY_GRANTS_PER_TASK = 10


def key_sizes(client: redis.Redis, prefix: str) -> dict[bytes, int]:
    """`MEMORY USAGE` of every broker key, every element counted (SAMPLES 0)."""
    return {
        key: int(client.memory_usage(key, samples=0) or 0)
        for key in client.scan_iter(match=f"{prefix}:*", count=1000)
    }


def split_audit(sizes: dict[bytes, int], prefix: str) -> tuple[int, int]:
    """(bytes of state keys, bytes of audit keys): the audit log is retained history, not state."""
    audit = f"{prefix}:audit".encode()
    in_audit = sum(size for key, size in sizes.items() if key.startswith(audit))
    return sum(sizes.values()) - in_audit, in_audit


@pytest.mark.bench
def test_redis_memory_per_live_grant(
    http: httpx.Client,
    broker: Broker,
    settings: Settings,
    pipeline_auth: dict[str, str],
    report: Report,
) -> None:
    client = redis.Redis.from_url(settings.redis_url)
    prefix = settings.key_prefix
    tasks = open_tasks(http, pipeline_auth, MEMORY_TASKS)
    before_state, before_audit = split_audit(key_sizes(client, prefix), prefix)
    for task_id in tasks:
        for _ in range(MEMORY_GRANTS_PER_TASK):
            response = http.post(
                f"/v1/tasks/{task_id}/grants",
                json=grant_body("demo-token", TTL),
                headers=pipeline_auth,
            )
            assert response.status_code == 201, response.text
    after_state, after_audit = split_audit(key_sizes(client, prefix), prefix)
    complete_tasks(http, pipeline_auth, tasks)
    wait_for(lambda: broker.ledger.size() == 0, timeout=120, what="revocations")
    grants = MEMORY_TASKS * MEMORY_GRANTS_PER_TASK
    per_grant = (after_state - before_state) / grants
    audit_per_grant = (after_audit - before_audit) / grants
    assert per_grant > 0, "issuing grants recorded nothing in Redis"
    report.sections["redis_memory"] = {
        "what": f"MEMORY USAGE (SAMPLES 0) summed over the broker's keys before and after "
        f"{grants} live demo-token grants in {MEMORY_TASKS} tasks",
        "state_bytes_per_live_grant": round(per_grant),
        "audit_bytes_per_grant": round(audit_per_grant),
    }
    report.row(
        "Redis memory per live grant (state keys; audit history separately)",
        f"{per_grant / 1024:.1f} KiB state + {audit_per_grant / 1024:.1f} KiB audit",
    )

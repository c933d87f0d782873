"""Abuse: per-workload rate limits, oversized bodies and headers, and `jti` replay."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jwt
import pytest
import redis
from fastapi.testclient import TestClient
from tests.unit.api.conftest import bearer

from jitbroker.app import MAX_BODY_BYTES
from jitbroker.bootstrap import Broker
from jitbroker.identity.dev_issuer import DevIssuer
from jitbroker.identity.verifier import MAX_TOKEN_BYTES

TASK = {"purpose": "abuse"}


def assert_problem(response: Any, status: int, mentions: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status
    assert mentions in body["detail"]


def limit_to(broker: Broker, per_minute: int) -> None:
    broker.settings = broker.settings.model_copy(update={"rate_limit_per_minute": per_minute})


def single_use(broker: Broker, issuer: str = "test-workloads") -> None:
    config = broker.config.issuers[issuer]
    broker.config.issuers[issuer] = config.model_copy(update={"single_use_jti": True})


def test_workload_over_its_budget_gets_429_with_retry_after(
    client: TestClient, broker: Broker, pipeline_auth: dict[str, str]
) -> None:
    """Pass: the first N requests in a minute succeed, the next is 429 with 1..60 s Retry-After."""
    limit_to(broker, 3)
    for _ in range(3):
        assert client.post("/v1/tasks", json=TASK, headers=pipeline_auth).status_code == 201
    response = client.post("/v1/tasks", json=TASK, headers=pipeline_auth)
    assert_problem(response, 429, "3 requests per minute")
    assert response.json()["type"].endswith("/rate-limited")
    assert 1 <= int(response.headers["Retry-After"]) <= 60


def test_rate_limit_is_per_workload(
    client: TestClient,
    broker: Broker,
    pipeline_auth: dict[str, str],
    other_auth: dict[str, str],
) -> None:
    """Pass: one workload exhausting its budget does not limit another workload."""
    limit_to(broker, 1)
    assert client.post("/v1/tasks", json=TASK, headers=pipeline_auth).status_code == 201
    assert client.post("/v1/tasks", json=TASK, headers=pipeline_auth).status_code == 429
    assert client.post("/v1/tasks", json=TASK, headers=other_auth).status_code == 201


def test_rate_limit_window_resets(
    client: TestClient, broker: Broker, pipeline_auth: dict[str, str]
) -> None:
    """Pass: once the window's key expires the workload is served again."""
    limit_to(broker, 1)
    assert client.post("/v1/tasks", json=TASK, headers=pipeline_auth).status_code == 201
    assert client.post("/v1/tasks", json=TASK, headers=pipeline_auth).status_code == 429
    broker.redis.delete(f"{broker.settings.key_prefix}:ratelimit:demo-pipeline")
    assert client.post("/v1/tasks", json=TASK, headers=pipeline_auth).status_code == 201


def test_zero_disables_the_rate_limit(
    client: TestClient, broker: Broker, pipeline_auth: dict[str, str]
) -> None:
    """Pass: with `rate_limit_per_minute = 0` nothing is counted and nothing is refused."""
    limit_to(broker, 0)
    for _ in range(5):
        assert client.post("/v1/tasks", json=TASK, headers=pipeline_auth).status_code == 201
    assert not broker.redis.keys(f"{broker.settings.key_prefix}:ratelimit:*")


def test_humans_are_not_counted_against_workload_limits(
    client: TestClient, broker: Broker, human_auth: dict[str, str]
) -> None:
    """Pass: the per-workload limiter ignores human principals."""
    limit_to(broker, 1)
    for _ in range(3):
        assert client.get("/v1/approvals", headers=human_auth).status_code < 429


def test_default_rate_limit_is_600_per_minute(broker: Broker) -> None:
    assert type(broker.settings)().rate_limit_per_minute == 600


@pytest.mark.parametrize("size", [MAX_BODY_BYTES + 1, 10 * MAX_BODY_BYTES])
def test_oversized_body_by_content_length_is_413(
    client: TestClient, pipeline_auth: dict[str, str], size: int
) -> None:
    """Pass: a declared body over 64 KiB is refused 413 before the app reads it."""
    body = b'{"purpose": "' + b"x" * size + b'"}'
    response = client.post(
        "/v1/tasks", content=body, headers={**pipeline_auth, "content-type": "application/json"}
    )
    assert_problem(response, 413, f"larger than {MAX_BODY_BYTES} bytes")
    assert response.json()["type"].endswith("/payload-too-large")


def test_oversized_streamed_body_without_length_is_413(
    client: TestClient, pipeline_auth: dict[str, str]
) -> None:
    """Pass: a chunked body (no Content-Length) is cut off with 413 once it passes 64 KiB."""

    def chunks() -> Any:
        yield b'{"purpose": "'
        for _ in range(20):
            yield b"x" * 8192
        yield b'"}'

    response = client.post(
        "/v1/tasks", content=chunks(), headers={**pipeline_auth, "content-type": "application/json"}
    )
    assert_problem(response, 413, f"larger than {MAX_BODY_BYTES} bytes")


def test_body_just_under_the_limit_is_not_refused_for_size(
    client: TestClient, pipeline_auth: dict[str, str]
) -> None:
    """Pass: a body within the limit reaches validation (422 for a too-long purpose, not 413)."""
    body = b'{"purpose": "' + b"x" * (MAX_BODY_BYTES - 100) + b'"}'
    response = client.post(
        "/v1/tasks", content=body, headers={**pipeline_auth, "content-type": "application/json"}
    )
    assert response.status_code != 413
    assert response.status_code < 500


def test_oversized_authorization_header_is_401(client: TestClient) -> None:
    """Pass: a bearer token over 8 KiB is refused 401 naming the cap, never 5xx."""
    response = client.post("/v1/tasks", json=TASK, headers=bearer("a" * (MAX_TOKEN_BYTES + 1)))
    assert_problem(response, 401, f"larger than {MAX_TOKEN_BYTES} bytes")


def test_token_reuse_is_allowed_by_default(
    client: TestClient, pipeline_auth: dict[str, str]
) -> None:
    """Pass: bearer tokens are reusable within their lifetime unless the issuer says otherwise."""
    for _ in range(3):
        assert client.post("/v1/tasks", json=TASK, headers=pipeline_auth).status_code == 201


def test_single_use_issuer_refuses_a_replayed_jti(
    client: TestClient, broker: Broker, pipeline_auth: dict[str, str]
) -> None:
    """Pass: with `single_use_jti` the second use of a token is 401 and audited as auth.failed."""
    single_use(broker)
    assert client.post("/v1/tasks", json=TASK, headers=pipeline_auth).status_code == 201
    response = client.post("/v1/tasks", json=TASK, headers=pipeline_auth)
    assert_problem(response, 401, "already been used")
    failed = [e for e in broker.audit.read_all() if e.type == "auth.failed"]
    assert failed
    assert "already been used" in (failed[-1].reason or "")


def test_single_use_jti_expires_with_the_token(
    client: TestClient, broker: Broker, demo_config_dir: Path
) -> None:
    """Pass: the used-jti marker lives until the token's exp plus leeway, then Redis drops it."""
    single_use(broker)
    token = DevIssuer(demo_config_dir / "keys").workload_token(
        broker.config, "demo-pipeline", ttl_seconds=120
    )
    assert client.post("/v1/tasks", json=TASK, headers=bearer(token)).status_code == 201
    (key,) = broker.redis.keys(f"{broker.settings.key_prefix}:jti:*")
    leeway = broker.config.issuers["test-workloads"].leeway_seconds
    assert 120 < broker.redis.ttl(key) <= 120 + leeway


def test_single_use_issuer_accepts_fresh_tokens(
    client: TestClient, broker: Broker, demo_config_dir: Path
) -> None:
    """Pass: distinct `jti`s from the same workload are each accepted once."""
    single_use(broker)
    issuer = DevIssuer(demo_config_dir / "keys")
    for _ in range(3):
        token = issuer.workload_token(broker.config, "demo-pipeline")
        assert client.post("/v1/tasks", json=TASK, headers=bearer(token)).status_code == 201


def test_single_use_issuer_refuses_tokens_without_jti(
    client: TestClient, broker: Broker, demo_config_dir: Path
) -> None:
    """Pass: a single-use issuer's token with no `jti` cannot be tracked, so it is refused 401."""
    single_use(broker)
    dev = DevIssuer(demo_config_dir / "keys")
    claims = jwt.decode(
        dev.workload_token(broker.config, "demo-pipeline"), options={"verify_signature": False}
    )
    del claims["jti"]
    key = dev.key_path("test-workloads").read_bytes()
    token = jwt.encode(claims, key, algorithm="ES256", headers={"kid": "dev-test-workloads-1"})
    response = client.post("/v1/tasks", json=TASK, headers=bearer(token))
    assert_problem(response, 401, "jti")


def test_single_use_is_per_issuer(
    client: TestClient, broker: Broker, pipeline_auth: dict[str, str]
) -> None:
    """Pass: marking the human issuer single-use leaves workload tokens reusable."""
    single_use(broker, "test-humans")
    for _ in range(2):
        assert client.post("/v1/tasks", json=TASK, headers=pipeline_auth).status_code == 201


def test_concurrent_replays_of_a_single_use_token_admit_exactly_one(
    client: TestClient, broker: Broker, pipeline_auth: dict[str, str]
) -> None:
    """Pass: eight simultaneous uses of one single-use token give exactly one 201; the other
    seven are 401 (the used-jti marker is set atomically, not checked then set)."""
    single_use(broker)
    barrier = threading.Barrier(8)

    def use_token() -> int:
        barrier.wait(timeout=10)
        return client.post("/v1/tasks", json=TASK, headers=pipeline_auth).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = sorted(pool.map(lambda _: use_token(), range(8)))
    assert statuses == [201] + [401] * 7


def test_a_used_single_use_token_is_refused_on_every_endpoint(
    client: TestClient, broker: Broker, pipeline_auth: dict[str, str], task_id: str
) -> None:
    """Pass: once a single-use token has been spent (here on opening a task), a read with it is
    401 too: the jti is consumed by any authenticated call, not per endpoint."""
    single_use(broker)
    assert client.post("/v1/tasks", json=TASK, headers=pipeline_auth).status_code == 201
    assert_problem(client.get(f"/v1/tasks/{task_id}", headers=pipeline_auth), 401, "already")


def test_single_use_human_tokens_are_refused_on_replay(
    client: TestClient, broker: Broker, human_auth: dict[str, str]
) -> None:
    """Pass: a human issuer marked single-use refuses the second use of an approver token 401."""
    single_use(broker, "test-humans")
    assert client.get("/v1/approvals", headers=human_auth).status_code == 200
    assert_problem(client.get("/v1/approvals", headers=human_auth), 401, "already been used")


def test_single_use_check_fails_closed_when_redis_is_down(
    client: TestClient,
    broker: Broker,
    pipeline_auth: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pass: if the used-jti marker cannot be written, the token is refused 503 problem+json
    with Retry-After, never accepted unchecked."""
    single_use(broker)
    limit_to(broker, 0)

    def redis_down(*args: Any, **kwargs: Any) -> None:
        raise redis.ConnectionError("connection refused")

    monkeypatch.setattr(broker.redis, "set", redis_down)
    response = client.post("/v1/tasks", json=TASK, headers=pipeline_auth)
    assert_problem(response, 503, "could not record the token's jti")
    assert "Retry-After" in response.headers

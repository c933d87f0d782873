"""The API's dependencies: no thread-pool hop unless they may block, never a verification on the
event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import anyio.to_thread
import pytest
from fastapi.testclient import TestClient

from jitbroker.bootstrap import Broker
from jitbroker.identity.schemas import Principal
from jitbroker.identity.verifier import TokenVerifier

GRANT = {"profile": "demo-db", "scopes": ["read"], "ttl_seconds": 60, "justification": "unit"}


@pytest.fixture
def hops(monkeypatch: pytest.MonkeyPatch) -> list[Callable[..., Any]]:
    """Every function the app hands to the thread pool, in order."""
    handed: list[Callable[..., Any]] = []
    run_sync = anyio.to_thread.run_sync

    async def counting(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        handed.append(func)
        return await run_sync(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counting)
    return handed


def test_issuing_a_grant_takes_three_thread_hops(
    client: TestClient,
    pipeline_auth: dict[str, str],
    open_task_id: str,
    hops: list[Callable[..., Any]],
) -> None:
    """Rate limit (Redis), the sync endpoint, FastAPI's response validation; was 6."""
    response = client.post(f"/v1/tasks/{open_task_id}/grants", json=GRANT, headers=pipeline_auth)

    assert response.status_code == 201
    assert len(hops) <= 3


def test_remembered_human_token_needs_no_hop_to_authenticate(
    client: TestClient, admin_auth: dict[str, str], hops: list[Callable[..., Any]]
) -> None:
    """No rate limit for people and no single-use `jti`: nothing left that could block."""
    assert client.get("/v1/workloads/demo-pipeline", headers=admin_auth).status_code == 200
    hops.clear()

    assert client.get("/v1/workloads/demo-pipeline", headers=admin_auth).status_code == 200

    # the sync endpoint and its response validation
    assert len(hops) <= 2


def test_tokens_are_never_verified_on_the_event_loop(
    client: TestClient,
    broker: Broker,
    pipeline_auth: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    on_loop: list[bool] = []
    verify = TokenVerifier.verify

    def watched(self: TokenVerifier, token: str) -> Principal:
        try:
            asyncio.get_running_loop()
            on_loop.append(True)
        except RuntimeError:
            on_loop.append(False)
        return verify(self, token)

    monkeypatch.setattr(TokenVerifier, "verify", watched)

    client.post("/v1/tasks", json={"purpose": "unit"}, headers=pipeline_auth)
    client.post("/v1/tasks", json={"purpose": "unit"}, headers={"Authorization": "Bearer x.y.z"})

    assert on_loop == [False, False]


def test_missing_bearer_token_is_still_a_401(client: TestClient) -> None:
    response = client.post("/v1/tasks", json={"purpose": "unit"})

    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"

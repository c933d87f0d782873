"""A scripted broker API behind httpx.MockTransport, for the SDK's and `exec`'s logic."""

from __future__ import annotations

import json
import threading
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

TASK_ID = "tsk_unit"
GRANT_ID = "grt_unit"
SECRET = "s3cr3t-password-value"

Scripted = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


def grant_body(state: str, **extra: Any) -> dict[str, Any]:
    """A grant as the API shows it."""
    return {
        "grant_id": GRANT_ID,
        "task_id": TASK_ID,
        "workload": "demo-pipeline",
        "profile": "demo-db",
        "engine": "database",
        "scopes": ["read"],
        "state": state,
        "destination": "postgres://db.internal:5432/orders",
        "justification": "unit",
        "decision": {"effect": "allow", "rule": "demo-db-read", "reason": "ok"},
        "requested_ttl_seconds": 600,
        "lease_ttl_seconds": 600,
        "created_at": "2025-01-01T00:00:00Z",
        "votes": [],
        **extra,
    }


def issued(status: int = 201) -> httpx.Response:
    body = grant_body(
        "issued",
        expires_at="2025-01-01T00:10:00+00:00",
        credential={"username": "v-demo-ro-abc", "password": SECRET},
    )
    return httpx.Response(status, json=body)


def pending(status: int = 202) -> httpx.Response:
    return httpx.Response(
        status,
        json=grant_body(
            "pending_approval",
            decision={"effect": "require_approval", "rule": "demo-db-elevated", "reason": "dba"},
            approval={
                "rule": "demo-db-elevated",
                "approvals_required": 1,
                "approver_groups": ["dba"],
                "expires_at": "2025-01-01T00:15:00Z",
            },
        ),
    )


def problem(
    status: int, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> httpx.Response:
    return httpx.Response(
        status,
        json={"title": "problem", "status": status, "detail": detail, **extra},
        headers={"content-type": "application/problem+json", **(headers or {})},
    )


@dataclass
class ScriptedApi:
    """Answers each (method, path) from its script in order; tasks open, beat and complete."""

    scripts: dict[tuple[str, str], deque[Scripted]] = field(
        default_factory=lambda: defaultdict(deque)
    )
    requests: list[httpx.Request] = field(default_factory=list)
    heartbeat: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def script(self, method: str, path: str, *answers: Scripted) -> None:
        self.scripts[(method, path)].extend(answers)

    def calls(self, method: str, path: str) -> list[httpx.Request]:
        with self.lock:
            return [r for r in self.requests if r.method == method and r.url.path == path]

    def handle(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.requests.append(request)
            script = self.scripts.get((request.method, request.url.path))
            answer = script.popleft() if script else None
        if isinstance(answer, Exception):
            raise answer
        if callable(answer):
            return answer(request)
        if answer is not None:
            return answer
        return self.default(request)

    def default(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "POST" and path == "/v1/tasks":
            body = json.loads(request.content)
            return httpx.Response(201, json={"task_id": TASK_ID, "state": "active", **body})
        if path.endswith("/heartbeat"):
            self.heartbeat.set()
            return httpx.Response(200, json={"task_id": TASK_ID, "state": "active"})
        if path.endswith("/complete"):
            return httpx.Response(
                200,
                json={
                    "task_id": TASK_ID,
                    "state": "completed",
                    "revocations": [{"grant_id": GRANT_ID, "state": "revoked"}],
                },
            )
        if path.endswith("/revoke"):
            return httpx.Response(200, json=grant_body("revoking"))
        return problem(404, f"unscripted {request.method} {path}")


@dataclass
class FakeClock:
    """Monotonic time that moves only when a test says so."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

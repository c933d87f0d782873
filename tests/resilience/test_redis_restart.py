"""Scenario 1: the broker's Redis (state and Celery queue, AOF with an fsync per write) is
SIGKILLed under issuance load and started again on the same directory and port."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from jitbroker.app import create_app
from jitbroker.bootstrap import Broker
from jitbroker.grants.schemas import GrantState
from tests.integration.support import role_exists, wait_for
from tests.resilience.support import DB_READ, Aftermath, RedisServer, live_api, problem_of

pytestmark = [pytest.mark.integration, pytest.mark.resilience]

LOAD_THREADS = 2


@dataclass
class Answer:
    at: float
    what: str
    response: httpx.Response


@dataclass
class IssuanceLoad:
    """Threads that each open a task and ask for a demo-db grant, again and again."""

    url: str
    auth: dict[str, str]
    answers: list[Answer] = field(default_factory=list)
    task_ids: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, threads: int) -> None:
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]
        for thread in self.threads:
            thread.start()

    def halt(self) -> None:
        """Stop the load and wait for the requests in flight to be answered."""
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)

    def run(self) -> None:
        with httpx.Client(base_url=self.url, headers=self.auth, timeout=30) as http:
            task_id: str | None = None
            while not self.stop.is_set():
                if task_id is None:
                    task = http.post("/v1/tasks", json={"purpose": "redis restart"})
                    self._note("task", task)
                    if task.status_code == 201:
                        task_id = task.json()["task_id"]
                        with self._lock:
                            self.task_ids.append(task_id)
                    continue
                # Many grants per task: most requests meet the outage inside the grant path.
                self._note("grant", http.post(f"/v1/tasks/{task_id}/grants", json=DB_READ))

    def _note(self, what: str, response: httpx.Response) -> None:
        with self._lock:
            self.answers.append(Answer(time.monotonic(), what, response))

    def issued(self, since: float = 0.0) -> list[dict[str, Any]]:
        with self._lock:
            answers = list(self.answers)
        return [
            a.response.json()
            for a in answers
            if a.what == "grant" and a.response.status_code == 201 and a.at >= since
        ]

    def refused(self, since: float, what: str = "") -> list[httpx.Response]:
        with self._lock:
            answers = list(self.answers)
        return [
            a.response
            for a in answers
            if a.at >= since and a.response.status_code >= 400 and what in a.what
        ]


@pytest.fixture
def load(broker: Broker, pipeline_auth: dict[str, str]) -> Iterator[IssuanceLoad]:
    """Issuance load against a real uvicorn (its own Broker: no rate limit for the load)."""
    unlimited = dataclasses.replace(
        broker, settings=broker.settings.model_copy(update={"rate_limit_per_minute": 0})
    )
    with live_api(create_app(broker=unlimited)) as url:
        running = IssuanceLoad(url, pipeline_auth)
        running.start(LOAD_THREADS)
        try:
            yield running
        finally:
            running.halt()


def test_redis_killed_and_restarted_under_load_loses_no_grant_and_the_broker_recovers(
    load: IssuanceLoad,
    broker: Broker,
    own_redis: RedisServer,
    pipeline_auth: dict[str, str],
    aftermath: Aftermath,
) -> None:
    """Pass: Redis is SIGKILLed while grants are being issued and restarted on the same AOF
    directory and port; every answer is a 201 or a 503 problem+json with Retry-After (never a
    500, never a secret in an error); after the restart the same API process, worker and
    scheduler issue again (5 more 201s) without being restarted; every grant that answered 201
    is still recorded `issued` with its PostgreSQL role alive, and once the tasks complete each
    one is revoked with a receipt and the aftermath check holds."""
    wait_for(lambda: len(load.issued()) >= 5, timeout=60, what="5 grants before the crash")

    killed_at = time.monotonic()
    own_redis.kill()
    wait_for(
        lambda: len(load.refused(since=killed_at, what="grant")) >= 6,
        timeout=30,
        what="grant requests refused while Redis is down",
    )
    own_redis.start()
    restarted_at = time.monotonic()
    wait_for(
        lambda: len(load.issued(since=restarted_at)) >= 5,
        timeout=60,
        what="5 grants issued after the restart",
    )
    load.halt()

    statuses = {a.response.status_code for a in load.answers}
    assert statuses <= {201, 503}, statuses
    issued = load.issued()
    passwords = [g["credential"]["password"] for g in issued]
    for refused in load.refused(since=killed_at):
        problem = problem_of(refused)
        assert problem["type"].endswith(("state-unavailable", "unavailable")), problem
        assert refused.headers["Retry-After"].isdigit()
        assert not any(p in refused.text for p in passwords)
    for grant in issued:
        recorded = broker.grants.get(grant["grant_id"])
        assert recorded is not None, f"{grant['grant_id']} answered 201 but is lost"
        assert recorded.state == GrantState.issued
        assert recorded.lease_ref is not None
        assert role_exists(grant["credential"]["username"])

    with httpx.Client(base_url=load.url, headers=pipeline_auth, timeout=60) as http:
        for task_id in load.task_ids:
            http.post(f"/v1/tasks/{task_id}/complete")
    aftermath.check(issued)

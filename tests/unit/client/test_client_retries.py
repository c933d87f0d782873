"""Retries keep one Idempotency-Key per credential call; only safe failures are retried."""

from __future__ import annotations

import httpx
import pytest
from tests.event_loop import run_in_fresh_loop
from tests.unit.client.scripted_api import (
    GRANT_ID,
    TASK_ID,
    FakeClock,
    ScriptedApi,
    grant_body,
    issued,
    pending,
    problem,
)

from jitbroker.client import (
    ApprovalRequired,
    ApprovalTimedOut,
    AsyncBroker,
    Broker,
    BrokerError,
    BrokerUnavailable,
    Credential,
    Denied,
    RetryPolicy,
)

GRANTS = f"/v1/tasks/{TASK_ID}/grants"
GRANT = f"/v1/grants/{GRANT_ID}"


def keys(api: ScriptedApi) -> list[str]:
    return [r.headers["Idempotency-Key"] for r in api.calls("POST", GRANTS)]


def connection_refused() -> httpx.ConnectError:
    return httpx.ConnectError("connection refused")


def test_unavailable_broker_is_retried_with_the_same_key_after_retry_after(
    api: ScriptedApi, broker: Broker, sleeps: list[float]
) -> None:
    api.script("POST", GRANTS, problem(503, "OpenBao unavailable", {"Retry-After": "2"}), issued())

    with broker.task("unit", heartbeat=None) as task:
        credential = task.credential("demo-db", scopes=["read"], ttl=600)

    assert credential.username == "v-demo-ro-abc"
    assert len(keys(api)) == 2
    assert len(set(keys(api))) == 1
    assert sleeps == [2.0]


def test_connection_error_is_retried_with_the_same_key(
    api: ScriptedApi, broker: Broker, sleeps: list[float]
) -> None:
    api.script("POST", GRANTS, connection_refused(), httpx.ReadTimeout("slow"), issued())

    with broker.task("unit", heartbeat=None) as task:
        task.credential("demo-db")

    assert len(keys(api)) == 3
    assert len(set(keys(api))) == 1
    assert sleeps == [0.5, 1.0]


def test_request_still_in_progress_is_retried_until_it_answers(
    api: ScriptedApi, broker: Broker, sleeps: list[float]
) -> None:
    in_progress = problem(409, "still being processed", {"Retry-After": "1"})
    api.script("POST", GRANTS, in_progress, issued())

    with broker.task("unit", heartbeat=None) as task:
        task.credential("demo-db")

    assert len(set(keys(api))) == 1
    assert sleeps == [1.0]


def test_each_credential_call_has_its_own_key(api: ScriptedApi, broker: Broker) -> None:
    api.script("POST", GRANTS, issued(), issued())

    with broker.task("unit", heartbeat=None) as task:
        task.credential("demo-db")
        task.credential("demo-db")

    assert len(set(keys(api))) == 2


def test_backoff_doubles_and_is_capped_also_for_a_long_retry_after() -> None:
    policy = RetryPolicy(attempts=6, first_delay=0.5, max_delay=4.0)

    assert [policy.delay(attempt, None) for attempt in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert policy.delay(1, 30.0) == 4.0


def test_broker_unavailable_after_the_last_attempt(
    api: ScriptedApi, broker: Broker, sleeps: list[float]
) -> None:
    api.script("POST", GRANTS, *[problem(503, "backlog")] * 4)

    with broker.task("unit", heartbeat=None) as task, pytest.raises(BrokerUnavailable) as caught:
        task.credential("demo-db")

    assert "after 4 attempts" in caught.value.message
    assert caught.value.status == 503
    assert len(sleeps) == 3


def test_policy_denial_carries_the_rule_and_reason(api: ScriptedApi, broker: Broker) -> None:
    api.script("POST", GRANTS, problem(403, "ttl over the rule's max", rule="demo-db-read"))

    with broker.task("unit", heartbeat=None) as task, pytest.raises(Denied) as caught:
        task.credential("demo-db", ttl=99999)

    assert caught.value.rule == "demo-db-read"
    assert caught.value.reason == "ttl over the rule's max"
    assert len(keys(api)) == 1


def test_invalid_request_is_not_retried(api: ScriptedApi, broker: Broker) -> None:
    api.script("POST", GRANTS, problem(422, "unknown profile"))

    with broker.task("unit", heartbeat=None) as task, pytest.raises(BrokerError) as caught:
        task.credential("nope")

    assert caught.value.status == 422
    assert len(keys(api)) == 1


def test_opening_a_task_is_retried_when_the_request_never_left(
    api: ScriptedApi, broker: Broker
) -> None:
    api.script("POST", "/v1/tasks", connection_refused())

    with broker.task("unit", heartbeat=None) as task:
        assert task.task_id == TASK_ID

    assert len(api.calls("POST", "/v1/tasks")) == 2


def test_opening_a_task_is_not_resent_after_a_timeout(api: ScriptedApi, broker: Broker) -> None:
    api.script("POST", "/v1/tasks", httpx.ReadTimeout("slow"))

    with pytest.raises(BrokerUnavailable) as caught, broker.task("unit", heartbeat=None):
        pass

    assert caught.value.maybe_processed
    assert len(api.calls("POST", "/v1/tasks")) == 1


def test_pending_grant_is_long_polled_then_issued(api: ScriptedApi, broker: Broker) -> None:
    approved = httpx.Response(200, json=grant_body("approved"))
    api.script("POST", GRANTS, pending())
    api.script("GET", GRANT, pending(200), approved)
    api.script("POST", f"{GRANT}/issue", issued(200))
    seen: list[str] = []

    with broker.task("unit", heartbeat=None) as task:
        credential = task.credential(
            "demo-db", scopes=["write"], on_status=lambda status: seen.append(status.state)
        )

    assert credential.password
    polls = api.calls("GET", GRANT)
    assert [p.url.params["wait"] for p in polls] == ["25", "25"]
    assert seen == ["pending_approval", "pending_approval", "approved"]


def test_not_waiting_raises_approval_required_naming_the_grant(
    api: ScriptedApi, broker: Broker
) -> None:
    api.script("POST", GRANTS, pending())

    with broker.task("unit", heartbeat=None) as task, pytest.raises(ApprovalRequired) as caught:
        task.credential("demo-db", scopes=["write"], wait_for_approval=False)

    assert caught.value.grant_id == GRANT_ID
    assert caught.value.rule == "demo-db-elevated"
    assert caught.value.approver_groups == ["dba"]
    assert api.calls("GET", GRANT) == []


def test_approval_wait_times_out_at_the_callers_deadline(
    api: ScriptedApi, broker: Broker, clock: FakeClock
) -> None:
    def still_pending(request: httpx.Request) -> httpx.Response:
        clock.now += float(request.url.params["wait"])
        return pending(200)

    api.script("POST", GRANTS, pending())
    api.script("GET", GRANT, *[still_pending] * 10)

    with broker.task("unit", heartbeat=None) as task, pytest.raises(ApprovalTimedOut) as caught:
        task.credential("demo-db", scopes=["write"], approval_timeout=60)

    assert caught.value.grant_id == GRANT_ID
    assert [p.url.params["wait"] for p in api.calls("GET", GRANT)] == ["25", "25", "10"]


def test_approver_denial_names_the_approver_and_comment(api: ScriptedApi, broker: Broker) -> None:
    denied = grant_body(
        "denied",
        decision={"effect": "require_approval", "rule": "demo-db-elevated", "reason": "dba"},
        votes=[{"approver": "alice", "decision": "deny", "comment": "not during the freeze"}],
    )
    api.script("POST", GRANTS, pending())
    api.script("GET", GRANT, httpx.Response(200, json=denied))

    with broker.task("unit", heartbeat=None) as task, pytest.raises(Denied) as caught:
        task.credential("demo-db", scopes=["write"])

    assert caught.value.rule == "demo-db-elevated"
    assert caught.value.reason == "denied by alice: not during the freeze"


def test_replayed_grant_whose_secret_was_lost_is_revoked_and_asked_again(
    api: ScriptedApi, broker: Broker
) -> None:
    replay = httpx.Response(200, json=grant_body("issued"))
    api.script("POST", GRANTS, httpx.ReadTimeout("answer lost"), replay, issued())

    with broker.task("unit", heartbeat=None) as task:
        credential = task.credential("demo-db")

    first, again, fresh = keys(api)
    assert first == again != fresh
    assert len(api.calls("POST", f"{GRANT}/revoke")) == 1
    assert credential.password


def test_lost_answer_to_issue_revokes_the_grant(api: ScriptedApi, broker: Broker) -> None:
    api.script("POST", GRANTS, httpx.Response(200, json=grant_body("approved")))
    api.script("POST", f"{GRANT}/issue", httpx.ReadTimeout("answer lost"))

    with broker.task("unit", heartbeat=None) as task, pytest.raises(BrokerUnavailable):
        task.credential("demo-db", scopes=["write"])

    assert len(api.calls("POST", f"{GRANT}/issue")) == 1
    assert len(api.calls("POST", f"{GRANT}/revoke")) == 1


def test_async_client_retries_with_the_same_key(
    api: ScriptedApi, async_broker: AsyncBroker, sleeps: list[float]
) -> None:
    api.script("POST", GRANTS, problem(503, "unavailable", {"Retry-After": "3"}), issued())

    async def fetch() -> Credential:
        async with async_broker.task("unit", heartbeat=None) as task:
            return await task.credential("demo-db")

    credential = run_in_fresh_loop(fetch())

    assert credential.username == "v-demo-ro-abc"
    assert len(keys(api)) == 2
    assert len(set(keys(api))) == 1
    assert sleeps == [3.0]

"""The task context manager: heartbeats while open, completes (and so revokes) on every exit."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest
from tests.event_loop import run_in_fresh_loop
from tests.unit.client.scripted_api import SECRET, TASK_ID, ScriptedApi, issued, problem

from jitbroker.client import AsyncBroker, AsyncTask, Broker, BrokerUnavailable, Task

COMPLETE = f"/v1/tasks/{TASK_ID}/complete"
HEARTBEAT = f"/v1/tasks/{TASK_ID}/heartbeat"


def wait_until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        time.sleep(0.01)


def call_tool_that_fails(task: Task) -> None:
    task.credential("demo-db")
    raise RuntimeError("tool call failed")


async def call_tool_that_fails_async(task: AsyncTask) -> None:
    async with task:
        await task.credential("demo-db")
        raise RuntimeError("tool call failed")


def test_task_is_completed_with_wait_when_the_body_raises(api: ScriptedApi, broker: Broker) -> None:
    api.script("POST", f"/v1/tasks/{TASK_ID}/grants", issued())

    with pytest.raises(RuntimeError, match="tool call failed"), broker.task("unit") as task:
        call_tool_that_fails(task)

    (completion,) = api.calls("POST", COMPLETE)
    assert completion.url.params["wait"] == "true"
    assert task.completion is not None
    assert task.completion.confirmed


def test_open_asks_for_the_purpose_ttl_and_heartbeat(api: ScriptedApi, broker: Broker) -> None:
    with broker.task("reindex", ttl=900, heartbeat=30):
        pass

    (opened,) = api.calls("POST", "/v1/tasks")
    assert opened.read() == b'{"purpose":"reindex","ttl_seconds":900,"heartbeat_seconds":30}'
    assert opened.headers["Authorization"] == "Bearer workload-jwt"


def test_failed_completion_does_not_hide_the_body_exception(
    api: ScriptedApi, broker: Broker
) -> None:
    api.script("POST", COMPLETE, *[problem(503, "state store down")] * 4)

    with pytest.raises(RuntimeError, match="body"), broker.task("unit", heartbeat=None):
        raise RuntimeError("body")


def test_failed_completion_is_raised_after_a_clean_body(api: ScriptedApi, broker: Broker) -> None:
    api.script("POST", COMPLETE, *[problem(503, "state store down")] * 4)

    with pytest.raises(BrokerUnavailable), broker.task("unit", heartbeat=None):
        pass


def test_heartbeat_beats_while_open_and_stops_on_exit(api: ScriptedApi, broker: Broker) -> None:
    with broker.task("unit", heartbeat=1) as task:
        assert api.heartbeat.wait(timeout=5)
        assert task.heartbeat_running

    assert not task.heartbeat_running
    last_beat = max(i for i, r in enumerate(api.requests) if r.url.path == HEARTBEAT)
    first_completion = min(i for i, r in enumerate(api.requests) if r.url.path == COMPLETE)
    assert last_beat < first_completion


def test_heartbeat_stops_when_the_broker_ended_the_task(api: ScriptedApi, broker: Broker) -> None:
    api.script("POST", HEARTBEAT, problem(409, f"task {TASK_ID} is completed"))

    with broker.task("unit", heartbeat=1) as task:
        wait_until(lambda: task.ended_by_broker is not None)
        assert not task.heartbeat_running

    assert "is completed" in (task.ended_by_broker or "")


def test_secrets_never_reach_the_logs(
    api: ScriptedApi, broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    api.script("POST", f"/v1/tasks/{TASK_ID}/grants", httpx.ConnectError("refused"), issued())

    with broker.task("unit", heartbeat=None) as task:
        task.credential("demo-db")

    assert "retrying" in caplog.text
    assert SECRET not in caplog.text


def test_async_task_is_completed_when_the_body_raises(
    api: ScriptedApi, async_broker: AsyncBroker
) -> None:
    api.script("POST", f"/v1/tasks/{TASK_ID}/grants", issued())
    task = async_broker.task("unit", heartbeat=30)

    with pytest.raises(RuntimeError, match="tool call failed"):
        run_in_fresh_loop(call_tool_that_fails_async(task))

    assert len(api.calls("POST", COMPLETE)) == 1
    assert task.completion is not None
    assert task.completion.confirmed

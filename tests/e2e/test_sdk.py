"""The Python SDK against the real stack behind uvicorn: credentials live only inside the task."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field

import psycopg
import pytest

from jitbroker.client import ApprovalStatus, AsyncBroker, AsyncTask, Broker, Credential, Task
from tests.e2e.approver import Approver
from tests.event_loop import run_in_fresh_loop
from tests.integration.support import ROOT, pg_connect, role_exists

pytestmark = pytest.mark.integration


class ToolFailed(Exception):
    """The agent's tool call blew up half-way."""


@dataclass
class Held:
    """What the body of a task saw, for the checks after it."""

    credentials: list[Credential] = field(default_factory=list)


def assert_refused(credential: Credential) -> None:
    assert not role_exists(credential.username)
    with pytest.raises(psycopg.OperationalError, match="does not exist"):
        pg_connect(credential.username, credential.password)


def read_orders_then_fail(task: Task, held: Held) -> None:
    credential = task.credential("demo-db", scopes=["read"], ttl=300, justification="tool call")
    held.credentials.append(credential)
    with pg_connect(credential.username, credential.password) as conn:
        conn.execute("SELECT count(*) FROM jitbroker_demo.orders")
    raise ToolFailed("the tool call failed after reading")


def test_context_manager_revokes_the_credential_when_the_body_raises(
    live_url: str, pipeline_token: str
) -> None:
    held = Held()
    with Broker(live_url, token=pipeline_token) as broker:
        task = broker.task("agent tool call", ttl=300, heartbeat=5)
        with pytest.raises(ToolFailed), task:
            read_orders_then_fail(task, held)

    assert task.completion is not None
    assert task.completion.confirmed
    (credential,) = held.credentials
    assert_refused(credential)


def test_write_credential_waits_for_an_approver_then_writes(
    live_url: str, pipeline_token: str, alice_token: str
) -> None:
    approver = Approver(live_url, alice_token)
    thread = threading.Thread(target=approver.approve_first_request, name="approver")
    seen: list[ApprovalStatus] = []
    thread.start()
    with Broker(live_url, token=pipeline_token, long_poll_seconds=5) as broker:
        with broker.task("schema migration", ttl=600, heartbeat=10) as task:
            credential = task.credential(
                "demo-db",
                scopes=["write"],
                ttl=300,
                justification="add an index for the Q3 report",
                approval_timeout=60,
                on_status=seen.append,
            )
            with pg_connect(credential.username, credential.password) as conn:
                conn.execute("INSERT INTO jitbroker_demo.orders (item) VALUES ('sdk e2e')")
    thread.join(timeout=30)

    assert approver.errors == []
    assert approver.approved == [credential.grant_id]
    assert seen[0].state == "pending_approval"
    assert seen[0].rule == "demo-db-elevated"
    assert seen[-1].state == "approved"
    assert_refused(credential)


def test_async_client_revokes_on_exit(live_url: str, pipeline_token: str) -> None:
    async def use_credential() -> tuple[AsyncTask, Credential]:
        async with AsyncBroker(live_url, token=pipeline_token) as broker:
            async with broker.task("async agent", ttl=300, heartbeat=5) as task:
                credential = await task.credential("demo-db", ttl=120)
                assert role_exists(credential.username)
        return task, credential

    task, credential = run_in_fresh_loop(use_credential())

    assert task.completion is not None
    assert task.completion.confirmed
    assert_refused(credential)


def test_example_agent_answers_with_a_task_credential(live_url: str, pipeline_token: str) -> None:
    env = {**os.environ, "JITBROKER_API": live_url, "JITBROKER_TOKEN": pipeline_token}

    result = subprocess.run(
        [sys.executable, str(ROOT / "examples/agent/agent.py"), "What was ordered?"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Recent orders: ")
    assert "password=***" in result.stderr
    assert ": completed" in result.stderr

"""`jitbroker exec` as a pipeline runs it: a subprocess against the real stack behind uvicorn."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.e2e.approver import Approver
from tests.integration.support import pg_connect, role_exists, wait_for

pytestmark = pytest.mark.integration

EXEC = [sys.executable, "-m", "jitbroker", "exec"]
TASK_OPENED = re.compile(r"task (tsk_[0-9a-f]+) opened")


@pytest.fixture
def exec_env(live_url: str, pipeline_token: str) -> dict[str, str]:
    """The environment of a CI step: the broker's URL and the job's identity token."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "JITBROKER_"))}
    return {**inherited, "JITBROKER_API": live_url, "JITBROKER_TOKEN": pipeline_token}


@pytest.fixture
def api(live_url: str, pipeline_auth: dict[str, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_url, headers=pipeline_auth, timeout=15) as client:
        yield client


def task_of(stderr: str, api: httpx.Client) -> dict[str, object]:
    match = TASK_OPENED.search(stderr)
    assert match, stderr
    response = api.get(f"/v1/tasks/{match.group(1)}")
    assert response.status_code == 200, response.text
    task: dict[str, object] = response.json()
    return task


def assert_refused(username: str) -> None:
    assert not role_exists(username)
    with pytest.raises(psycopg.OperationalError, match="does not exist"):
        pg_connect(username, "any password")


def test_exec_runs_psql_with_the_credential_and_the_user_is_refused_afterwards(
    exec_env: dict[str, str], api: httpx.Client
) -> None:
    result = subprocess.run(
        [*EXEC, "--profile", "demo-db", "--scope", "read", "--purpose", "nightly export", "--"]
        + ["psql", "-X", "-At", "-c", "select 1", "-c", "select current_user"],
        env=exec_env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    one, username = result.stdout.split()
    assert one == "1"
    assert username.startswith("v-")
    assert "1 grant revoked and confirmed" in result.stderr
    task = task_of(result.stderr, api)
    assert task["state"] == "completed"
    assert [g["state"] for g in task["grants"]] == ["revoked"]  # type: ignore[attr-defined]
    assert_refused(username)


def test_exec_exits_with_the_commands_exit_code(
    exec_env: dict[str, str], api: httpx.Client
) -> None:
    result = subprocess.run(
        [*EXEC, "--profile", "demo-db", "--", "sh", "-c", "exit 7"],
        env=exec_env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 7, result.stderr
    assert task_of(result.stderr, api)["state"] == "completed"


def test_exec_killed_by_sigterm_still_completes_the_task_and_exits_143(
    exec_env: dict[str, str], api: httpx.Client, tmp_path: Path
) -> None:
    ready, user_file = tmp_path / "ready", tmp_path / "user"
    script = f'echo "$PGUSER" > {user_file}; touch {ready}; exec sleep 120'
    process = subprocess.Popen(
        [*EXEC, "--profile", "demo-db", "--scope", "read", "--", "sh", "-c", script],
        env=exec_env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(ready.exists, timeout=60, what="the command to start with its credential")
        username = user_file.read_text().strip()
        assert role_exists(username)

        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
        process.wait(timeout=10)

    assert process.returncode == 143, stderr
    assert "forwarded SIGTERM to the command" in stderr
    assert task_of(stderr, api)["state"] == "completed"
    assert_refused(username)


def test_exec_denied_by_policy_exits_125_without_running_the_command(
    exec_env: dict[str, str], api: httpx.Client, tmp_path: Path
) -> None:
    ran = tmp_path / "ran"
    result = subprocess.run(
        [*EXEC, "--profile", "demo-db", "--ttl", "1h", "--", "touch", str(ran)],
        env=exec_env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 125, result.stderr
    assert "denied (rule demo-db-read)" in result.stderr
    assert not ran.exists()
    assert task_of(result.stderr, api)["state"] == "completed"


def test_exec_waits_for_approval_with_a_status_line_then_runs(
    exec_env: dict[str, str], api: httpx.Client, live_url: str, alice_token: str
) -> None:
    approver = Approver(live_url, alice_token)
    thread = threading.Thread(target=approver.approve_first_request, name="approver")
    thread.start()
    result = subprocess.run(
        [*EXEC, "--profile", "demo-db:write", "--justification", "add an index", "--"]
        + ["psql", "-X", "-At", "-c", "insert into jitbroker_demo.orders (item) values ('exec')"],
        env=exec_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    thread.join(timeout=30)

    assert approver.errors == []
    assert result.returncode == 0, result.stderr
    assert "demo-db [write] waits for approval" in result.stderr
    assert "rule demo-db-elevated, 0/1 from dba" in result.stderr
    assert f"grant {approver.approved[0]} approved" in result.stderr
    assert task_of(result.stderr, api)["state"] == "completed"

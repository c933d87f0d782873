"""Helpers shared by the integration tests: polling with a deadline, PostgreSQL checks."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[2]
STATE_REDIS_URL = os.environ.get("JITBROKER_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
QUEUE_REDIS_URL = os.environ.get("JITBROKER_TEST_QUEUE_URL", "redis://127.0.0.1:6379/14")
POSTGRES_ADMIN = os.environ.get(
    "JITBROKER_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
POSTGRES_FOR_OPENBAO = (
    "postgresql://{{username}}:{{password}}@127.0.0.1:5432/postgres?sslmode=disable"
)
ROOT_TOKEN = "test-root"
T = TypeVar("T")


def wait_for(check: Callable[[], T], *, timeout: float = 15.0, what: str = "condition") -> T:
    """Poll `check` until it returns something truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as exc:  # noqa: BLE001 - keep polling until the deadline
            last = exc
        else:
            if last:
                return last
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pg_connect(username: str, password: str) -> psycopg.Connection[Any]:
    return psycopg.connect(
        host="127.0.0.1",
        port=5432,
        dbname="postgres",
        user=username,
        password=password,
        connect_timeout=5,
        autocommit=True,
    )


def role_exists(username: str) -> bool:
    with psycopg.connect(POSTGRES_ADMIN) as conn:
        row = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (username,)).fetchone()
    return row is not None

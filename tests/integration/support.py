"""Helpers shared by the integration tests: polling with a deadline, PostgreSQL checks, the
secret scan of Redis."""

from __future__ import annotations

import base64
import binascii
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
import redis

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
WEBHOOK_SECRET_ENV = "JITBROKER_TEST_WEBHOOK_SECRET"
WEBHOOK_SECRET = "integration-webhook-secret"
STEADY_WEBHOOK_PATH = "/hooks/steady"
FLAKY_WEBHOOK_PATH = "/hooks/flaky"
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


FLAKY_FAILURES = 2


@dataclass(frozen=True)
class ReceivedPost:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def document(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.body)
        return document


class WebhookReceiver(ThreadingHTTPServer):
    """Records every POST; the flaky path answers 500 to each delivery's first two attempts."""

    def __init__(self, port: int) -> None:
        super().__init__(("127.0.0.1", port), ReceiverHandler)
        self._lock = threading.Lock()
        self._posts: list[ReceivedPost] = []

    def answer(self, path: str, headers: dict[str, str], body: bytes) -> int:
        delivery = headers.get("x-jitbroker-delivery")
        with self._lock:
            earlier = [
                p
                for p in self._posts
                if p.path == path and p.headers.get("x-jitbroker-delivery") == delivery
            ]
            failing = path == FLAKY_WEBHOOK_PATH and len(earlier) < FLAKY_FAILURES
            status = 500 if failing else 200
            self._posts.append(ReceivedPost(path, headers, body, status))
        return status

    def posts_about(self, path: str, grant_id: str) -> list[ReceivedPost]:
        """Every POST to `path` whose notification is about `grant_id`, oldest first."""
        with self._lock:
            posts = list(self._posts)
        return [
            p for p in posts if p.path == path and p.document["fields"].get("grant_id") == grant_id
        ]

    def posts_of_event(self, path: str, event: str) -> list[ReceivedPost]:
        """Every POST to `path` of one notification event, oldest first."""
        with self._lock:
            posts = list(self._posts)
        return [p for p in posts if p.path == path and p.document["event"] == event]


class ReceiverHandler(BaseHTTPRequestHandler):
    server: WebhookReceiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        headers = {name.lower(): value for name, value in self.headers.items()}
        status = self.server.answer(self.path, headers, body)
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        """Keep the test output clean; the receiver's record is the log."""


def decoded(value: bytes | str) -> Iterator[str]:
    """The value as text, plus anything base64-wrapped inside it (Celery message bodies)."""
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    yield text
    try:
        document = json.loads(text)
    except ValueError:
        return
    yield from _wrapped(document)


def _wrapped(document: Any) -> Iterator[str]:
    if isinstance(document, dict):
        for key, item in document.items():
            if key == "body" and isinstance(item, str):
                try:
                    yield base64.b64decode(item, validate=True).decode("utf-8", "replace")
                except (binascii.Error, ValueError):
                    pass
            yield from _wrapped(item)
    elif isinstance(document, list):
        for item in document:
            if isinstance(item, str):
                yield from decoded(item)
            else:
                yield from _wrapped(item)
    elif isinstance(document, str) and document[:1] in "[{":
        yield from decoded(document)


def redis_texts(client: redis.Redis) -> Iterator[tuple[str, str]]:
    """(key, text) for every value of every key, read the way its type is read."""
    for raw_key in client.scan_iter(count=500):
        key = raw_key.decode()
        kind = client.type(raw_key).decode()
        values: list[bytes | str] = [raw_key]
        if kind == "string":
            values.append(client.get(raw_key) or b"")
        elif kind == "hash":
            values += [part for pair in client.hgetall(raw_key).items() for part in pair]
        elif kind == "list":
            values += client.lrange(raw_key, 0, -1)
        elif kind == "set":
            values += list(client.smembers(raw_key))
        elif kind == "zset":
            values += [member for member, _ in client.zrange(raw_key, 0, -1, withscores=True)]
        elif kind == "stream":
            values += [
                v for _, fields in client.xrange(raw_key) for pair in fields.items() for v in pair
            ]
        else:
            pytest.fail(f"key {key} has type {kind}, which this scan does not read")
        for value in values:
            for text in decoded(value):
                yield key, text

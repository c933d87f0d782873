"""The resilience suite's moving parts: a Redis it may kill and restart, OpenBao paused on demand,
scheduler processes it may kill, a JWKS server it controls, a live API, and the aftermath check
every scenario that issues credentials ends with."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import redis
import uvicorn
from fastapi import FastAPI

from jitbroker.bootstrap import Broker
from jitbroker.config import Settings
from jitbroker.grants.schemas import GrantRecord, GrantState
from jitbroker.vault import VaultClient
from tests.integration.support import free_port, redis_texts, role_exists, wait_for

PROBLEM_JSON = "application/problem+json"
DB_READ = {"profile": "demo-db", "scopes": ["read"], "ttl_seconds": 120, "justification": "chaos"}
# Every database role a profile of the test config can issue from (the reconciler's view).
DATABASE_ROLES = ("demo-ro", "demo-rw", "demo-admin")
# How long after its TTL (or its task's end) a credential may still exist: a revocation round
# trip, a redelivery and a retry on a machine whose two CPUs other suites share.
DEATH_BOUND_SECONDS = 30.0


class RedisServer:
    """A redis-server of the suite's own: AOF on with an fsync per write, so a SIGKILL loses
    nothing Redis acknowledged; restarted on the same directory and port."""

    def __init__(self, directory: Path, port: int) -> None:
        self.directory = directory
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        """Start (or restart) on the same data directory and port; returns once it answers."""
        assert self.process is None or self.process.poll() is not None, "Redis is running"
        self.starts += 1
        log = (self.directory / f"redis-{self.starts}.log").open("wb")
        self.process = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(self.directory),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        probe = redis.Redis.from_url(self.url(0), socket_connect_timeout=1)
        # Loading the AOF answers LOADING errors until the data is back: ping fails until then.
        wait_for(probe.ping, timeout=30, what=f"redis-server on port {self.port}")
        probe.close()

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send `sig` and wait until the process is gone."""
        assert self.process is not None
        self.process.send_signal(sig)
        self.process.wait(timeout=20)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill(signal.SIGTERM)

    def data_files(self) -> list[Path]:
        """Every file Redis persisted (the AOF directory), for the secret scan."""
        return [p for p in self.directory.rglob("*") if p.is_file() and not p.suffix == ".log"]


class OpenBaoPause:
    """SIGSTOP and SIGCONT for the OpenBao dev server this pytest session started: it keeps its
    in-memory state, and every request to it hangs until the client's timeout."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self._process = process
        self.stopped = False

    @contextmanager
    def paused(self) -> Iterator[None]:
        self.stop()
        try:
            yield
        finally:
            self.resume()

    def stop(self) -> None:
        assert self._process.poll() is None, "OpenBao is not running"
        self._process.send_signal(signal.SIGSTOP)
        self.stopped = True

    def resume(self) -> None:
        if self.stopped:
            self._process.send_signal(signal.SIGCONT)
            self.stopped = False


class SchedulerFleet:
    """The stack's scheduler processes (`jitbroker scheduler`); tests kill, pause and add them,
    and `restore()` leaves exactly one healthy scheduler running."""

    def __init__(self, env: dict[str, str], logs_dir: Path) -> None:
        self._env = env
        self._logs_dir = logs_dir
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        log = (self._logs_dir / f"scheduler-{len(self.processes) + 1}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "jitbroker", "scheduler"],
            env=self._env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.processes.append(process)
        return process

    def running(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.processes if p.poll() is None]

    def restore(self) -> None:
        """Resume paused schedulers, stop all but one, start one if none runs."""
        alive = self.running()
        for process in alive:
            process.send_signal(signal.SIGCONT)
        for process in alive[1:]:
            process.terminate()
            process.wait(timeout=20)
        if not alive:
            self.start()

    def stop_all(self) -> None:
        for process in self.running():
            process.send_signal(signal.SIGCONT)
            process.terminate()
            process.wait(timeout=20)


@dataclass
class JwksServer:
    """A JWKS endpoint on loopback whose behaviour the test sets: `ok`, `down` (connection
    refused), `error` (503), `garbage` (HTML with 200), `bad-json` (a document without usable
    keys), `slow` (answers after `delay`), `trickle` (headers, then one byte every half second),
    `trickle-headers` (the status line and headers one byte every 0.2 s, for `delay` at most)."""

    document: dict[str, Any]
    port: int = field(default_factory=free_port)
    mode: str = "ok"
    delay: float = 30.0
    fetches: int = 0
    _server: ThreadingHTTPServer | None = None
    _released: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/jwks.json"

    def start(self) -> None:
        jwks = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                jwks.fetches += 1
                jwks.answer(self)

            def log_message(self, *args: Any) -> None:
                """Quiet: the fetch count is the record."""

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        if self.mode == "trickle-headers":
            self._trickle_headers(handler)
            return
        if self.mode == "slow":
            self._released.wait(self.delay)
        if self.mode == "error":
            body, status, kind = b'{"error": "upstream unavailable"}', 503, "application/json"
        elif self.mode == "garbage":
            body, status, kind = b"<html>502 Bad Gateway</html>", 200, "text/html"
        elif self.mode == "bad-json":
            body, status = b'{"keys": [{"kty": "EC", "crv": "nope"}]}', 200
            kind = "application/json"
        else:
            body, status, kind = json.dumps(self.document).encode(), 200, "application/json"
        handler.send_response(status)
        handler.send_header("Content-Type", kind)
        if self.mode == "trickle":
            handler.send_header("Content-Length", str(10 * 1024))
            handler.end_headers()
            while not self._released.wait(0.5):
                try:
                    handler.wfile.write(b" ")
                    handler.wfile.flush()
                except OSError:
                    return
            return
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def _trickle_headers(self, handler: BaseHTTPRequestHandler) -> None:
        """Never done with the head: each byte comes well within any per-read timeout."""
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Pad: " + b"a" * 1024
        deadline = time.monotonic() + self.delay
        for byte in head:
            if self._released.wait(0.2) or time.monotonic() > deadline:
                return
            try:
                handler.wfile.write(bytes([byte]))
                handler.wfile.flush()
            except OSError:
                return

    def stop(self) -> None:
        """Refuse connections from now on (the endpoint is down)."""
        self._released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@contextmanager
def live_api(app: FastAPI) -> Iterator[str]:
    """`app` behind a real uvicorn on a free loopback port, in a background thread."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn-resilience", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    wait_for(
        lambda: httpx.get(f"{url}/healthz", timeout=1).status_code == 200,
        timeout=20,
        what="uvicorn to answer /healthz",
    )
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def database_leases(vault: VaultClient) -> set[str]:
    """Every database lease this session's OpenBao holds (its own: no other suite uses it)."""
    return {
        lease for role in DATABASE_ROLES for lease in vault.list_leases(f"database/creds/{role}")
    }


def grant_records(broker: Broker) -> list[GrantRecord]:
    """Every grant recorded in the state Redis, whatever its state."""
    records = []
    for key in broker.redis.scan_iter(match=f"{broker.settings.key_prefix}:grant:*", count=500):
        grant = broker.grants.get(key.decode().rsplit(":", 1)[-1])
        if grant is not None:
            records.append(grant)
    return records


def problem_of(response: httpx.Response) -> dict[str, Any]:
    """The problem+json body of an error answer (fails the test if it is anything else)."""
    assert response.headers.get("content-type", "").startswith(PROBLEM_JSON), response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == response.status_code
    return body


@dataclass
class Aftermath:
    """What must hold after a scenario that issued credentials: every 201 grant reaches a
    terminal state with a receipt, every issued credential is dead (its PostgreSQL role gone,
    its token unknown to OpenBao), no database lease created during the scenario survives, no
    grant anywhere in Redis is left live, and no issued secret is in Redis, its files or a log."""

    broker: Broker
    settings: Settings
    root: VaultClient
    logs_dir: Path
    leases_before: set[str]
    extra_files: Callable[[], list[Path]] = list

    def check(self, issued: list[dict[str, Any]], *, bound: float = DEATH_BOUND_SECONDS) -> None:
        for grant in issued:
            wait_for(
                lambda grant_id=grant["grant_id"]: self._terminal(grant_id),
                timeout=bound,
                what=f"grant {grant['grant_id']} to reach a terminal state",
            )
            assert self.broker.receipts.get(grant["grant_id"]) is not None, grant["grant_id"]
            credential = grant["credential"]
            if "username" in credential and "password" in credential:
                assert not role_exists(credential["username"]), credential["username"]
            if "accessor" in credential:
                assert not self.root.token_accessor_exists(credential["accessor"])
        wait_for(
            lambda: database_leases(self.root) <= self.leases_before,
            timeout=bound,
            what="every database lease created in this scenario to be gone",
        )
        wait_for(
            lambda: all(g.is_terminal for g in grant_records(self.broker)),
            timeout=bound,
            what="no live grant left in Redis",
        )
        self.assert_no_secret_anywhere(issued)

    def _terminal(self, grant_id: str) -> bool:
        grant = self.broker.grants.get(grant_id)
        assert grant is not None, f"grant {grant_id} answered 201 but is not recorded"
        return grant.state in (GrantState.revoked, GrantState.expired)

    def assert_no_secret_anywhere(self, issued: list[dict[str, Any]]) -> None:
        secrets = {
            f"{g['grant_id']} {name}": value
            for g in issued
            for name, value in g["credential"].items()
            if name in ("password", "token", "private_key")
        }
        assert secrets or not issued, "the scan needs the issued secrets to look for"
        haystacks: list[tuple[str, str]] = []
        for url in (self.settings.redis_url, self.settings.task_queue_url):
            client = redis.Redis.from_url(url)
            haystacks += [(f"{url} {key}", text) for key, text in redis_texts(client)]
        files = [*self.logs_dir.glob("*"), *self.extra_files()]
        if self.settings.audit_file is not None and self.settings.audit_file.exists():
            files.append(self.settings.audit_file)
        haystacks += [(str(p), p.read_bytes().decode("utf-8", "replace")) for p in files]
        leaks = [
            (where, name) for where, text in haystacks for name, s in secrets.items() if s in text
        ]
        assert leaks == []
        # The scan saw what it was meant to: the audit stream in Redis and the worker's log.
        assert any(where.endswith(f"{self.settings.key_prefix}:audit") for where, _ in haystacks)
        assert any(where.endswith("worker.log") for where, _ in haystacks)

"""Slow and oversized clients against a real uvicorn with the production server options.

The app runs over the in-memory broker (no OpenBao needed): what is under test is the HTTP layer.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from tests.integration.support import free_port, wait_for
from tests.real_stack import in_thread_options
from tests.unit.fakes import memory_broker, write_demo_config

from jitbroker.app import MAX_BODY_BYTES, create_app
from jitbroker.connection_limits import ConnectionLimits
from jitbroker.identity.dev_issuer import DevIssuer
from jitbroker.identity.verifier import MAX_TOKEN_BYTES

SLOW_CLIENTS = 200
# Short deadlines for the tests that wait for them to pass; the fairness test uses the defaults.
SHORT = {"http_header_timeout_seconds": 1.0, "http_body_timeout_seconds": 2.0}


class LiveServer:
    def __init__(self, port: int, token: str, limits: ConnectionLimits) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.auth = f"Bearer {token}"
        self.limits = limits

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)

    def create_task(self) -> httpx.Response:
        return httpx.post(
            f"{self.url}/v1/tasks",
            json={"purpose": "normal client"},
            headers={"Authorization": self.auth},
            timeout=10,
        )


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    """Start the app behind uvicorn with the options `jitbroker serve` uses (`uvicorn_options`),
    for given settings."""
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(**settings: Any) -> LiveServer:
        config_dir = write_demo_config(tmp_path / "config")
        broker, _, _ = memory_broker(config_dir)
        broker.settings = broker.settings.model_copy(
            update={"rate_limit_per_minute": 0, **settings}
        )
        limits = ConnectionLimits.from_settings(broker.settings)
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(create_app(broker=broker), **in_thread_options(broker.settings, port))
        )
        thread = threading.Thread(target=server.run, name="uvicorn-slow-clients", daemon=True)
        thread.start()
        servers.append((server, thread))
        token = DevIssuer(config_dir / "keys").workload_token(
            broker.config, "demo-pipeline", ttl_seconds=600
        )
        live = LiveServer(port, token, limits)
        wait_for(
            lambda: httpx.get(f"{live.url}/healthz", timeout=1).status_code == 200,
            timeout=20,
            what="uvicorn to answer /healthz",
        )
        return live

    (tmp_path / "config").mkdir()
    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=10)


class SlowClients:
    """Connections that idle, trickle a request head, or trickle a declared body, one byte a tick.

    A pump thread sends each open trickler its next byte every `tick` seconds and records what
    the server answers and when it closes the connection.
    """

    HEAD = b"POST /v1/tasks HTTP/1.1\r\nHost: broker\r\nX-Padding: " + b"p" * 4096 + b"\r\n\r\n"

    def __init__(self, server: LiveServer, count: int, tick: float = 0.1) -> None:
        self.tick = tick
        self.sockets: dict[socket.socket, bytes] = {}  # socket → bytes still to trickle
        self.answers: dict[socket.socket, bytes] = {}
        body_head = (
            b"POST /v1/tasks HTTP/1.1\r\nHost: broker\r\nAuthorization: "
            + server.auth.encode()
            + b"\r\nContent-Type: application/json\r\nContent-Length: 4096\r\n\r\n"
        )
        for i in range(count):
            sock = server.connect()
            kind = i % 3
            if kind == 0:
                rest = b""  # idle after connect
            elif kind == 1:
                rest = self.HEAD
            else:
                sock.sendall(body_head)
                rest = b"x" * 4096
            sock.setblocking(False)
            self.sockets[sock] = rest
            self.answers[sock] = b""
        self.closed: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pump, name="slow-clients", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        while not self._stop.wait(self.tick):
            for sock, rest in list(self.sockets.items()):
                if sock in self.closed:
                    continue
                readable, _, _ = select.select([sock], [], [], 0)
                if readable:  # an answer or a close: stop sending, like a real client would
                    try:
                        data = sock.recv(65536)
                    except OSError:
                        data = b""
                    if data:
                        self.answers[sock] += data
                        self.sockets[sock] = b""
                    else:
                        self._mark_closed(sock)
                elif rest:
                    try:
                        sock.send(rest[:1])
                        self.sockets[sock] = rest[1:]
                    except OSError:
                        self._mark_closed(sock)

    def _mark_closed(self, sock: socket.socket) -> None:
        with self._lock:
            self.closed.add(sock)

    def open_count(self) -> int:
        with self._lock:
            return len(self.sockets) - len(self.closed)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for sock in self.sockets:
            sock.close()


@pytest.fixture
def slow_clients() -> Iterator[Callable[[LiveServer], SlowClients]]:
    started: list[SlowClients] = []

    def start(server: LiveServer) -> SlowClients:
        clients = SlowClients(server, SLOW_CLIENTS)
        started.append(clients)
        return clients

    yield start
    for clients in started:
        clients.close()


def exchange(server: LiveServer, request: bytes, *, timeout: float = 10.0) -> bytes:
    """Send raw bytes, read until the server closes the connection; return what it answered."""
    with server.connect() as sock:
        sock.sendall(request)
        return read_until_closed(sock, timeout=timeout)


def read_until_closed(sock: socket.socket, *, timeout: float) -> bytes:
    sock.settimeout(timeout)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass  # closed with our unread bytes in its buffer: a reset after the answer
    return received


def problem_of(raw: bytes, status: int) -> dict[str, Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith(f"HTTP/1.1 {status} "), raw[:200]
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    assert headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = json.loads(body)
    assert problem["status"] == status
    return problem


def trickle_until_answered(sock: socket.socket, data: bytes, *, timeout: float) -> bytes:
    """Send `data` one byte per 50 ms until the server answers or closes; return the answer."""
    deadline = time.monotonic() + timeout
    sock.setblocking(False)
    for byte in (data[i : i + 1] for i in range(len(data))):
        readable, _, _ = select.select([sock], [], [], 0.05)
        if readable or time.monotonic() > deadline:
            break
        sock.send(byte)
    sock.setblocking(True)
    return read_until_closed(sock, timeout=max(deadline - time.monotonic(), 1.0))


def test_many_slow_clients_do_not_starve_a_normal_client(
    serve: Callable[..., LiveServer], slow_clients: Callable[[LiveServer], SlowClients]
) -> None:
    """Pass: with 200 idle/trickling connections open (default deadlines), 20 normal requests are
    each answered 201 within a generous 10 s bound while those connections are still held."""
    server = serve()
    clients = slow_clients(server)
    wait_for(lambda: clients.open_count() == SLOW_CLIENTS, timeout=5, what="200 open connections")
    for _ in range(20):
        assert server.create_task().status_code == 201
    # Still held open: the normal client was served alongside them, not after they were dropped.
    assert clients.open_count() == SLOW_CLIENTS


def test_slow_clients_are_all_disconnected_within_the_deadlines(
    serve: Callable[..., LiveServer], slow_clients: Callable[[LiveServer], SlowClients]
) -> None:
    """Pass: every one of 200 idle or trickling connections is closed by the server within
    header/body deadline + 10 s, the tricklers with a 408 problem; a normal client is served."""
    server = serve(**SHORT)
    clients = slow_clients(server)
    assert server.create_task().status_code == 201
    wait_for(lambda: clients.open_count() == 0, timeout=2.0 + 10, what="every slow client closed")
    answered = [answer for answer in clients.answers.values() if answer]
    assert len(answered) >= 2 * SLOW_CLIENTS // 3 - 1  # idle ones are closed without an answer
    for answer in answered:
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
    assert server.create_task().status_code == 201


def test_idle_connection_is_closed_after_the_header_deadline(
    serve: Callable[..., LiveServer],
) -> None:
    """Pass: a connection that never sends a byte is closed (EOF, no answer) within the 1 s
    header deadline plus a generous margin."""
    server = serve(**SHORT)
    with server.connect() as sock:
        assert read_until_closed(sock, timeout=10) == b""


@pytest.mark.parametrize("after_a_response", [False, True])
def test_trickled_headers_get_408_and_the_connection_closed(
    serve: Callable[..., LiveServer], after_a_response: bool
) -> None:
    """Pass: a request head trickled byte by byte (also on a connection kept alive after a full
    request, where every byte used to reset uvicorn's keep-alive timer) is answered 408
    problem+json naming the header deadline, then closed."""
    server = serve(**SHORT)
    with server.connect() as sock:
        if after_a_response:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: broker\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        answer = trickle_until_answered(sock, SlowClients.HEAD, timeout=10)
    problem = problem_of(answer, 408)
    assert "headers not received within 1 s" in problem["detail"]
    assert problem["type"].endswith("/request-timeout")


def test_trickled_body_gets_408_and_the_connection_closed(
    serve: Callable[..., LiveServer],
) -> None:
    """Pass: a declared 4 KiB body trickled byte by byte is answered 408 problem+json naming the
    body deadline, then closed; the application never sees a partial body."""
    server = serve(**SHORT)
    head = (
        b"POST /v1/tasks HTTP/1.1\r\nHost: broker\r\nAuthorization: "
        + server.auth.encode()
        + b"\r\nContent-Type: application/json\r\nContent-Length: 4096\r\n\r\n"
    )
    with server.connect() as sock:
        sock.sendall(head)
        answer = trickle_until_answered(sock, b"x" * 4096, timeout=10)
    assert "body not received within 2 s" in problem_of(answer, 408)["detail"]


def test_a_single_huge_header_is_431(serve: Callable[..., LiveServer]) -> None:
    """Pass: one 32 KiB header is refused 431 problem+json naming the 16 KiB cap."""
    server = serve()
    request = b"GET /healthz HTTP/1.1\r\nHost: broker\r\nX-Big: " + b"a" * 32768 + b"\r\n\r\n"
    problem = problem_of(exchange(server, request), 431)
    assert f"larger than {server.limits.max_head_bytes} bytes" in problem["detail"]


def test_too_many_headers_are_431(serve: Callable[..., LiveServer]) -> None:
    """Pass: 2,000 small headers (over 16 KiB together) are refused 431 problem+json."""
    server = serve()
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(2000))
    request = b"GET /healthz HTTP/1.1\r\nHost: broker\r\n" + headers + b"\r\n"
    problem_of(exchange(server, request), 431)


def test_an_endless_header_is_cut_off_with_431(serve: Callable[..., LiveServer]) -> None:
    """Pass: an unterminated 64 KiB header value is refused 431 problem+json once 16 KiB have
    arrived, rather than buffered until it ends."""
    server = serve()
    with server.connect() as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: broker\r\nX-Endless: ")
        try:
            sock.sendall(b"a" * 64 * 1024)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before all of it arrived
        answer = read_until_closed(sock, timeout=10)
    problem_of(answer, 431)


def test_oversized_bearer_token_is_401_not_431(serve: Callable[..., LiveServer]) -> None:
    """Pass: a 9 KiB bearer token fits the head cap and reaches the verifier: 401 problem+json
    naming its 8 KiB token cap."""
    server = serve()
    response = httpx.post(
        f"{server.url}/v1/tasks",
        json={"purpose": "x"},
        headers={"Authorization": "Bearer " + "a" * (MAX_TOKEN_BYTES + 1024)},
        timeout=10,
    )
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert f"larger than {MAX_TOKEN_BYTES} bytes" in response.json()["detail"]


def test_chunked_body_without_length_is_capped_at_64_kib(
    serve: Callable[..., LiveServer],
) -> None:
    """Pass: a chunked body with no Content-Length is refused 413 problem+json once it passes
    64 KiB, and the connection is closed."""
    server = serve()
    chunk = b"x" * 8192
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(20))
    request = (
        b"POST /v1/tasks HTTP/1.1\r\nHost: broker\r\nAuthorization: "
        + server.auth.encode()
        + b"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunks
        + b"0\r\n\r\n"
    )
    problem = problem_of(exchange(server, request), 413)
    assert f"larger than {MAX_BODY_BYTES} bytes" in problem["detail"]


def test_malformed_request_is_400_problem(serve: Callable[..., LiveServer]) -> None:
    """Pass: bytes httptools cannot parse get 400 problem+json, not uvicorn's text/plain."""
    server = serve()
    problem = problem_of(exchange(server, b"NOT HTTP AT ALL\r\n\r\n"), 400)
    assert problem["type"].endswith("/malformed-request")


def test_a_long_poll_outlasting_both_deadlines_is_answered(
    serve: Callable[..., LiveServer],
) -> None:
    """Pass: the deadlines cover receiving a request, not answering it: a 3 s long poll on a
    pending grant (longer than the 1 s header and 2 s body deadlines) is answered 200, on a
    kept-alive connection that then serves another request."""
    server = serve(**SHORT)
    headers = {"Authorization": server.auth}
    with httpx.Client(base_url=server.url, headers=headers, timeout=10) as client:
        task_id = client.post("/v1/tasks", json={"purpose": "long poll"}).json()["task_id"]
        pending = client.post(
            f"/v1/tasks/{task_id}/grants",
            json={
                "profile": "demo-db",
                "scopes": ["write"],
                "ttl_seconds": 60,
                "justification": "migration",
            },
        )
        assert pending.status_code == 202
        grant_id = pending.json()["grant_id"]
        polled = client.get(f"/v1/grants/{grant_id}", params={"wait": 3})
        assert polled.status_code == 200
        assert polled.json()["state"] == "pending_approval"
        assert client.get(f"/v1/tasks/{task_id}").status_code == 200


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """Read one response with a Content-Length off a connection kept open; its status and body."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a whole response head: {received!r}"
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next(
        int(v) for k, _, v in (h.partition(":") for h in lines) if k.lower() == "content-length"
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed before a whole response body"
        body += chunk
    assert len(body) == length, "more bytes than one response"
    return int(lines[0].split()[1]), body


def test_a_body_ending_after_an_early_answer_puts_the_next_head_on_the_clock(
    serve: Callable[..., LiveServer],
) -> None:
    """Pass: a route that answers without reading the body (404 for an unknown path) is answered,
    the declared body then arrives, and the now idle connection is closed (EOF) within the 1 s
    header deadline plus a margin. It used to have no timer at all: the body's bytes cancelled
    uvicorn's keep-alive timer and completing the body disarmed the body deadline."""
    server = serve(**SHORT)
    with server.connect() as sock:
        sock.sendall(b"POST /nope HTTP/1.1\r\nHost: broker\r\nContent-Length: 5\r\n\r\n")
        assert read_response(sock)[0] == 404
        sock.sendall(b"hello")
        started = time.monotonic()
        sock.settimeout(6)  # under uvicorn's 5 s keep-alive plus the 1 s header deadline
        assert sock.recv(65536) == b""
    assert time.monotonic() - started < 1.0 + 2


def test_a_pipelined_body_deadline_starts_when_its_request_s_turn_comes(
    serve: Callable[..., LiveServer],
) -> None:
    """Pass: a 3 s long poll pipelined with a POST whose body never comes gets its own 200 (the
    POST's 2 s body deadline does not run while uvicorn holds the POST back, so no 408 takes
    the long poll's place); the POST then gets 408 naming the body deadline, 2 s or more after
    the long poll's answer, and the connection is closed."""
    server = serve(**SHORT)
    headers = {"Authorization": server.auth}
    with httpx.Client(base_url=server.url, headers=headers, timeout=10) as client:
        task_id = client.post("/v1/tasks", json={"purpose": "pipelining"}).json()["task_id"]
        pending = client.post(
            f"/v1/tasks/{task_id}/grants",
            json={
                "profile": "demo-db",
                "scopes": ["write"],
                "ttl_seconds": 60,
                "justification": "migration",
            },
        )
        assert pending.status_code == 202
    auth = b"Authorization: " + server.auth.encode() + b"\r\n"
    long_poll = b"GET /v1/grants/%s?wait=3 HTTP/1.1\r\nHost: broker\r\n%s\r\n" % (
        pending.json()["grant_id"].encode(),
        auth,
    )
    bodiless_post = (
        b"POST /v1/tasks HTTP/1.1\r\nHost: broker\r\n%sContent-Length: 20\r\n\r\n" % auth
    )
    with server.connect() as sock:
        sock.sendall(long_poll + bodiless_post)
        status, body = read_response(sock)
        answered = time.monotonic()
        assert status == 200, body[:200]
        assert json.loads(body)["state"] == "pending_approval"
        rest = read_until_closed(sock, timeout=10)
    assert time.monotonic() - answered >= 2.0 - 0.1
    assert "body not received within 2 s" in problem_of(rest, 408)["detail"]

"""The uvicorn internals `jitbroker.connection_limits` relies on, checked against the installed
uvicorn: if an upgrade renames or reorders any of them, these fail rather than the deadlines
silently stopping (see the module docstring; pyproject.toml caps uvicorn's version too)."""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.http import httptools_impl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from jitbroker.connection_limits import ConnectionLimits, LimitedHttpToolsProtocol

POST = b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n"


class FakeTransport(asyncio.Transport):
    """Records what the protocol writes; no socket."""

    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(
            name, default
        )

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


class Recording(LimitedHttpToolsProtocol):
    """Records the parser callbacks uvicorn's httptools protocol receives, in order."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[str] = []

    def on_message_begin(self) -> None:
        self.calls.append("message_begin")
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self.calls.append("url")
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.calls.append("header")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self.calls.append("headers_complete")
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self.calls.append("message_complete")
        super().on_message_complete()


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def connect(loop: asyncio.AbstractEventLoop, app: Any = None) -> tuple[Recording, FakeTransport]:
    """One connection to `app` (by default: answer 200 without reading the body)."""

    async def answer(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    config = uvicorn.Config(app or answer, lifespan="off", ws="none", log_level="warning")
    protocol = Recording(
        config=config,
        server_state=ServerState(),
        app_state={},
        _loop=loop,
        limits=ConnectionLimits(header_timeout=60, body_timeout=60),
    )
    transport = FakeTransport()
    protocol.connection_made(transport)
    return protocol, transport


def settle(loop: asyncio.AbstractEventLoop) -> None:
    """Let the application tasks uvicorn started run to where they wait."""
    loop.run_until_complete(asyncio.sleep(0.01))


def test_status_lines_and_default_headers_are_where_the_module_reads_them(
    loop: asyncio.AbstractEventLoop,
) -> None:
    protocol, _ = connect(loop)

    for status in (400, 408, 431):
        assert httptools_impl.STATUS_LINE[status].startswith(b"HTTP/1.1 %d " % status)
    assert isinstance(protocol.server_state.default_headers, list)
    assert isinstance(protocol.loop, asyncio.AbstractEventLoop)


def test_the_parser_calls_back_in_order_and_a_request_becomes_the_current_cycle(
    loop: asyncio.AbstractEventLoop,
) -> None:
    protocol, _ = connect(loop)
    assert protocol.cycle is None

    protocol.data_received(POST + b"ok")

    assert protocol.calls == [
        "message_begin",
        "url",
        "header",
        "header",
        "headers_complete",
        "message_complete",
    ]
    assert isinstance(protocol.cycle, RequestResponseCycle)
    assert protocol.cycle.more_body is False  # set by on_message_complete
    assert (protocol.cycle.response_started, protocol.cycle.response_complete) == (False, False)
    settle(loop)
    assert (protocol.cycle.response_started, protocol.cycle.response_complete) == (True, True)


def test_a_refusal_raised_from_a_parser_callback_reaches_send_400_response(
    loop: asyncio.AbstractEventLoop,
) -> None:
    """`_count_head` raises from `on_header`; uvicorn must turn that into `send_400_response`."""
    assert "send_400_response" in vars(HttpToolsProtocol)
    protocol, transport = connect(loop)
    protocol.limits = ConnectionLimits(max_head_bytes=40)

    protocol.data_received(b"GET / HTTP/1.1\r\nHost: a\r\nX-Long: " + b"v" * 50 + b"\r\n\r\n")

    assert transport.written.startswith(b"HTTP/1.1 431 "), transport.written[:80]
    head, _, body = transport.written.partition(b"\r\n\r\n")
    assert b"content-type: application/problem+json" in head
    assert json.loads(body)["status"] == 431
    assert transport.closed


def test_a_pipelined_request_waits_in_the_pipeline_with_reading_paused(
    loop: asyncio.AbstractEventLoop,
) -> None:
    """uvicorn queues a request whose predecessor is unanswered (`pipeline`, next at the right
    end), pauses reading (`flow`), and starts it from `on_response_complete`."""
    release = asyncio.Event()
    started: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        started.append(scope["path"])
        if scope["path"] == "/first":
            await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    protocol, transport = connect(loop, app)
    protocol.data_received(b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n")
    settle(loop)
    first = protocol.cycle
    protocol.data_received(POST.replace(b"/p", b"/second"))

    assert isinstance(protocol.pipeline, deque)
    [(queued, _)] = protocol.pipeline
    assert queued is protocol.cycle is not first
    assert queued.more_body is True
    assert protocol.flow.read_paused
    assert not transport.reading

    release.set()
    settle(loop)

    assert started == ["/first", "/second"]
    assert not protocol.pipeline
    assert not protocol.flow.read_paused
    assert transport.reading


def test_the_limited_protocol_overrides_only_methods_uvicorn_has() -> None:
    """Every hook the subclass overrides exists on uvicorn's protocol (a rename would leave the
    override uncalled and the deadline silently unarmed)."""
    overridden = {
        name
        for name, value in vars(LimitedHttpToolsProtocol).items()
        if callable(value) and not name.startswith("_")
    }

    assert overridden <= set(vars(HttpToolsProtocol)), overridden - set(vars(HttpToolsProtocol))

"""Per-connection HTTP limits uvicorn lacks: deadlines for a request's head and body, a head cap.

uvicorn (httptools, its default parser) closes a connection only after `timeout_keep_alive` of
silence *between* requests, and every byte received cancels that timer. A client that connects and
says nothing, trickles one header byte at a time, or sends a declared body slowly keeps its
connection (and a file descriptor) forever, and httptools accepts request heads of any size.
`LimitedHttpToolsProtocol` adds three limits, answering each with problem+json and closing:

- the request line and headers must arrive within `header_timeout` seconds of the connection
  opening, of the previous response ending, or of the previous body ending if the application
  answered before it (408 if a request had begun, else a silent close);
- the body must arrive within `body_timeout` seconds of the headers, or of its turn for a
  pipelined request, which uvicorn does not read until then (408, or a close if the application
  already answered);
- the request line and headers may total `max_head_bytes` (431).

Serve with `http=protocol_factory(limits)` (see `jitbroker.server`). This leans on uvicorn
internals (the parser callbacks, `cycle`, `pipeline`, `send_400_response`, `STATUS_LINE`):
tests/unit/test_connection_limits.py fails if they change, and pyproject.toml caps uvicorn's
version so that an upgrade is a deliberate one.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from jitbroker.config import Settings
from jitbroker.errors import BadHttpRequest, BrokerError, HeaderFieldsTooLarge, RequestTimeout


@dataclass(frozen=True)
class ConnectionLimits:
    """How long a request's head and body may take to arrive, and how large its head may be."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_head_bytes: int = 16 * 1024

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionLimits:
        """The limits configured by `JITBROKER_HTTP_*`."""
        return cls(
            header_timeout=settings.http_header_timeout_seconds,
            body_timeout=settings.http_body_timeout_seconds,
            max_head_bytes=settings.http_max_header_bytes,
        )


def protocol_factory(limits: ConnectionLimits) -> Callable[..., asyncio.Protocol]:
    """uvicorn's `http=` option for these limits; a partial, so it pickles for `--workers`."""
    return functools.partial(LimitedHttpToolsProtocol, limits=limits)


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a head deadline, a body deadline and a head size cap."""

    def __init__(self, *args: Any, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self._deadline: asyncio.TimerHandle | None = None
        self._awaiting_head = True  # between requests, or inside a request line and headers
        self._head_started = False  # a request's first byte has arrived
        self._raw_head_bytes = 0  # bytes received while awaiting the head (bounds a huge header)
        self._head_bytes = 0  # request line and headers as parsed (exact)
        self._refusal: BrokerError | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.limits.header_timeout, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._awaiting_head:
            self._raw_head_bytes += len(data)
        super().data_received(data)
        # httptools buffers an unfinished header value without calling back: count raw bytes too.
        if self._awaiting_head and self._raw_head_bytes > self.limits.max_head_bytes:
            self._refuse(self._head_too_large())

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_started = True

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._awaiting_head = False
        starts_now = self._idle()  # else uvicorn queues it and stops reading until its turn
        super().on_headers_complete()
        if starts_now:
            self._arm(self.limits.body_timeout, self._body_timed_out)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._awaiting_head, self._head_started = True, False
        self._raw_head_bytes = self._head_bytes = 0
        if self._idle():  # answered before its body ended: the next head is on the clock now
            self._arm(self.limits.header_timeout, self._head_timed_out)
        else:
            self._disarm()

    def on_response_complete(self) -> None:
        queued = self.pipeline[-1][0] if self.pipeline else None  # what uvicorn starts next
        super().on_response_complete()
        if self.transport.is_closing():
            return
        if queued is not None:
            if queued.more_body:  # its body could not arrive while it waited its turn
                self._arm(self.limits.body_timeout, self._body_timed_out)
        elif self._awaiting_head:  # (else its body is still arriving, on the body deadline)
            self._arm(self.limits.header_timeout, self._head_timed_out)

    def send_400_response(self, msg: str) -> None:
        # uvicorn's answer to anything httptools rejects, including a head refused by `_count_head`.
        self._write_problem(self._refusal or BadHttpRequest(msg))

    def _idle(self) -> bool:
        """No response in progress: nothing in flight, nothing queued."""
        return self.cycle is None or self.cycle.response_complete

    def _count_head(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > self.limits.max_head_bytes:
            self._refusal = self._head_too_large()
            raise self._refusal  # stops the parser; uvicorn then calls send_400_response

    def _head_too_large(self) -> HeaderFieldsTooLarge:
        return HeaderFieldsTooLarge(
            f"request line and headers are larger than {self.limits.max_head_bytes} bytes"
        )

    def _head_timed_out(self) -> None:
        if not self._head_started:
            self.transport.close()  # an idle connection: nothing to answer
            return
        self._refuse(
            RequestTimeout(
                f"request line and headers not received within {self.limits.header_timeout:g} s"
            )
        )

    def _body_timed_out(self) -> None:
        if self.cycle is not None and self.cycle.response_started:
            self.transport.close()  # the application answered without reading it all
            return
        self._refuse(
            RequestTimeout(f"request body not received within {self.limits.body_timeout:g} s")
        )

    def _refuse(self, error: BrokerError) -> None:
        if not self.transport.is_closing():
            self._write_problem(error)

    def _write_problem(self, error: BrokerError) -> None:
        self._disarm()
        body = json.dumps(error.problem()).encode()
        head = [STATUS_LINE[error.status]]
        for name, value in self.server_state.default_headers:
            head.append(name + b": " + value + b"\r\n")
        head.append(
            b"content-type: application/problem+json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n" % len(body)
        )
        self.transport.write(b"".join(head) + body)
        self.transport.close()

    def _arm(self, seconds: float, on_timeout: Callable[[], None]) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, on_timeout)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

"""JWKS parsing and the file and URL key sets (cache, refresh on unknown kid, rate limit)."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from jitbroker.identity.jwks import FileKeySet, RemoteKeySet, parse_jwks

JWKS_URL = "https://issuer.example.test/.well-known/jwks.json"
# The overall fetch deadline of the key sets whose fetch hangs or trickles, and how long a hung
# fetch lasts at most (so that code holding a lock across it fails these tests, not hangs them).
FETCH_TIMEOUT = 0.5
HANG_SECONDS = 5.0
# What "at once" means for a caller that must not wait on a fetch in flight.
PROMPT_SECONDS = 0.2

MakeJwk = Callable[..., dict[str, Any]]


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class JwksServer:
    """What the JWKS URL answers; counts the requests it served."""

    def __init__(self) -> None:
        self.requests = 0
        self.status = 200
        self.body = b'{"keys": []}'

    def serve(self, document: dict[str, Any]) -> None:
        self.status = 200
        self.body = json.dumps(document).encode("utf-8")

    def handler(self, request: httpx.Request) -> httpx.Response:
        assert str(request.url) == JWKS_URL
        self.requests += 1
        return httpx.Response(self.status, content=self.body)


@pytest.fixture
def make_jwk() -> MakeJwk:
    """make_jwk(kid, private=False, **fields): a fresh P-256 JWK."""

    def make(kid: str, *, private: bool = False, **fields: Any) -> dict[str, Any]:
        key = ec.generate_private_key(ec.SECP256R1())
        jwk = jwt.algorithms.ECAlgorithm.to_jwk(key if private else key.public_key(), as_dict=True)
        jwk.update({"kid": kid, "use": "sig", "alg": "ES256", **fields})
        return jwk

    return make


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def server(make_jwk: MakeJwk) -> JwksServer:
    server = JwksServer()
    server.serve({"keys": [make_jwk("key-1")]})
    return server


@pytest.fixture
def remote(server: JwksServer, clock: FakeClock) -> RemoteKeySet:
    return RemoteKeySet(
        JWKS_URL,
        cache_seconds=300,
        min_refresh_seconds=10,
        clock=clock,
        transport=httpx.MockTransport(server.handler),
    )


# --- parse_jwks ----------------------------------------------------------------------------


def test_parse_jwks_skips_keys_that_carry_private_material(make_jwk: MakeJwk) -> None:
    document = {"keys": [make_jwk("public"), make_jwk("private", private=True)]}

    keys = parse_jwks(document)

    assert set(keys) == {"public"}


def test_parse_jwks_skips_keys_not_meant_for_signatures(make_jwk: MakeJwk) -> None:
    document = {"keys": [make_jwk("signing"), make_jwk("encryption", use="enc")]}

    keys = parse_jwks(document)

    assert set(keys) == {"signing"}


def test_parse_jwks_rejects_a_document_without_a_keys_list() -> None:
    with pytest.raises(ValueError, match="'keys' list"):
        parse_jwks({"keys": "not-a-list"})


# --- RemoteKeySet --------------------------------------------------------------------------


def test_remote_key_set_serves_a_known_kid_from_cache_without_refetching(
    remote: RemoteKeySet, server: JwksServer, clock: FakeClock
) -> None:
    first = remote.key("key-1")
    clock.advance(60)
    second = remote.key("key-1")

    assert first is not None
    assert second is first
    assert server.requests == 1


def test_remote_key_set_refetches_when_asked_for_an_unknown_kid(
    remote: RemoteKeySet, server: JwksServer, clock: FakeClock, make_jwk: MakeJwk
) -> None:
    assert remote.key("key-1") is not None
    server.serve({"keys": [make_jwk("key-1"), make_jwk("key-2")]})
    clock.advance(11)

    rotated = remote.key("key-2")

    assert rotated is not None
    assert server.requests == 2


def test_remote_key_set_refetches_unknown_kids_no_more_often_than_min_refresh_seconds(
    remote: RemoteKeySet, server: JwksServer, clock: FakeClock
) -> None:
    assert remote.key("unknown") is None
    for _ in range(5):
        clock.advance(1)
        assert remote.key("unknown") is None
    assert server.requests == 1

    clock.advance(5)
    remote.key("unknown")

    assert server.requests == 2


def test_remote_key_set_refetches_when_the_cache_is_stale(
    remote: RemoteKeySet, server: JwksServer, clock: FakeClock
) -> None:
    remote.key("key-1")
    clock.advance(301)

    remote.key("key-1")

    assert server.requests == 2


def test_remote_key_set_keeps_serving_cached_keys_when_the_refresh_answers_500(
    remote: RemoteKeySet, server: JwksServer, clock: FakeClock
) -> None:
    cached = remote.key("key-1")
    server.status, server.body = 500, b"internal error"
    clock.advance(301)

    after_failure = remote.key("key-1")

    assert server.requests == 2
    assert after_failure is cached is not None


def test_remote_key_set_keeps_serving_cached_keys_when_the_refresh_returns_garbage(
    remote: RemoteKeySet, server: JwksServer, clock: FakeClock
) -> None:
    cached = remote.key("key-1")
    server.status, server.body = 200, b"<html>not json"
    clock.advance(301)

    after_failure = remote.key("key-1")

    assert server.requests == 2
    assert after_failure is cached is not None


def test_remote_key_set_keeps_serving_cached_keys_when_the_refresh_lists_only_unusable_keys(
    remote: RemoteKeySet, server: JwksServer, clock: FakeClock
) -> None:
    cached = remote.key("key-1")
    server.serve({"keys": [{"kty": "EC", "crv": "nope", "kid": "broken"}]})
    clock.advance(301)

    after_failure = remote.key("key-1")

    assert server.requests == 2
    assert after_failure is cached is not None


# --- FileKeySet ----------------------------------------------------------------------------


def test_file_key_set_picks_up_a_rewritten_file(tmp_path: Path, make_jwk: MakeJwk) -> None:
    path = tmp_path / "issuer.jwks.json"
    path.write_text(json.dumps({"keys": [make_jwk("old")]}))
    key_set = FileKeySet(path)
    assert key_set.key("old") is not None
    mtime = path.stat().st_mtime

    path.write_text(json.dumps({"keys": [make_jwk("new")]}))
    os.utime(path, (mtime + 5, mtime + 5))  # a distinct mtime without sleeping

    assert key_set.key("new") is not None
    assert key_set.key("old") is None


def test_file_key_set_without_kid_returns_the_only_key(tmp_path: Path, make_jwk: MakeJwk) -> None:
    path = tmp_path / "issuer.jwks.json"
    path.write_text(json.dumps({"keys": [make_jwk("only")]}))

    key = FileKeySet(path).key(None)

    assert key is not None
    assert key.key_id == "only"


# --- known_key: what the event loop may ask -----------------------------------------------


def test_remote_known_key_answers_a_fresh_cached_kid_without_fetching(
    remote: RemoteKeySet, server: JwksServer
) -> None:
    fetched = remote.key("key-1")

    assert remote.known_key("key-1") is fetched
    assert server.requests == 1


def test_remote_known_key_never_fetches_a_stale_key_set(
    remote: RemoteKeySet, server: JwksServer, clock: FakeClock
) -> None:
    remote.key("key-1")
    clock.advance(301)

    assert remote.known_key("key-1") is None
    assert server.requests == 1


def test_remote_known_key_never_fetches_an_unknown_kid(
    remote: RemoteKeySet, server: JwksServer
) -> None:
    remote.key("key-1")

    assert remote.known_key("key-2") is None
    assert server.requests == 1


def test_remote_known_key_does_not_wait_for_a_fetch_in_progress(
    hanging_remote: RemoteKeySet, clock: FakeClock, hang: Hang
) -> None:
    cached = hanging_remote.key("key-1")
    hang.active = True
    clock.advance(301)  # stale: the next key() refreshes
    refresher = threading.Thread(target=hanging_remote.key, args=("key-1",))
    refresher.start()
    assert hang.entered.wait(2)

    started = time.monotonic()
    from_loop = hanging_remote.known_key("key-1")
    elapsed = time.monotonic() - started

    hang.release.set()
    refresher.join()
    assert from_loop is cached
    assert elapsed < PROMPT_SECONDS


def test_file_known_key_refuses_a_rewritten_file_until_it_is_read(
    tmp_path: Path, make_jwk: MakeJwk
) -> None:
    path = tmp_path / "issuer.jwks.json"
    path.write_text(json.dumps({"keys": [make_jwk("old")]}))
    key_set = FileKeySet(path)
    old = key_set.key("old")
    assert key_set.known_key("old") is old
    mtime = path.stat().st_mtime

    path.write_text(json.dumps({"keys": [make_jwk("old")]}))
    os.utime(path, (mtime + 5, mtime + 5))

    assert key_set.known_key("old") is None


# --- a slow or hostile JWKS endpoint: the lock is never held across the fetch --------------


@dataclass
class Hang:
    """Once `active`, every request to the JWKS URL hangs until `release` (HANG_SECONDS at most)."""

    active: bool = False
    calls: int = 0
    entered: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def hang() -> Iterator[Hang]:
    hang = Hang()
    yield hang
    hang.release.set()


@pytest.fixture
def hanging_remote(server: JwksServer, clock: FakeClock, hang: Hang) -> RemoteKeySet:
    """A key set whose fetches may hang (see Hang); every unknown kid may refetch."""

    def handler(request: httpx.Request) -> httpx.Response:
        hang.calls += 1
        if hang.active:
            hang.entered.set()
            hang.release.wait(HANG_SECONDS)
        return server.handler(request)

    return RemoteKeySet(
        JWKS_URL,
        cache_seconds=300,
        min_refresh_seconds=0,
        timeout_seconds=FETCH_TIMEOUT,
        clock=clock,
        transport=httpx.MockTransport(handler),
    )


def test_a_refresh_in_flight_leaves_the_cached_keys_to_other_callers_at_once(
    hanging_remote: RemoteKeySet, hang: Hang
) -> None:
    """While one caller's refresh (for an unknown kid) hangs, another thread's known kid is
    answered from the cache, another unknown kid fails closed without a second fetch, and the
    event loop's `known_key` answers: none of them waits for the fetch."""
    cached = hanging_remote.key("key-1")
    hang.active = True
    refresher = threading.Thread(target=hanging_remote.key, args=("rotated",))
    refresher.start()
    assert hang.entered.wait(2)

    started = time.monotonic()
    known = hanging_remote.key("key-1")
    unknown = hanging_remote.key("also-rotated")
    from_loop = hanging_remote.known_key("key-1")
    elapsed = time.monotonic() - started

    hang.release.set()
    refresher.join()
    assert known is cached is not None
    assert from_loop is cached
    assert unknown is None
    assert elapsed < PROMPT_SECONDS, f"waited {elapsed:.2f}s on the fetch in flight"
    assert hang.calls == 2, "one refresh in flight at a time"


def test_a_hung_fetch_fails_closed_at_the_deadline_and_is_not_repeated_until_it_ends(
    hanging_remote: RemoteKeySet, hang: Hang
) -> None:
    hanging_remote.key("key-1")
    hang.active = True

    started = time.monotonic()
    first = hanging_remote.key("rotated")
    elapsed = time.monotonic() - started
    again = hanging_remote.key("rotated")  # the hung fetch is still running

    assert first is None
    assert again is None
    assert elapsed < FETCH_TIMEOUT + 1, f"key() took {elapsed:.1f}s"
    assert hang.calls == 2, "no second fetch while the first one hangs"

    hang.active = False
    hang.release.set()
    deadline = time.monotonic() + 2
    while hang.calls < 3 and time.monotonic() < deadline:
        hanging_remote.key("rotated")
        time.sleep(0.01)
    assert hang.calls == 3, "once the hung fetch ended, the next unknown kid refetches"


@pytest.fixture
def trickling_url() -> Iterator[tuple[str, threading.Event]]:
    """A loopback HTTP server sending its status line and headers one byte every 0.1 s (for 10 s
    at most), and an event set once the client hung up on it."""
    listener = socket.create_server(("127.0.0.1", 0))
    hung_up = threading.Event()

    def serve() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(4096)
            try:
                for byte in b"HTTP/1.1 200 OK\r\nx-pad: " + b"a" * 100:
                    connection.sendall(bytes([byte]))
                    time.sleep(0.1)
            except OSError:
                hung_up.set()

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/jwks.json", hung_up
    listener.close()


def test_a_server_trickling_its_headers_is_cut_off_at_the_deadline(
    trickling_url: tuple[str, threading.Event], clock: FakeClock
) -> None:
    """httpx's timeout is per read, so one header byte every 0.1 s never trips it: the overall
    deadline does, and the fetch's connection is closed then (no fetch left running)."""
    url, hung_up = trickling_url
    remote = RemoteKeySet(url, timeout_seconds=FETCH_TIMEOUT, clock=clock)

    started = time.monotonic()
    found = remote.key("any")
    elapsed = time.monotonic() - started

    assert found is None
    assert elapsed < FETCH_TIMEOUT + 1, f"key() took {elapsed:.1f}s"
    assert hung_up.wait(3), "the abandoned fetch still holds its connection"


def test_remote_key_set_asks_for_an_uncompressed_jwks_and_never_inflates_one(
    clock: FakeClock,
) -> None:
    """A gzip bomb (64 MiB of zeros in ~64 KiB, under the size cap) answered with
    Content-Encoding: gzip although we asked for identity: refused before decompression."""
    compressor = zlib.compressobj(wbits=31)  # gzip framing
    bomb = b"".join(compressor.compress(bytes(1 << 20)) for _ in range(64)) + compressor.flush()
    asked: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.headers.get("Accept-Encoding"))
        headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
        return httpx.Response(200, headers=headers, stream=httpx.ByteStream(bomb))

    remote = RemoteKeySet(JWKS_URL, clock=clock, transport=httpx.MockTransport(handler))
    tracemalloc.start()
    try:
        found = remote.key("key-1")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert found is None
    assert asked == ["identity"]
    assert peak < 8 * 1024 * 1024, f"{peak / 2**20:.0f} MiB allocated while refusing it"

"""JWKS parsing and the file and URL key sets (cache, refresh on unknown kid, rate limit)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from jitbroker.identity.jwks import FileKeySet, RemoteKeySet, parse_jwks

JWKS_URL = "https://issuer.example.test/.well-known/jwks.json"

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


def test_remote_known_key_does_not_wait_for_a_fetch_in_progress(remote: RemoteKeySet) -> None:
    remote.key("key-1")
    with remote._lock:  # another thread fetching
        assert remote.known_key("key-1") is None


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

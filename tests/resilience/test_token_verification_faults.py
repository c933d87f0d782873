"""Scenarios 6 and 7: an issuer's JWKS endpoint down, failing, serving garbage or slow (served
over real HTTP on loopback by the test), and clocks skewed to the edges of the leeway."""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
import redis
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient

from jitbroker.app import create_app
from jitbroker.bootstrap import Broker, build_broker
from jitbroker.config import BrokerConfig, IssuerConfig, Settings, load_config
from jitbroker.identity.dev_issuer import DevIssuer
from jitbroker.identity.jwks import RemoteKeySet
from jitbroker.identity.verifier import TokenVerifier
from tests.integration.support import wait_for
from tests.resilience.support import JwksServer, problem_of

pytestmark = [pytest.mark.integration, pytest.mark.resilience]

REMOTE = "remote-workloads"
# RemoteKeySet's fetch deadline (connect, headers and body in all): what `key_set_for` builds.
FETCH_TIMEOUT_SECONDS = 3.0
# How long a verification from the cached keys may take on a machine other suites share.
PROMPT_SECONDS = 1.0
# Margin on either side of a leeway boundary: the token is signed and checked within it.
SKEW_MARGIN_SECONDS = 5


@dataclass
class FakeClock:
    """The key set's monotonic clock, moved by the test to make its cache stale."""

    now: float = 1_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class RemoteIssuer:
    client: TestClient
    jwks: JwksServer
    clock: FakeClock
    issuer: IssuerConfig
    signer: DevIssuer

    def token(self) -> str:
        """A fresh token (new jti) signed with the key the JWKS publishes."""
        return self.signer.sign(self.issuer, "remote-pipeline")

    def token_with_unknown_kid(self) -> str:
        """A well-formed token of the same issuer, signed by a key its JWKS never published."""
        now = int(time.time())
        claims = {
            "iss": self.issuer.issuer,
            "sub": "remote-pipeline",
            "aud": "jitbroker",
            "iat": now,
            "nbf": now,
            "exp": now + 300,
            "jti": uuid.uuid4().hex,
        }
        key = ec.generate_private_key(ec.SECP256R1())
        return jwt.encode(claims, key, algorithm="ES256", headers={"kid": "rotated-2"})

    def open_task(self, token: str) -> Any:
        return self.client.post(
            "/v1/tasks",
            json={"purpose": "jwks fault"},
            headers={"Authorization": f"Bearer {token}"},
        )

    def make_cache_stale(self) -> None:
        self.clock.now += self.issuer.jwks_cache_seconds + 1


@pytest.fixture
def remote(settings: Settings, state_redis: redis.Redis, tmp_path: Path) -> Iterator[RemoteIssuer]:
    """An issuer whose keys come from `jwks_url` on a loopback server the test controls, wired
    into an in-process broker (the real verifier; its key-set clock is the test's)."""
    signer = DevIssuer(tmp_path / "remote-keys")
    signer.ensure_keys(REMOTE)
    jwks = JwksServer(document=signer.jwks(REMOTE))
    jwks.start()
    config_dir = tmp_path / "config"
    shutil.copytree(settings.config_dir, config_dir)
    (config_dir / "remote-issuer.yaml").write_text(
        json.dumps(
            {
                "issuers": [
                    {
                        "name": REMOTE,
                        "issuer": "https://issuer.test/remote",
                        "jwks_url": jwks.url,
                        "audiences": ["jitbroker"],
                        "algorithms": ["ES256"],
                        # Every unknown kid refetches: the fault is met on each request.
                        "jwks_min_refresh_seconds": 0,
                    }
                ],
                "workloads": [
                    {"id": "remote-pipeline", "issuer": REMOTE, "subject": "remote-pipeline"}
                ],
            }
        )
    )
    config: BrokerConfig = load_config(config_dir)
    issuer = config.issuers[REMOTE]
    assert issuer.jwks_url is not None
    clock = FakeClock()
    key_set = RemoteKeySet(
        issuer.jwks_url,
        cache_seconds=issuer.jwks_cache_seconds,
        min_refresh_seconds=issuer.jwks_min_refresh_seconds,
        timeout_seconds=FETCH_TIMEOUT_SECONDS,
        clock=clock,
    )
    broker = build_broker(settings.model_copy(update={"config_dir": config_dir}), config=config)
    broker = dataclasses.replace(broker, verifier=TokenVerifier(config, key_sets={REMOTE: key_set}))
    try:
        with TestClient(create_app(broker=broker)) as client:
            yield RemoteIssuer(client, jwks, clock, issuer, signer)
    finally:
        jwks.stop()


def assert_refused_401(response: Any, reason: str) -> None:
    assert response.status_code == 401, response.text
    problem = problem_of(response)
    assert problem["type"].endswith("unauthenticated")
    assert reason in problem["detail"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("fault", ["down", "error", "garbage", "bad-json"])
def test_jwks_fault_keeps_cached_keys_working_and_refuses_unknown_kids_with_401(
    remote: RemoteIssuer, fault: str
) -> None:
    """Pass: after the JWKS was fetched once, the endpoint goes `down` (connection refused),
    answers 503 (`error`), serves HTML with 200 (`garbage`) or a key set with no usable key
    (`bad-json`); with the cache stale, so every verification tries a refresh: a token signed
    with the cached key is still accepted (201), and a token with an unknown kid is refused
    with 401 problem+json (fail closed), never a 5xx."""
    assert remote.open_task(remote.token()).status_code == 201
    fetched = remote.jwks.fetches
    if fault == "down":
        remote.jwks.stop()
    remote.jwks.mode = fault
    remote.make_cache_stale()

    cached = remote.open_task(remote.token())
    unknown = remote.open_task(remote.token_with_unknown_kid())

    assert cached.status_code == 201, cached.text
    assert_refused_401(unknown, "signing key is not in the issuer's key set")
    if fault != "down":
        assert remote.jwks.fetches >= fetched + 2, "each verification tried a refresh"


@pytest.mark.parametrize("fault", ["slow", "trickle", "trickle-headers"])
def test_slow_jwks_endpoint_fails_closed_within_the_fetch_timeout(
    remote: RemoteIssuer, fault: str
) -> None:
    """Pass: with the JWKS endpoint answering only after 30 s (`slow`), sending its body one
    byte every half second (`trickle`) or its status line and headers one byte every 0.2 s
    (`trickle-headers`), a token with an unknown kid is refused with 401 problem+json within the
    3 s fetch deadline plus 2 s, and a token signed with the cached key is accepted again once
    the endpoint answers normally."""
    assert remote.open_task(remote.token()).status_code == 201
    remote.jwks.mode = fault

    started = time.monotonic()
    unknown = remote.open_task(remote.token_with_unknown_kid())
    elapsed = time.monotonic() - started

    assert_refused_401(unknown, "signing key is not in the issuer's key set")
    assert elapsed < FETCH_TIMEOUT_SECONDS + 2, f"the request hung {elapsed:.1f}s"
    remote.jwks.mode = "ok"
    assert remote.open_task(remote.token()).status_code == 201


def test_jwks_refresh_trickling_its_headers_blocks_no_other_verification(
    remote: RemoteIssuer,
) -> None:
    """Pass: while a token with an unknown kid waits on a refresh whose JWKS endpoint sends its
    headers one byte every 0.2 s, tokens signed with the cached key (from another thread) are
    accepted (201) within 1 s each, and a second unknown kid is refused (401) as promptly;
    the first is refused with 401 problem+json within the 3 s fetch deadline plus 2 s; and once
    the endpoint answers normally again, the next unknown kid refetches (the abandoned fetch
    let go of the one refresh slot)."""
    assert remote.open_task(remote.token()).status_code == 201
    remote.jwks.mode = "trickle-headers"
    fetched = remote.jwks.fetches
    with ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        waiting = pool.submit(remote.open_task, remote.token_with_unknown_kid())
        wait_for(lambda: remote.jwks.fetches > fetched, timeout=5, what="the refresh to start")

        meanwhile = []
        for token in (remote.token(), remote.token(), remote.token_with_unknown_kid()):
            sent = time.monotonic()
            meanwhile.append((remote.open_task(token), time.monotonic() - sent))
        overlapped = not waiting.done()
        unknown = waiting.result(timeout=FETCH_TIMEOUT_SECONDS + 30)
        elapsed = time.monotonic() - started

    for response, took in meanwhile[:2]:
        assert response.status_code == 201, response.text
        assert took < PROMPT_SECONDS, f"a cached-key verification waited {took:.1f}s"
    response, took = meanwhile[2]
    assert_refused_401(response, "signing key is not in the issuer's key set")
    assert took < PROMPT_SECONDS, f"an unknown kid waited {took:.1f}s on the refresh in flight"
    assert overlapped, "the refresh was over before the other requests were sent"
    assert_refused_401(unknown, "signing key is not in the issuer's key set")
    assert elapsed < FETCH_TIMEOUT_SECONDS + 2, f"the request hung {elapsed:.1f}s"

    remote.jwks.mode = "ok"
    fetched = remote.jwks.fetches
    wait_for(
        lambda: (
            remote.open_task(remote.token_with_unknown_kid()).status_code == 401
            and remote.jwks.fetches > fetched
        ),
        timeout=5,
        what="an unknown kid to refetch after the abandoned fetch",
    )


SKEWED = [
    pytest.param("iat", +1, 201, id="iat-in-the-future-inside-leeway"),
    pytest.param("iat", +1, 401, id="iat-in-the-future-outside-leeway"),
    pytest.param("nbf", +1, 201, id="nbf-in-the-future-inside-leeway"),
    pytest.param("nbf", +1, 401, id="nbf-in-the-future-outside-leeway"),
    pytest.param("exp", -1, 201, id="exp-in-the-past-inside-leeway"),
    pytest.param("exp", -1, 401, id="exp-in-the-past-outside-leeway"),
]


@pytest.mark.parametrize(("claim", "direction", "status"), SKEWED)
def test_clock_skew_is_accepted_inside_the_leeway_and_refused_outside(
    client: TestClient,
    broker: Broker,
    dev_issuer: DevIssuer,
    claim: str,
    direction: int,
    status: int,
) -> None:
    """Pass: a token whose `iat`/`nbf` lies in the future, or whose `exp` lies in the past, by
    the issuer's leeway minus 5 s is accepted (201); by the leeway plus 5 s it is refused with
    401 problem+json naming why (not yet valid / expired)."""
    issuer = broker.config.issuers["test-workloads"]
    leeway = issuer.leeway_seconds
    assert leeway > SKEW_MARGIN_SECONDS
    offset = leeway - SKEW_MARGIN_SECONDS if status == 201 else leeway + SKEW_MARGIN_SECONDS
    now = int(time.time())
    claims = {"iat": now, "nbf": now, "exp": now + 300}
    if claim == "exp":
        claims.update(iat=now - 600, nbf=now - 600)
    claims[claim] = now + direction * offset
    token = dev_issuer.workload_token(broker.config, "demo-pipeline", extra_claims=claims)

    response = client.post(
        "/v1/tasks",
        json={"purpose": "clock skew"},
        headers={"Authorization": f"Bearer {token}"},
    )

    if status == 201:
        assert response.status_code == 201, response.text
    else:
        assert_refused_401(response, "expired" if claim == "exp" else "not yet valid")

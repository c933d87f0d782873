"""Gateway checks: the asyncio path answers exactly what the sync one does, and the direct ASGI
path answers exactly what the FastAPI routes do."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import fakeredis
import pytest
import redis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from fastapi.testclient import TestClient
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from jitbroker.app import create_app
from jitbroker.bootstrap import Broker
from jitbroker.routes import endpoints
from jitbroker.routes.repository import AsyncRouteReader, RouteRepository, route_key
from jitbroker.routes.schemas import AccessCheck, AccessDecision, Route
from jitbroker.routes.service import check_access, check_access_async, credential_fingerprint
from jitbroker.signing import BrokerSigningKey

SECRET = "route-credential-of-grt_live"
OTHER_SECRET = "route-credential-of-grt_other"
DB = "postgres://db:5432/app"
API = "https://api.internal/orders/42"


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def gateway_broker(broker: Broker, server: fakeredis.FakeServer) -> Broker:
    """The memory broker with its routes on a fake server an asyncio client can share."""
    prefix = broker.settings.key_prefix
    broker.routes = RouteRepository(fakeredis.FakeRedis(server=server), prefix)
    broker.open_async_redis = lambda: fakeredis.FakeAsyncRedis(server=server)
    return broker


def open_route(broker: Broker, grant_id: str, secret: str, *, minutes: int = 5) -> None:
    route = Route(
        grant_id=grant_id,
        workload="demo-pipeline",
        task_id=f"tsk_{grant_id}",
        profile="demo-db",
        destinations=[DB, "https://api.internal/orders/*"],
        expires_at=broker.clock() + timedelta(minutes=minutes),
    )
    broker.routes.open(route, credential_fingerprint(broker, secret))


@pytest.fixture
def routes(gateway_broker: Broker) -> Broker:
    """A live grant, another live grant, and an expired one (its keys not yet gone)."""
    open_route(gateway_broker, "grt_live", SECRET)
    open_route(gateway_broker, "grt_other", OTHER_SECRET)
    open_route(gateway_broker, "grt_expired", "route-credential-of-grt_expired", minutes=-1)
    return gateway_broker


CHECKS = {
    "live grant id": AccessCheck(destination=DB, grant_id="grt_live"),
    "live credential": AccessCheck(destination=DB, credential=SECRET),
    "credential and its own grant id": AccessCheck(
        destination=API, credential=SECRET, grant_id="grt_live"
    ),
    "credential of another grant": AccessCheck(
        destination=DB, credential=OTHER_SECRET, grant_id="grt_live"
    ),
    "unknown credential": AccessCheck(destination=DB, credential="never-issued"),
    "no route": AccessCheck(destination=DB, grant_id="grt_closed"),
    "expired grant": AccessCheck(destination=DB, grant_id="grt_expired"),
    "destination not covered": AccessCheck(
        destination="postgres://db:5432/other", grant_id="grt_live"
    ),
}


@pytest.mark.parametrize("name", CHECKS)
def test_async_check_answers_what_the_sync_check_answers(
    routes: Broker, server: fakeredis.FakeServer, name: str
) -> None:
    reader = AsyncRouteReader(fakeredis.FakeAsyncRedis(server=server), routes.settings.key_prefix)

    answered = asyncio.run(check_access_async(routes, check=CHECKS[name], routes=reader))

    assert answered == check_access(routes, check=CHECKS[name])


def test_async_check_denies_a_route_closed_a_moment_ago(
    routes: Broker, server: fakeredis.FakeServer
) -> None:
    reader = AsyncRouteReader(fakeredis.FakeAsyncRedis(server=server), routes.settings.key_prefix)
    check = AccessCheck(destination=DB, credential=SECRET)
    assert asyncio.run(check_access_async(routes, check=check, routes=reader)).allow

    routes.routes.close("grt_live")

    assert not asyncio.run(check_access_async(routes, check=check, routes=reader)).allow


def test_async_reader_turns_redis_errors_into_state_unavailable(broker: Broker) -> None:
    unreachable = redis.asyncio.Redis(port=1, retry=AsyncRetry(NoBackoff(), 0))
    reader = AsyncRouteReader(unreachable, broker.settings.key_prefix)

    with pytest.raises(Exception, match="cannot read route") as raised:
        asyncio.run(reader.get("grt_live"))

    assert raised.type.__name__ == "StateUnavailable"


def without_direct_path(app: FastAPI) -> FastAPI:
    """The same app answering every check through FastAPI's routes."""
    app.user_middleware = [
        m for m in app.user_middleware if m.cls is not endpoints.DirectGatewayChecks
    ]
    return app


def answered(app: FastAPI, request: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (but the date) and body, from the app with its lifespan running."""
    with TestClient(app, raise_server_exceptions=False) as client:
        return sent(client, request)


@pytest.fixture
def direct(routes: Broker) -> Iterator[TestClient]:
    with TestClient(create_app(broker=routes), raise_server_exceptions=False) as client:
        yield client


def sent(client: TestClient, request: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    response = client.request(**request)
    headers = {k: v for k, v in response.headers.items() if k != "date"}
    return response.status_code, headers, response.content


REQUESTS: dict[str, dict[str, Any]] = {
    "allow by grant id": {
        "method": "POST",
        "url": "/v1/authz/check",
        "json": {"destination": DB, "grant_id": "grt_live"},
    },
    "allow by credential, charset in the content type": {
        "method": "POST",
        "url": "/v1/authz/check",
        "content": b'{"destination": "postgres://db:5432/app", "credential": "%s"}'
        % SECRET.encode(),
        "headers": {"content-type": "application/json; charset=utf-8"},
    },
    "deny an expired grant": {
        "method": "POST",
        "url": "/v1/authz/check",
        "json": {"destination": DB, "grant_id": "grt_expired"},
    },
    "deny another grant's credential": {
        "method": "POST",
        "url": "/v1/authz/check",
        "json": {"destination": DB, "grant_id": "grt_live", "credential": OTHER_SECRET},
    },
    "neither grant id nor credential": {
        "method": "POST",
        "url": "/v1/authz/check",
        "json": {"destination": DB},
    },
    "an unknown field": {
        "method": "POST",
        "url": "/v1/authz/check",
        "json": {"destination": DB, "grant_id": "grt_live", "admin": True},
    },
    "broken JSON": {
        "method": "POST",
        "url": "/v1/authz/check",
        "content": b'{"destination": ',
        "headers": {"content-type": "application/json"},
    },
    "a JSON list": {"method": "POST", "url": "/v1/authz/check", "json": [DB]},
    "a plain-text body": {
        "method": "POST",
        "url": "/v1/authz/check",
        "content": b'{"destination": "postgres://db:5432/app", "grant_id": "grt_live"}',
        "headers": {"content-type": "text/plain"},
    },
    "a streamed (chunked) body": {
        "method": "POST",
        "url": "/v1/authz/check",
        "content": [b'{"destination": "postgres://db:5432/app", ', b'"grant_id": "grt_live"}'],
        "headers": {"content-type": "application/json"},
    },
    "GET on the JSON form": {"method": "GET", "url": "/v1/authz/check"},
    "header form allow": {
        "method": "GET",
        "url": "/v1/authz/http/orders/42",
        "headers": {"authorization": f"Bearer {SECRET}", "host": "api.internal"},
    },
    "header form HEAD": {
        "method": "HEAD",
        "url": "/v1/authz/http/orders/42",
        "headers": {"authorization": f"Bearer {SECRET}", "host": "api.internal"},
    },
    "header form with the original URI and a grant hint": {
        "method": "POST",
        "url": "/v1/authz/http/ignored",
        "headers": {
            "authorization": f"bearer {SECRET}",
            "x-forwarded-host": "API.internal",
            "x-forwarded-proto": "https",
            "x-original-uri": "/orders/7?x=1",
            "x-jitbroker-grant": "grt_other",
        },
    },
    "header form non-canonical path": {
        "method": "GET",
        "url": "/v1/authz/http/x",
        "headers": {
            "authorization": f"Bearer {SECRET}",
            "host": "api.internal",
            "x-original-uri": "/orders/..%2fadmin",
        },
    },
    "header form without a credential": {
        "method": "GET",
        "url": "/v1/authz/http/orders/42",
        "headers": {"host": "api.internal"},
    },
    "header form with an unlisted method": {"method": "TRACE", "url": "/v1/authz/http/orders/42"},
    "header form without the trailing slash": {"method": "GET", "url": "/v1/authz/http"},
}


@pytest.mark.parametrize("name", REQUESTS)
def test_direct_path_answers_what_the_fastapi_routes_answer(routes: Broker, name: str) -> None:
    direct = answered(create_app(broker=routes), REQUESTS[name])

    assert direct == answered(without_direct_path(create_app(broker=routes)), REQUESTS[name])


def test_direct_path_allows_a_live_grant_with_grant_and_workload_headers(
    direct: TestClient,
) -> None:
    response = direct.post("/v1/authz/check", json={"destination": DB, "credential": SECRET})

    assert response.status_code == 200
    assert response.headers["x-jitbroker-grant"] == "grt_live"
    assert response.headers["x-jitbroker-workload"] == "demo-pipeline"
    assert response.json()["reason"] == "live grant with an open route"


def test_direct_path_denies_as_soon_as_the_route_closes(direct: TestClient, routes: Broker) -> None:
    body = {"destination": DB, "credential": SECRET}
    assert direct.post("/v1/authz/check", json=body).status_code == 200

    routes.routes.close("grt_live")

    denied = direct.post("/v1/authz/check", json=body)
    assert denied.status_code == 403
    assert "x-jitbroker-grant" not in denied.headers


def test_oversized_check_is_refused_before_the_direct_path(direct: TestClient) -> None:
    body = {"destination": DB, "grant_id": "grt_live", "credential": "x" * 70_000}

    response = direct.post("/v1/authz/check", json=body)

    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"


def test_redis_down_is_a_problem_503_on_either_path(routes: Broker) -> None:
    def unreachable() -> redis.asyncio.Redis:
        return redis.asyncio.Redis(port=1, retry=AsyncRetry(NoBackoff(), 0))

    routes.open_async_redis = unreachable
    routes.routes = RouteRepository(redis.Redis(port=1, retry=Retry(NoBackoff(), 0)), "jb")
    body = {"destination": DB, "grant_id": "grt_live"}
    answers = []
    for app in (create_app(broker=routes), without_direct_path(create_app(broker=routes))):
        with TestClient(app, raise_server_exceptions=False) as client:
            response = client.post("/v1/authz/check", json=body)
        answers.append((response.status_code, response.headers["content-type"], response.json()))

    assert answers[0] == answers[1]
    assert answers[0][0] == 503
    assert answers[0][1] == "application/problem+json"


def test_without_an_asyncio_client_checks_run_on_the_thread_pool(broker: Broker) -> None:
    open_route(broker, "grt_live", SECRET)
    assert broker.open_async_redis is None  # a sync client was handed in

    with TestClient(create_app(broker=broker)) as client:
        response = client.post("/v1/authz/check", json={"destination": DB, "credential": SECRET})

    assert response.status_code == 200


def test_lifespan_opens_one_route_reader_and_closes_it(routes: Broker) -> None:
    app = create_app(broker=routes)
    with TestClient(app):
        assert isinstance(app.state.route_reader, AsyncRouteReader)

    assert app.state.route_reader is None


@pytest.mark.parametrize(
    "request_",
    [
        {"method": "POST", "url": "/v1/authz/check", "json": {"destination": DB, "grant_id": "g"}},
        {"method": "GET", "url": "/v1/authz/http/a", "headers": {"authorization": "Bearer x"}},
        {"method": "OPTIONS", "url": "/v1/authz/http/", "headers": {"authorization": "Bearer x"}},
    ],
)
def test_fastapi_routes_what_the_direct_path_takes_to_the_gateway_endpoints(
    routes: Broker, monkeypatch: pytest.MonkeyPatch, request_: dict[str, Any]
) -> None:
    decided: list[AccessCheck] = []
    decide = endpoints.decide

    async def recording(state: Any, check: AccessCheck) -> AccessDecision:
        decided.append(check)
        return await decide(state, check)

    monkeypatch.setattr(endpoints, "decide", recording)

    answered(without_direct_path(create_app(broker=routes)), request_)

    assert len(decided) == 1


def test_decision_json_leaves_out_empty_fields() -> None:
    response = endpoints.answer(AccessDecision(allow=False, reason="no credential presented"))

    assert response.status_code == 403
    assert response.body == b'{"allow":false,"reason":"no credential presented"}'
    assert response.headers["content-type"] == "application/json"


def test_direct_path_answers_well_formed_checks_without_fastapi_routing(routes: Broker) -> None:
    app = create_app(broker=routes)
    app.router.routes.clear()
    check = {
        "method": "POST",
        "url": "/v1/authz/check",
        "json": {"destination": DB, "grant_id": "grt_live"},
    }
    forwarded = {
        "method": "GET",
        "url": "/v1/authz/http/orders/42",
        "headers": {"authorization": f"Bearer {SECRET}", "host": "api.internal"},
    }

    assert answered(app, check)[0] == 200
    assert answered(app, forwarded)[0] == 200
    assert answered(app, {"method": "GET", "url": "/v1/authz/check"})[0] == 404


class CountingRedis(fakeredis.FakeRedis):
    """Counts the commands (round trips) sent."""

    sent = 0

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.sent += 1
        return super().execute_command(*args, **options)


class CountingAsyncRedis(fakeredis.FakeAsyncRedis):
    sent = 0

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        self.sent += 1
        return await super().execute_command(*args, **options)


def test_credential_check_is_one_round_trip_on_the_sync_repository(
    routes: Broker, server: fakeredis.FakeServer
) -> None:
    client = CountingRedis(server=server)
    routes.routes = RouteRepository(client, routes.settings.key_prefix)
    check = AccessCheck(destination=DB, credential=SECRET)
    assert check_access(routes, check=check).allow  # loads the script once
    client.sent = 0

    assert check_access(routes, check=check).allow
    assert client.sent == 1


def test_credential_check_is_one_round_trip_on_the_async_reader(
    routes: Broker, server: fakeredis.FakeServer
) -> None:
    client = CountingAsyncRedis(server=server)
    reader = AsyncRouteReader(client, routes.settings.key_prefix)
    check = AccessCheck(destination=DB, credential=SECRET)

    async def twice() -> tuple[AccessDecision, int]:
        await check_access_async(routes, check=check, routes=reader)
        client.sent = 0
        decision = await check_access_async(routes, check=check, routes=reader)
        return decision, client.sent

    decision, sent = asyncio.run(twice())

    assert decision.allow
    assert sent == 1


def test_credential_whose_route_hash_is_gone_is_denied_on_either_reader(
    routes: Broker, server: fakeredis.FakeServer
) -> None:
    fakeredis.FakeRedis(server=server).delete(route_key(routes.settings.key_prefix, "grt_live"))
    reader = AsyncRouteReader(fakeredis.FakeAsyncRedis(server=server), routes.settings.key_prefix)
    check = AccessCheck(destination=DB, credential=SECRET)

    sync = check_access(routes, check=check)

    assert sync == AccessDecision(
        allow=False, reason="no open route for this grant", grant_id="grt_live"
    )
    assert asyncio.run(check_access_async(routes, check=check, routes=reader)) == sync


def test_route_opened_under_the_retiring_signing_key_is_found_in_one_check(
    routes: Broker, server: fakeredis.FakeServer
) -> None:
    retiring = routes.signing_key
    routes.signing_key = BrokerSigningKey(Ed25519PrivateKey.generate())
    routes.previous_signing_key = retiring
    reader = AsyncRouteReader(fakeredis.FakeAsyncRedis(server=server), routes.settings.key_prefix)
    check = AccessCheck(destination=DB, credential=SECRET)

    sync = check_access(routes, check=check)

    assert sync.allow
    assert sync.grant_id == "grt_live"
    assert asyncio.run(check_access_async(routes, check=check, routes=reader)) == sync


def test_route_fingerprint_key_is_derived_once_per_signing_key(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = broker.signing_key
    first = credential_fingerprint(broker, SECRET)
    monkeypatch.setattr(key, "_derive", lambda purpose: pytest.fail(f"derived {purpose} again"))

    assert credential_fingerprint(broker, SECRET) == first

"""Gateway access checks: JSON for anything, and a header form for Envoy ext_authz / NGINX."""

from __future__ import annotations

import json
from collections.abc import Awaitable
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jitbroker.bootstrap import Broker
from jitbroker.errors import BrokerError
from jitbroker.routes import service
from jitbroker.routes.repository import AsyncRouteReader
from jitbroker.routes.schemas import AccessCheck, AccessDecision

router = APIRouter(prefix="/authz", tags=["routes"])

GRANT_HEADER = "x-jitbroker-grant"
CHECK_PATH = "/v1/authz/check"
FORWARDED_PREFIX = "/v1/authz/http/"
FORWARDED_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def answer(decision: AccessDecision) -> Response:
    """200 or 403 with the decision as JSON; on allow, the grant and workload as headers too."""
    headers = None
    if decision.allow and decision.grant_id and decision.workload:
        headers = {
            "X-Jitbroker-Grant": decision.grant_id,
            "X-Jitbroker-Workload": decision.workload,
        }
    return Response(
        decision.model_dump_json(exclude_none=True),
        status_code=200 if decision.allow else 403,
        headers=headers,
        media_type="application/json",
    )


async def decide(state: Any, check: AccessCheck) -> AccessDecision:
    """The check on this process's asyncio Redis reader, or on the thread pool without one."""
    broker: Broker = state.broker
    routes: AsyncRouteReader | None = getattr(state, "route_reader", None)
    if routes is None:
        return await run_in_threadpool(service.check_access, broker, check=check)
    return await service.check_access_async(broker, check=check, routes=routes)


# The handlers are `async def` with no dependencies: a gateway check never waits for a thread.
@router.post("/check", response_model=AccessDecision, responses={403: {"model": AccessDecision}})
async def check(body: AccessCheck, request: Request) -> Response:
    """200 if this grant (or credential) may reach `destination` now, else 403."""
    return answer(await decide(request.app.state, body))


@router.api_route(
    "/http/{path:path}",
    methods=sorted(FORWARDED_METHODS),
    include_in_schema=False,
)
async def check_forwarded_request(path: str, request: Request) -> Response:
    """Envoy ext_authz (path_prefix) and NGINX auth_request: the original request's headers."""
    return await forwarded_answer(request.app.state, request.headers, path)


async def forwarded_answer(state: Any, headers: Headers, path: str) -> Response:
    """The header form's answer: the credential from `Authorization`, the destination rebuilt."""
    host = headers.get("x-forwarded-host") or headers.get("host", "")
    scheme = headers.get("x-forwarded-proto", "https")
    original = headers.get("x-original-uri") or "/" + path
    bearer = headers.get("authorization", "")
    credential = bearer[7:].strip() if bearer.lower().startswith("bearer ") else None
    # The client controls these headers: the credential is what proves the caller; a grant id
    # header is only a hint that must name the credential's own grant.
    grant_id = headers.get(GRANT_HEADER)
    if not credential:
        return answer(AccessDecision(allow=False, reason="no credential presented"))
    destination = service.normalised_destination(scheme, host, original)
    if destination is None:
        return answer(AccessDecision(allow=False, reason="the request path is not canonical"))
    check_request = AccessCheck(
        destination=destination,
        grant_id=grant_id[:64] if grant_id else None,
        credential=credential[:8192],
    )
    return answer(await decide(state, check_request))


class DirectGatewayChecks:
    """Answer well-formed gateway checks on the ASGI layer, ahead of FastAPI's routing and
    dependency machinery (most of a check's cost); hand anything else (bad JSON, invalid or
    chunked bodies, other content types and methods) to the FastAPI routes above, whose answers
    these are. Install it inside the body-size limit, so oversized bodies never get here."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path.startswith(FORWARDED_PREFIX) and scope["method"] in FORWARDED_METHODS:
            original_path = path[len(FORWARDED_PREFIX) :]
            answering = forwarded_answer(scope["app"].state, Headers(scope=scope), original_path)
            await (await _guarded(scope, answering))(scope, receive, send)
        elif path == CHECK_PATH and scope["method"] == "POST":
            await self._check(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _check(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope)
        media_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media_type != "application/json" or "content-length" not in headers:
            await self.app(scope, receive, send)
            return
        body, more_body = b"", True
        while more_body:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            more_body = message.get("more_body", False)
        try:
            check = AccessCheck.model_validate(json.loads(body))
        except (ValueError, RecursionError, ValidationError):
            # FastAPI parses it again and answers as it always has (a problem+json 422).
            await self.app(scope, _replay(body, receive), send)
            return
        deciding = decide(scope["app"].state, check)
        await (await _guarded(scope, deciding))(scope, receive, send)


async def _guarded(scope: Scope, answering: Awaitable[Response | AccessDecision]) -> Response:
    """The answer, or the app's own problem+json answer to a BrokerError (e.g. Redis down)."""
    try:
        result = await answering
    except BrokerError as exc:
        handler = scope["app"].exception_handlers.get(BrokerError)
        if handler is None:
            raise
        error: Response = await handler(Request(scope), exc)
        return error
    return result if isinstance(result, Response) else answer(result)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands over the already-read body once, then defers to the real one."""
    pending = True

    async def replayed() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed

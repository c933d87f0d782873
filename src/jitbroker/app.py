"""create_app(): the FastAPI application, its lifespan and the one problem+json handler."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import REGISTRY
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jitbroker import health
from jitbroker.api import v1
from jitbroker.bootstrap import Broker, build_broker
from jitbroker.config import Settings
from jitbroker.config_reload import watch_config
from jitbroker.errors import PROBLEM_BASE, BrokerError, PayloadTooLarge
from jitbroker.identity import dev_endpoints
from jitbroker.metrics import BrokerStateCollector
from jitbroker.openapi_spec import finish_spec
from jitbroker.revocation.failures import failing_counts
from jitbroker.routes.endpoints import DirectGatewayChecks
from jitbroker.routes.repository import AsyncRouteReader
from jitbroker.ui.endpoints import router as ui_router

log = logging.getLogger(__name__)
PROBLEM_JSON = "application/problem+json"
MAX_BODY_BYTES = 64 * 1024


def create_app(settings: Settings | None = None, *, broker: Broker | None = None) -> FastAPI:
    """Build the API; pass `broker` to reuse one already wired (tests), else built from settings."""
    broker = broker or build_broker(settings or Settings())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        collector = BrokerStateCollector(
            broker.revocation_stats, broker.ledger, failing=lambda: failing_counts(broker)
        )
        REGISTRY.register(collector)
        stop_watching = threading.Event()
        threading.Thread(
            target=watch_config, args=(broker, stop_watching), name="config-watch", daemon=True
        ).start()
        # Gateway checks read routes on this event loop's own asyncio client.
        route_reader = None
        if broker.open_async_redis is not None:
            route_reader = AsyncRouteReader(broker.open_async_redis(), broker.settings.key_prefix)
        app.state.route_reader = route_reader
        try:
            yield
        finally:
            stop_watching.set()
            REGISTRY.unregister(collector)
            app.state.route_reader = None
            if route_reader is not None:
                await route_reader.close()
            broker.redis.close()

    app = FastAPI(
        title="jitbroker",
        version="0.1.0",
        summary="Just-in-time credentials for non-human identities, bound to a task.",
        lifespan=lifespan,
    )
    app.state.broker = broker
    app.include_router(v1)
    app.include_router(health.router)
    app.include_router(ui_router)
    if broker.settings.dev_issuer_dir is not None:
        app.include_router(dev_endpoints.router)
    _install_problem_handlers(app)
    # Added first, so it runs inside the body-size limit.
    app.add_middleware(DirectGatewayChecks)
    app.add_middleware(BodySizeLimit, limit=MAX_BODY_BYTES)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = finish_spec(FastAPI.openapi(app))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


class BodyTooLarge(StarletteHTTPException):
    """Raised from `receive` when a streamed body passes the limit; rendered as a 413 problem."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is larger than {limit} bytes")


class BodySizeLimit:
    """Refuse request bodies over `limit` bytes: by Content-Length up front, else as they stream."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                error = PayloadTooLarge(f"request body is larger than {self.limit} bytes")
                response = _problem(413, error.problem(scope["path"]), {"Connection": "close"})
                await response(scope, receive, send)
                return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        await self.app(scope, limited_receive, send)


def _problem(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(BrokerError)
    async def broker_error(request: Request, exc: BrokerError) -> JSONResponse:
        return _problem(exc.status, exc.problem(request.url.path), exc.headers)

    @app.exception_handler(BodyTooLarge)
    async def body_too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
        error = PayloadTooLarge(str(exc.detail))
        return _problem(413, error.problem(request.url.path), {"Connection": "close"})

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Field locations and messages only: input values are never echoed back.
        errors = [
            {"field": ".".join(str(p) for p in err["loc"]), "message": err["msg"]}
            for err in exc.errors()
        ]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return _problem(
            422,
            {
                "type": PROBLEM_BASE + "invalid-request",
                "title": "Invalid request",
                "status": 422,
                "detail": detail,
                "instance": request.url.path,
                "errors": errors,
            },
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _problem(
            exc.status_code,
            {
                "type": "about:blank",
                "title": str(exc.detail),
                "status": exc.status_code,
                "detail": str(exc.detail),
                "instance": request.url.path,
            },
            dict(exc.headers or {}),
        )

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, _: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _problem(
            500,
            {
                "type": PROBLEM_BASE + "internal",
                "title": "Internal error",
                "status": 500,
                "detail": "an unexpected error occurred; it has been logged",
                "instance": request.url.path,
            },
        )

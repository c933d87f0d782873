"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import redis
from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from jitbroker.identity.dependencies import BrokerDep

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(broker: BrokerDep) -> JSONResponse:
    """Redis and OpenBao are reachable (and OpenBao is unsealed and accepts our token)."""
    try:
        redis_ok = bool(broker.redis.ping())
    except redis.RedisError:
        redis_ok = False
    vault_ok = broker.vault.is_ready()
    ready = redis_ok and vault_ok
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "redis": redis_ok, "openbao": vault_ok},
        status_code=200 if ready else 503,
    )


@router.get("/metrics")
def prometheus_metrics() -> Response:
    """Prometheus exposition of issuance, decision and revocation metrics."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

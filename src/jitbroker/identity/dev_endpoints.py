"""The dev issuers' JWKS, served by the local stack only (when JITBROKER_DEV_ISSUER_DIR is set)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from jitbroker.errors import NotFound
from jitbroker.identity.dependencies import BrokerDep
from jitbroker.identity.dev_issuer import DevIssuer

router = APIRouter(prefix="/dev", tags=["dev"], include_in_schema=False)


@router.get("/issuers/{issuer}/jwks.json")
def dev_jwks(issuer: str, broker: BrokerDep) -> dict[str, Any]:
    directory = broker.settings.dev_issuer_dir
    if directory is None or issuer not in broker.config.issuers:
        raise NotFound(f"no dev issuer {issuer!r}")
    dev = DevIssuer(directory)
    if not dev.jwks_path(issuer).exists():
        raise NotFound(f"dev issuer {issuer!r} has no keys yet")
    return dev.jwks(issuer)

"""Gateway access checks: JSON for anything, and a header form for Envoy ext_authz / NGINX."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from jitbroker.identity.dependencies import BrokerDep
from jitbroker.routes import service
from jitbroker.routes.schemas import AccessCheck, AccessDecision

router = APIRouter(prefix="/authz", tags=["routes"])

GRANT_HEADER = "x-jitbroker-grant"


def _answer(decision: AccessDecision) -> JSONResponse:
    headers = {}
    if decision.allow and decision.grant_id and decision.workload:
        headers = {
            "X-Jitbroker-Grant": decision.grant_id,
            "X-Jitbroker-Workload": decision.workload,
        }
    return JSONResponse(
        decision.model_dump(exclude_none=True),
        status_code=200 if decision.allow else 403,
        headers=headers,
    )


@router.post("/check", response_model=AccessDecision, responses={403: {"model": AccessDecision}})
def check(body: AccessCheck, broker: BrokerDep) -> JSONResponse:
    """200 if this grant (or credential) may reach `destination` now, else 403."""
    return _answer(service.check_access(broker, check=body))


@router.api_route(
    "/http/{path:path}",
    methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
    include_in_schema=False,
)
def check_forwarded_request(path: str, request: Request, broker: BrokerDep) -> JSONResponse:
    """Envoy ext_authz (path_prefix) and NGINX auth_request: the original request's headers."""
    headers = request.headers
    host = headers.get("x-forwarded-host") or headers.get("host", "")
    scheme = headers.get("x-forwarded-proto", "https")
    original = headers.get("x-original-uri") or "/" + path
    bearer = headers.get("authorization", "")
    credential = bearer[7:].strip() if bearer.lower().startswith("bearer ") else None
    # The client controls these headers: the credential is what proves the caller; a grant id
    # header is only a hint that must name the credential's own grant.
    grant_id = headers.get(GRANT_HEADER)
    if not credential:
        return _answer(AccessDecision(allow=False, reason="no credential presented"))
    destination = service.normalised_destination(scheme, host, original)
    if destination is None:
        return _answer(AccessDecision(allow=False, reason="the request path is not canonical"))
    check_request = AccessCheck(
        destination=destination,
        grant_id=grant_id[:64] if grant_id else None,
        credential=credential[:8192] if credential else None,
    )
    return _answer(service.check_access(broker, check=check_request))

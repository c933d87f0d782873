"""FastAPI dependencies: the Broker, the request context, and the verified caller."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request

from jitbroker import metrics
from jitbroker.audit.events import AuditEvent, RequestContext
from jitbroker.bootstrap import Broker
from jitbroker.errors import Forbidden, Unauthenticated
from jitbroker.identity.replay import refuse_replayed_jti
from jitbroker.identity.schemas import HumanIdentity, Principal, WorkloadIdentity
from jitbroker.ratelimit import enforce_rate_limit


def get_broker(request: Request) -> Broker:
    broker: Broker = request.app.state.broker
    return broker


BrokerDep = Annotated[Broker, Depends(get_broker)]


def request_context(request: Request) -> RequestContext:
    return RequestContext(
        source_ip=request.client.host if request.client else None,
        user_agent=(request.headers.get("user-agent") or "")[:200] or None,
    )


def authenticated_principal(request: Request, broker: BrokerDep) -> Principal:
    """Verify the bearer token (failures audited, 401), then apply the workload's rate limit."""
    principal = verify_presented_token(
        request, broker, lambda: _bearer_token(request.headers.get("authorization"))
    )
    enforce_rate_limit(broker, principal)
    return principal


def verify_presented_token(
    request: Request, broker: Broker, presented: Callable[[], str]
) -> Principal:
    """Verify the token `presented()` returns; audit any failure; remember the token's `jti`."""
    context = request_context(request)
    try:
        principal = broker.verifier.verify(presented())
        refuse_replayed_jti(broker, principal)
    except Unauthenticated as exc:
        metrics.AUTH_FAILURES.inc()
        broker.audit.record(
            AuditEvent(type="auth.failed", outcome="rejected", reason=exc.detail, context=context)
        )
        raise
    request.state.context = context.model_copy(update={"jti": principal.jti})
    return principal


PrincipalDep = Annotated[Principal, Depends(authenticated_principal)]


def current_workload(principal: PrincipalDep) -> WorkloadIdentity:
    if isinstance(principal, HumanIdentity):
        raise Forbidden("this endpoint is for workloads; a human token was presented")
    return principal


def current_human(principal: PrincipalDep) -> HumanIdentity:
    if not isinstance(principal, HumanIdentity):
        raise Forbidden("this endpoint is for people; a workload token was presented")
    return principal


HumanDep = Annotated[HumanIdentity, Depends(current_human)]


def verified_context(request: Request, _: PrincipalDep) -> RequestContext:
    """The request context including the verified token's `jti`."""
    context: RequestContext = request.state.context
    return context


WorkloadDep = Annotated[WorkloadIdentity, Depends(current_workload)]
ContextDep = Annotated[RequestContext, Depends(verified_context)]


def _bearer_token(header: str | None) -> str:
    if not header:
        raise Unauthenticated("missing Authorization: Bearer <token> header")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("Authorization header must use the Bearer scheme")
    return token.strip()

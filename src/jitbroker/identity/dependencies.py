"""FastAPI dependencies: the Broker, the request context, and the verified caller.

FastAPI runs a sync dependency on the thread pool, one hop each: the ones here are `async def`
unless they may block. Verification that may fetch a JWKS, and every Redis call (single-use
`jti`, rate limit, the audit of a failure), runs on the thread pool, in one hop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

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


async def broker_dependency(request: Request) -> Broker:
    """`get_broker` as a dependency, without a thread-pool hop."""
    return get_broker(request)


BrokerDep = Annotated[Broker, Depends(broker_dependency)]


def request_context(request: Request) -> RequestContext:
    return RequestContext(
        source_ip=request.client.host if request.client else None,
        user_agent=(request.headers.get("user-agent") or "")[:200] or None,
    )


async def authenticated_principal(request: Request, broker: BrokerDep) -> Principal:
    """Verify the bearer token (failures audited, 401), then apply the workload's rate limit."""
    header = request.headers.get("authorization")
    principal = _remembered_principal(broker, header)
    if principal is None or _needs_redis(broker, principal):
        return await run_in_threadpool(_authenticate, request, broker, header, principal)
    request.state.context = request_context(request).model_copy(update={"jti": principal.jti})
    return principal


def _remembered_principal(broker: Broker, header: str | None) -> Principal | None:
    """The caller, when the verifier remembers the token (pure CPU); None if it must verify."""
    try:
        token = _bearer_token(header)
    except Unauthenticated:
        return None  # audited on the thread pool
    return broker.verifier.remembered(token)


def _needs_redis(broker: Broker, principal: Principal) -> bool:
    """Whether accepting `principal` touches Redis (single-use `jti`, the rate limit)."""
    issuer = broker.config.issuers.get(principal.issuer)
    single_use = issuer is not None and issuer.single_use_jti
    rate_limited = broker.settings.rate_limit_per_minute > 0 and isinstance(
        principal, WorkloadIdentity
    )
    return single_use or rate_limited


def _authenticate(
    request: Request, broker: Broker, header: str | None, remembered: Principal | None
) -> Principal:
    principal = verify_presented_token(
        request, broker, lambda: _bearer_token(header), remembered=remembered
    )
    enforce_rate_limit(broker, principal)
    return principal


def verify_presented_token(
    request: Request,
    broker: Broker,
    presented: Callable[[], str],
    *,
    remembered: Principal | None = None,
) -> Principal:
    """Verify the token `presented()` returns (unless the verifier already gave `remembered`);
    audit any failure; remember the token's `jti`."""
    context = request_context(request)
    try:
        principal = remembered or broker.verifier.verify(presented())
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


async def current_workload(principal: PrincipalDep) -> WorkloadIdentity:
    if isinstance(principal, HumanIdentity):
        raise Forbidden("this endpoint is for workloads; a human token was presented")
    return principal


async def current_human(principal: PrincipalDep) -> HumanIdentity:
    if not isinstance(principal, HumanIdentity):
        raise Forbidden("this endpoint is for people; a workload token was presented")
    return principal


HumanDep = Annotated[HumanIdentity, Depends(current_human)]


async def verified_context(request: Request, _: PrincipalDep) -> RequestContext:
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

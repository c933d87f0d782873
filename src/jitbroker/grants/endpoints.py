"""HTTP endpoints for grants: parse, call one service function, shape the response."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response, status

from jitbroker.grants import service
from jitbroker.grants.schemas import GrantRequest, GrantState, GrantView, IssuedGrantView
from jitbroker.identity.dependencies import BrokerDep, ContextDep, WorkloadDep

router = APIRouter(tags=["grants"])


@router.post(
    "/tasks/{task_id}/grants",
    status_code=status.HTTP_201_CREATED,
    response_model=IssuedGrantView | GrantView,
    responses={
        202: {"description": "Pending human approval", "model": GrantView},
        200: {
            "description": "Idempotent replay: the grant, without the secret",
            "model": GrantView,
        },
    },
)
def request_grant(
    task_id: str,
    body: GrantRequest,
    response: Response,
    broker: BrokerDep,
    workload: WorkloadDep,
    context: ContextDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> IssuedGrantView | GrantView:
    """Ask for a credential in a task; the secret is in this response and nowhere else."""
    outcome = service.request_grant(
        broker,
        workload=workload,
        task_id=task_id,
        request=body,
        idempotency_key=idempotency_key,
        context=context,
    )
    response.headers["Cache-Control"] = "no-store"
    view = GrantView.of(outcome.grant)
    if outcome.credential is not None:
        return IssuedGrantView(**view.model_dump(), credential=outcome.credential.reveal())
    if outcome.replayed:
        response.status_code = status.HTTP_200_OK
    elif outcome.grant.state == GrantState.pending_approval:
        response.status_code = status.HTTP_202_ACCEPTED
    return view


@router.get("/grants/{grant_id}", response_model=GrantView)
def get_grant(
    grant_id: str,
    broker: BrokerDep,
    workload: WorkloadDep,
    wait: Annotated[float, Query(ge=0, le=300)] = 0,
) -> GrantView:
    """A grant's state, never the secret; `wait=N` long-polls while it awaits approval."""
    if wait > 0:
        return GrantView.of(
            service.wait_for_change(broker, workload=workload, grant_id=grant_id, wait_seconds=wait)
        )
    return GrantView.of(service.get_own_grant(broker, workload=workload, grant_id=grant_id))


@router.post("/grants/{grant_id}/issue", response_model=IssuedGrantView)
def issue_grant(
    grant_id: str,
    response: Response,
    broker: BrokerDep,
    workload: WorkloadDep,
    context: ContextDep,
) -> IssuedGrantView:
    """Issue an approved grant; the secret is in this response and nowhere else."""
    outcome = service.issue_approved_grant(
        broker, workload=workload, grant_id=grant_id, context=context
    )
    assert outcome.credential is not None
    response.headers["Cache-Control"] = "no-store"
    return IssuedGrantView(
        **GrantView.of(outcome.grant).model_dump(), credential=outcome.credential.reveal()
    )


@router.post("/grants/{grant_id}/revoke", response_model=GrantView)
def revoke_grant(
    grant_id: str, broker: BrokerDep, workload: WorkloadDep, context: ContextDep
) -> GrantView:
    """Revoke one grant now (asynchronously; poll the grant for `revoked`)."""
    return GrantView.of(
        service.revoke_own_grant(broker, workload=workload, grant_id=grant_id, context=context)
    )

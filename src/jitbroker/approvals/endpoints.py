"""HTTP endpoints for approvers (human tokens only)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from jitbroker.approvals import service
from jitbroker.approvals.schemas import (
    AcknowledgeRequest,
    ApprovalItem,
    ApproveRequest,
    DenyRequest,
)
from jitbroker.grants.schemas import GrantView
from jitbroker.identity.dependencies import BrokerDep, ContextDep, HumanDep

router = APIRouter(tags=["approvals"])


@router.get("/approvals", response_model=list[ApprovalItem])
def list_approvals(
    broker: BrokerDep,
    approver: HumanDep,
    state: Annotated[Literal["pending", "review"], Query()] = "pending",
) -> list[ApprovalItem]:
    """Requests waiting for the caller's groups, or break-glass grants awaiting review."""
    return service.list_for_approver(broker, approver=approver, state=state)


@router.get("/approvals/{grant_id}", response_model=ApprovalItem)
def get_approval(grant_id: str, broker: BrokerDep, approver: HumanDep) -> ApprovalItem:
    """One request as an approver sees it."""
    return service.get_for_approver(broker, approver=approver, grant_id=grant_id)


@router.post("/grants/{grant_id}/approve", response_model=GrantView)
def approve(
    grant_id: str,
    body: ApproveRequest,
    broker: BrokerDep,
    approver: HumanDep,
    context: ContextDep,
) -> GrantView:
    """Approve, optionally with a shorter TTL or fewer scopes."""
    return GrantView.of(
        service.approve(
            broker,
            approver=approver,
            grant_id=grant_id,
            comment=body.comment,
            ttl_seconds=body.ttl_seconds,
            scopes=body.scopes,
            context=context,
        )
    )


@router.post("/grants/{grant_id}/deny", response_model=GrantView)
def deny(
    grant_id: str, body: DenyRequest, broker: BrokerDep, approver: HumanDep, context: ContextDep
) -> GrantView:
    """Deny the request; it can no longer be issued."""
    return GrantView.of(
        service.deny(
            broker, approver=approver, grant_id=grant_id, comment=body.comment, context=context
        )
    )


@router.post("/grants/{grant_id}/acknowledge", response_model=GrantView)
def acknowledge(
    grant_id: str,
    body: AcknowledgeRequest,
    broker: BrokerDep,
    approver: HumanDep,
    context: ContextDep,
) -> GrantView:
    """Acknowledge a break-glass grant after the fact."""
    return GrantView.of(
        service.acknowledge_break_glass(
            broker, approver=approver, grant_id=grant_id, comment=body.comment, context=context
        )
    )

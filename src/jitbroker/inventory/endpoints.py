"""HTTP endpoints for the inventory (admin groups), sign-off and access reviews (owner team)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from jitbroker.identity.dependencies import BrokerDep, ContextDep, HumanDep
from jitbroker.inventory import service
from jitbroker.inventory.schemas import (
    InventoryItem,
    ReviewDue,
    ReviewRequest,
    SignOff,
    SignOffRequest,
    UnusedScope,
)

router = APIRouter(tags=["inventory and access reviews"])


@router.get("/workloads", response_model=list[InventoryItem])
def list_workloads(broker: BrokerDep, admin: HumanDep) -> list[InventoryItem]:
    """Every workload: owner, environment, kind, privilege, last use and next review."""
    return service.list_inventory(broker, admin=admin)


@router.post("/workloads/{workload_id}/sign-off", response_model=SignOff)
def sign_off(
    workload_id: str,
    body: SignOffRequest,
    broker: BrokerDep,
    person: HumanDep,
    context: ContextDep,
) -> SignOff:
    """The owner team signs off a production workload as configured now (audited)."""
    return service.sign_off_workload(
        broker, person=person, workload_id=workload_id, comment=body.comment, context=context
    )


@router.post("/workloads/{workload_id}/review", response_model=InventoryItem)
def review(
    workload_id: str,
    body: ReviewRequest,
    broker: BrokerDep,
    person: HumanDep,
    context: ContextDep,
) -> InventoryItem:
    """The owner team attests: keep, reduce or retire; restarts the review clock (audited)."""
    return service.review_workload(
        broker,
        person=person,
        workload_id=workload_id,
        decision=body.decision,
        comment=body.comment,
        context=context,
    )


@router.get("/reviews/due", response_model=list[ReviewDue])
def list_reviews_due(broker: BrokerDep, admin: HumanDep) -> list[ReviewDue]:
    """Workloads whose access review is overdue, and when each one is suspended."""
    return service.reviews_due(broker, admin=admin)


@router.get("/reports/unused", response_model=list[UnusedScope])
def report_unused(
    broker: BrokerDep,
    admin: HumanDep,
    days: Annotated[int, Query(ge=0, le=3650)] = 30,
) -> list[UnusedScope]:
    """Scopes a workload may request but has not been issued in the last `days` days."""
    return service.unused_scopes(broker, admin=admin, days=days)

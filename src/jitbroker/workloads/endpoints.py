"""HTTP endpoints for the kill switch (human tokens in an admin group only)."""

from __future__ import annotations

from fastapi import APIRouter

from jitbroker.identity.dependencies import BrokerDep, ContextDep, HumanDep
from jitbroker.workloads import service
from jitbroker.workloads.schemas import (
    RevocationCounts,
    RevokeSelector,
    SuspendedView,
    SuspendRequest,
    WorkloadView,
)

router = APIRouter(tags=["kill switch"])


@router.get("/workloads/{workload_id}", response_model=WorkloadView)
def get_workload(workload_id: str, broker: BrokerDep, admin: HumanDep) -> WorkloadView:
    """The workload's state (active or suspended, by whom and why) and its live grant count."""
    return service.describe_workload(broker, admin=admin, workload_id=workload_id)


@router.post("/workloads/{workload_id}/suspend", response_model=SuspendedView)
def suspend_workload(
    workload_id: str,
    body: SuspendRequest,
    broker: BrokerDep,
    admin: HumanDep,
    context: ContextDep,
) -> SuspendedView:
    """Suspend the workload: revoke every live grant and refuse new tasks until it is resumed."""
    return service.suspend_workload(
        broker, admin=admin, workload_id=workload_id, reason=body.reason, context=context
    )


@router.post("/workloads/{workload_id}/resume", response_model=WorkloadView)
def resume_workload(
    workload_id: str, broker: BrokerDep, admin: HumanDep, context: ContextDep
) -> WorkloadView:
    """Lift a suspension; the workload may open tasks again."""
    return service.resume_workload(broker, admin=admin, workload_id=workload_id, context=context)


@router.post("/revoke", response_model=RevocationCounts)
def revoke_matching(
    body: RevokeSelector, broker: BrokerDep, admin: HumanDep, context: ContextDep
) -> RevocationCounts:
    """Revoke every live grant matching the selector (workload, profile, destination)."""
    return service.revoke_matching(broker, admin=admin, selector=body, context=context)

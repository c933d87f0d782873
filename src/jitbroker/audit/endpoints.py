"""HTTP endpoints for the audit trail: admin paging, and a task's evidence bundle."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from jitbroker.audit import service
from jitbroker.audit.schemas import AuditPage, EvidenceBundle
from jitbroker.identity.dependencies import BrokerDep, HumanDep, PrincipalDep

router = APIRouter(tags=["audit"])


@router.get("/audit", response_model=AuditPage)
def list_audit_records(
    broker: BrokerDep,
    admin: HumanDep,
    workload: str | None = None,
    task: str | None = None,
    since: datetime | None = None,
    cursor: Annotated[str | None, Query(pattern=r"^\d{1,20}-\d{1,20}$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AuditPage:
    """Chained audit records, oldest first, by workload, task or time (admins only)."""
    return service.list_records(
        broker,
        admin=admin,
        workload=workload,
        task_id=task,
        since=since,
        cursor=cursor,
        limit=limit,
    )


@router.get("/tasks/{task_id}/evidence", response_model=EvidenceBundle)
def task_evidence(task_id: str, broker: BrokerDep, caller: PrincipalDep) -> EvidenceBundle:
    """The task's grants, audit records and signed receipts (own workload or an admin)."""
    return service.task_evidence(broker, caller=caller, task_id=task_id)

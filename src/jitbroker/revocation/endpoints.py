"""Revocation receipts and the key that verifies them."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from jitbroker.identity.dependencies import BrokerDep, HumanDep, WorkloadDep
from jitbroker.revocation import failures, service
from jitbroker.revocation.receipts import TaskReceipts
from jitbroker.revocation.schemas import FailingRevocations

router = APIRouter(tags=["revocation"])


@router.get("/keys")
def public_keys(broker: BrokerDep) -> dict[str, Any]:
    """The broker's public signing keys (JWKS: during a rotation, the retiring one too)."""
    return {"keys": [key.public_jwk() for key in broker.signing_keys]}


@router.get("/tasks/{task_id}/receipt", response_model=TaskReceipts)
def task_receipt(task_id: str, broker: BrokerDep, workload: WorkloadDep) -> TaskReceipts:
    """The signed revocation receipts of every grant of the task."""
    return service.task_receipts(broker, workload=workload, task_id=task_id)


@router.get("/revocations/failing", response_model=FailingRevocations)
def failing_revocations(broker: BrokerDep, admin: HumanDep) -> FailingRevocations:
    """Revocations still failing (oldest first) and each backend against its failure budget."""
    return failures.failing_revocations(broker, admin=admin)

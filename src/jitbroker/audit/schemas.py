"""The audit API's response bodies: a page of chained records and a task's evidence bundle."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from jitbroker.grants.schemas import GrantRecord, GrantState, RevokeReason
from jitbroker.revocation.receipts import RevocationReceipt
from jitbroker.tasks.schemas import TaskView


class AuditPage(BaseModel):
    """Chained records oldest first, exactly as stored; pass `next_cursor` back for more."""

    records: list[dict[str, Any]]
    next_cursor: str | None = None


class GrantAccess(BaseModel):
    """One grant of a task: who had the access, who allowed it, and when it ended."""

    grant_id: str
    workload: str
    triggered_by: str | None = None
    profile: str
    scopes: list[str]
    destination: str
    principal: str | None = None
    state: GrantState
    rule: str | None = None
    effect: str | None = None
    approved_by: list[str] = Field(default_factory=list)
    break_glass: bool = False
    break_glass_acknowledged_by: str | None = None
    requested_at: datetime
    issued_at: datetime | None = None
    expires_at: datetime | None = None
    ended_at: datetime | None = None
    end_reason: RevokeReason | None = None

    @classmethod
    def of(cls, grant: GrantRecord) -> GrantAccess:
        return cls(
            grant_id=grant.grant_id,
            workload=grant.workload,
            triggered_by=grant.triggered_by,
            profile=grant.profile,
            scopes=grant.approved_scopes or grant.scopes,
            destination=grant.destination,
            principal=grant.principal,
            state=grant.state,
            rule=grant.decision.get("rule"),
            effect=grant.decision.get("effect"),
            approved_by=[v.approver for v in grant.votes if v.decision == "approve"],
            break_glass=grant.break_glass,
            break_glass_acknowledged_by=(
                grant.break_glass_review.acknowledged_by if grant.break_glass_review else None
            ),
            requested_at=grant.created_at,
            issued_at=grant.issued_at,
            expires_at=grant.expires_at,
            ended_at=grant.revoked_at,
            end_reason=grant.revoke_reason,
        )


class EvidenceBundle(BaseModel):
    """Everything an auditor needs about one task, never a secret; receipts verify offline."""

    task: TaskView
    access: list[GrantAccess]
    events: list[dict[str, Any]]
    receipts: list[RevocationReceipt]
    key_id: str
    generated_at: datetime

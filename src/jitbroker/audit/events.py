"""The audit event model; `seq`, `prev_hash` and `hash` are filled in by the hash chain."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

EventType = Literal[
    "auth.failed",
    "task.opened",
    "task.completed",
    "grant.rejected",
    "grant.decided",
    "grant.issued",
    "grant.issue_failed",
    "grant.revocation_requested",
    "grant.revoked",
    "grant.expired",
    "grant.revocation_failed",
    "grant.approved",
    "grant.approval_vote",
    "grant.denied",
    "grant.approval_expired",
    "grant.approval_lapsed",
    "grant.break_glass",
    "grant.break_glass_acknowledged",
    "workload.suspended",
    "workload.resumed",
    "workload.removed",
    "workload.retired",
    "workload.signed_off",
    "workload.reviewed",
    "incident.revoke",
    "revocation.incident",
    "reconcile.orphan_revoked",
    "reconcile.lost_lease",
    "config.reloaded",
    "config.reload_rejected",
]


class RequestContext(BaseModel):
    """Where a request came from; the token's `jti`, never the token."""

    source_ip: str | None = None
    user_agent: str | None = None
    jti: str | None = None


class AuditEvent(BaseModel):
    """One state change or decision, as it will be chained and signed."""

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    time: datetime = Field(default_factory=lambda: datetime.now(UTC))
    type: EventType
    outcome: str
    workload: str | None = None
    task_id: str | None = None
    grant_id: str | None = None
    profile: str | None = None
    rule: str | None = None
    reason: str | None = None
    context: RequestContext = Field(default_factory=RequestContext)
    details: dict[str, Any] = Field(default_factory=dict)
    seq: int | None = None
    prev_hash: str | None = None
    hash: str | None = None

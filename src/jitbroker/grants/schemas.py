"""Grant records and the grant API's request and response bodies."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from jitbroker.audit.events import AuditEvent, EventType, RequestContext
from jitbroker.records import VersionedModel


class GrantState(StrEnum):
    pending_approval = "pending_approval"
    issued = "issued"
    revoking = "revoking"
    revoked = "revoked"
    expired = "expired"
    cancelled = "cancelled"


TERMINAL_STATES = frozenset({GrantState.revoked, GrantState.expired, GrantState.cancelled})


class RevokeReason(StrEnum):
    expired = "expired"
    task_completed = "task_completed"
    revoked_by_workload = "revoked_by_workload"


class GrantRecord(VersionedModel):
    grant_id: str
    task_id: str
    workload: str
    profile: str
    engine: str
    scopes: list[str]
    role: str
    destination: str
    justification: str
    requested_ttl_seconds: int
    state: GrantState
    decision: dict[str, str]
    created_at: datetime
    issued_at: datetime | None = None
    expires_at: datetime | None = None
    lease_ref: str | None = None
    lease_ttl_seconds: int | None = None
    principal: str | None = None
    revoke_reason: RevokeReason | None = None
    revocation_requested_at: datetime | None = None
    revoked_at: datetime | None = None
    revocation_attempts: int = 0
    last_revocation_error: str | None = None

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    def audit_event(
        self,
        kind: EventType,
        *,
        outcome: str,
        context: RequestContext | None = None,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> AuditEvent:
        """An audit event about this grant, carrying its workload, task, profile and rule."""
        return AuditEvent(
            type=kind,
            outcome=outcome,
            workload=self.workload,
            task_id=self.task_id,
            grant_id=self.grant_id,
            profile=self.profile,
            rule=self.decision.get("rule"),
            reason=reason,
            context=context or RequestContext(),
            details=details or {},
        )


class GrantRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    profile: str = Field(min_length=1, max_length=64)
    scopes: list[str] = Field(min_length=1, max_length=16)
    ttl_seconds: int = Field(gt=0)
    justification: str = Field(min_length=1, max_length=1000)

    @field_validator("scopes")
    @classmethod
    def _unique(cls, scopes: list[str]) -> list[str]:
        if len(set(scopes)) != len(scopes):
            raise ValueError("scopes must not repeat")
        return scopes


class GrantView(BaseModel):
    """A grant as the API shows it: never the secret."""

    grant_id: str
    task_id: str
    workload: str
    profile: str
    scopes: list[str]
    state: GrantState
    destination: str
    justification: str
    decision: dict[str, str]
    requested_ttl_seconds: int
    lease_ttl_seconds: int | None = None
    created_at: datetime
    issued_at: datetime | None = None
    expires_at: datetime | None = None
    revoke_reason: RevokeReason | None = None
    revoked_at: datetime | None = None

    @classmethod
    def of(cls, record: GrantRecord) -> GrantView:
        return cls.model_validate(record.model_dump())


class IssuedGrantView(GrantView):
    """The one response that carries the secret."""

    credential: dict[str, Any]


class RevocationView(BaseModel):
    grant_id: str
    state: GrantState
    revoked_at: datetime | None = None

"""Grant records and the grant API's request and response bodies."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from jitbroker.audit.events import AuditEvent, EventType, RequestContext
from jitbroker.config import ProfileConfig
from jitbroker.engines.ssh import normalised_public_key
from jitbroker.errors import InvalidRequest
from jitbroker.records import VersionedModel


class GrantState(StrEnum):
    pending_approval = "pending_approval"
    approved = "approved"
    issued = "issued"
    revoking = "revoking"
    revoked = "revoked"
    expired = "expired"
    cancelled = "cancelled"
    denied = "denied"
    approval_expired = "approval_expired"
    approval_lapsed = "approval_lapsed"


TERMINAL_STATES = frozenset(
    {
        GrantState.revoked,
        GrantState.expired,
        GrantState.cancelled,
        GrantState.denied,
        GrantState.approval_expired,
        GrantState.approval_lapsed,
    }
)
AWAITING_STATES = frozenset({GrantState.pending_approval, GrantState.approved})


class RevokeReason(StrEnum):
    expired = "expired"
    task_completed = "task_completed"
    revoked_by_workload = "revoked_by_workload"
    workload_suspended = "workload_suspended"
    workload_removed = "workload_removed"
    incident_revoke = "incident_revoke"
    issue_failed = "issue_failed"
    lease_lost = "lease_lost"
    heartbeat_missed = "heartbeat_missed"


class ApprovalTerms(BaseModel):
    """What the deciding rule asked for: a quorum from groups, within a deadline."""

    rule: str
    approvals_required: int
    approver_groups: list[str]
    expires_at: datetime


class ApprovalVote(BaseModel):
    """One approver's decision; an approval may narrow the TTL or the scopes, never widen."""

    approver: str
    issuer: str = ""
    email: str | None = None
    groups: list[str]
    decision: str
    comment: str
    at: datetime
    ttl_seconds: int | None = None
    scopes: list[str] | None = None
    request_digest: str


class BreakGlassReview(BaseModel):
    acknowledged_by: str
    acknowledged_at: datetime
    comment: str


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
    decision: dict[str, Any]
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
    triggered_by: str | None = None
    request_digest: str = ""
    approval: ApprovalTerms | None = None
    votes: list[ApprovalVote] = Field(default_factory=list)
    approved_at: datetime | None = None
    issue_by: datetime | None = None
    approved_ttl_seconds: int | None = None
    approved_scopes: list[str] | None = None
    break_glass: bool = False
    break_glass_review: BreakGlassReview | None = None
    public_key: str | None = None

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def digest(self) -> str:
        """SHA-256 of exactly what was asked and decided; stored at request time, approvals are
        bound to it, and a record edited afterwards no longer matches it."""
        canonical = json.dumps(
            {
                "task_id": self.task_id,
                "workload": self.workload,
                "triggered_by": self.triggered_by,
                "profile": self.profile,
                "engine": self.engine,
                "role": self.role,
                "destination": self.destination,
                "scopes": self.scopes,
                "ttl_seconds": self.requested_ttl_seconds,
                "justification": self.justification,
                "rule": self.decision.get("rule"),
                # Only ssh grants carry a key; leaving it out otherwise keeps older digests valid.
                **({"public_key": self.public_key} if self.public_key else {}),
            },
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(canonical.encode()).hexdigest()

    @property
    def digest_intact(self) -> bool:
        """The stored digest still matches the record, and every vote was cast on it."""
        return (
            bool(self.request_digest)
            and self.request_digest == self.digest
            and all(vote.request_digest == self.request_digest for vote in self.votes)
        )

    @property
    def awaiting_review(self) -> bool:
        return self.break_glass and self.break_glass_review is None

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
    break_glass: bool = False
    # ssh profiles only: the workload's OpenSSH public key, which the certificate is signed for;
    # its private key never leaves the workload.
    public_key: str | None = Field(default=None, min_length=1, max_length=16384)

    @field_validator("scopes")
    @classmethod
    def _unique(cls, scopes: list[str]) -> list[str]:
        if len(set(scopes)) != len(scopes):
            raise ValueError("scopes must not repeat")
        return scopes

    @field_validator("public_key")
    @classmethod
    def _openssh_public_key(cls, value: str | None) -> str | None:
        return None if value is None else normalised_public_key(value)

    def check_public_key(self, profile: ProfileConfig) -> None:
        """An ssh profile needs the workload's public key; any other profile refuses one."""
        if profile.engine == "ssh" and self.public_key is None:
            raise InvalidRequest(
                f"profile {profile.id!r} signs the workload's own SSH key: give `public_key` "
                "(one OpenSSH public key line, e.g. the content of id_ed25519.pub)",
                errors=[{"field": "public_key", "message": "required for ssh profiles"}],
            )
        if profile.engine != "ssh" and self.public_key is not None:
            raise InvalidRequest(
                f"profile {profile.id!r} is not an ssh profile; `public_key` does not apply",
                errors=[{"field": "public_key", "message": "only for ssh profiles"}],
            )

    def profile_in(
        self, profiles: Mapping[str, ProfileConfig], *, enforce_ttl_cap: bool = True
    ) -> ProfileConfig:
        """The requested profile, if it exists, offers every scope and (optionally) the TTL."""
        profile = profiles.get(self.profile)
        if profile is None:
            raise InvalidRequest(
                f"unknown profile {self.profile!r}; known: {sorted(profiles)}",
                errors=[{"field": "profile", "message": "no such profile"}],
            )
        unknown = [s for s in self.scopes if s not in profile.scope_names()]
        if unknown:
            raise InvalidRequest(
                f"profile {profile.id!r} has no scope {', '.join(map(repr, unknown))}; "
                f"it offers {profile.scope_names()}",
                errors=[{"field": "scopes", "message": f"unknown scope {s!r}"} for s in unknown],
            )
        if enforce_ttl_cap and self.ttl_seconds > profile.max_ttl_seconds:
            raise InvalidRequest(
                f"ttl_seconds {self.ttl_seconds} exceeds the profile cap of "
                f"{profile.max_ttl_seconds}",
                errors=[{"field": "ttl_seconds", "message": "over the profile cap"}],
            )
        return profile


class GrantView(BaseModel):
    """A grant as the API shows it: never the secret."""

    grant_id: str
    task_id: str
    workload: str
    profile: str
    engine: str
    scopes: list[str]
    state: GrantState
    destination: str
    justification: str
    decision: dict[str, Any]
    requested_ttl_seconds: int
    lease_ttl_seconds: int | None = None
    created_at: datetime
    issued_at: datetime | None = None
    expires_at: datetime | None = None
    revoke_reason: RevokeReason | None = None
    revoked_at: datetime | None = None
    approval: ApprovalTerms | None = None
    votes: list[ApprovalVote] = Field(default_factory=list)
    approved_at: datetime | None = None
    issue_by: datetime | None = None
    approved_ttl_seconds: int | None = None
    approved_scopes: list[str] | None = None
    break_glass: bool = False
    break_glass_review: BreakGlassReview | None = None

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

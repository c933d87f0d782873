"""Suspensions, revocation selectors and what the workload admin API answers."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator


class WorkloadState(StrEnum):
    active = "active"
    suspended = "suspended"
    retired = "retired"


class SuspensionCause(StrEnum):
    """Why a workload is suspended: by hand, an overdue access review, or for good."""

    manual = "manual"
    review_overdue = "review_overdue"
    retired = "retired"
    expired = "expired"


PERMANENT_CAUSES = frozenset({SuspensionCause.retired, SuspensionCause.expired})


class Suspension(BaseModel):
    """Who suspended a workload, when and why; kept until the workload is resumed."""

    workload: str
    suspended_by: str
    suspended_at: datetime
    reason: str
    cause: SuspensionCause = SuspensionCause.manual

    @property
    def permanent(self) -> bool:
        """A retired or expired workload is never resumed; it leaves the configuration."""
        return self.cause in PERMANENT_CAUSES

    @property
    def state(self) -> WorkloadState:
        return WorkloadState.retired if self.permanent else WorkloadState.suspended


class SuspendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=500)


class RevokeSelector(BaseModel):
    """Which live grants to revoke: every given field must match; `destination` may use
    fnmatch wildcards (`https://api.internal/orders/*`)."""

    model_config = ConfigDict(extra="forbid")

    workload: str | None = Field(default=None, min_length=1, max_length=200)
    profile: str | None = Field(default=None, min_length=1, max_length=200)
    destination: str | None = Field(default=None, min_length=1, max_length=2000)
    reason: str = Field(min_length=1, max_length=500)

    @model_validator(mode="after")
    def _selects_something(self) -> RevokeSelector:
        if self.workload is None and self.profile is None and self.destination is None:
            raise ValueError("name at least one of workload, profile or destination")
        return self

    def criteria(self) -> dict[str, str]:
        """The given selector fields, without the reason."""
        return self.model_dump(exclude={"reason"}, exclude_none=True)


class RevocationCounts(BaseModel):
    """How many live grants matched, and what happened to them."""

    matched: int = 0
    revocation_requested: int = 0
    cancelled: int = 0


class WorkloadView(BaseModel):
    id: str
    description: str
    state: WorkloadState
    suspension: Suspension | None = None
    live_grants: int


class SuspendedView(BaseModel):
    """The suspension and the live grants it revoked."""

    workload: str
    state: WorkloadState
    suspension: Suspension
    revocations: RevocationCounts

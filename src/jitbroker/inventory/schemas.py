"""Sign-offs, access reviews, the review clock, and what the inventory API answers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from jitbroker.policy.guards import SignOffState
from jitbroker.workloads.schemas import Suspension, WorkloadState


class SignOffRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    comment: str = Field(default="", max_length=1000)


class SignOff(BaseModel):
    """An owner team member's word that the workload, as configured now, may run in production;
    `inventory_digest` binds it to that configuration, so a changed binding needs a new one."""

    workload: str
    environment: str
    owner_team: str
    signed_by: str
    issuer: str
    signed_at: datetime
    comment: str
    inventory_digest: str


@dataclass(frozen=True)
class LastUse:
    """When a workload was last issued some scopes of a profile (written with the grant)."""

    workload: str
    profile: str
    scopes: list[str]
    at: datetime


class ReviewDecision(StrEnum):
    keep = "keep"
    reduce = "reduce"
    retire = "retire"


class ReviewRequest(BaseModel):
    """The owner team's attestation: keep the access, reduce it (say what), or retire it."""

    model_config = ConfigDict(extra="forbid")

    decision: ReviewDecision
    comment: str = Field(default="", max_length=1000)

    @model_validator(mode="after")
    def _reduce_says_what(self) -> ReviewRequest:
        if self.decision == ReviewDecision.reduce and not self.comment.strip():
            raise ValueError("a 'reduce' review needs a comment saying what to reduce")
        return self


class ReviewRecord(BaseModel):
    """One completed access review; the latest one restarts the review clock."""

    workload: str
    decision: ReviewDecision
    comment: str
    reviewed_by: str
    issuer: str
    reviewed_at: datetime


@dataclass(frozen=True)
class ReviewClock:
    """When a workload's next access review is due: `review_every` after its last review, or
    after the broker first saw it."""

    started_at: datetime
    last_review: ReviewRecord | None
    every_seconds: int

    @property
    def counted_from(self) -> datetime:
        return self.last_review.reviewed_at if self.last_review else self.started_at

    @property
    def due_at(self) -> datetime:
        return self.counted_from + timedelta(seconds=self.every_seconds)

    def is_overdue(self, now: datetime) -> bool:
        return now > self.due_at

    def suspends_at(self, grace_seconds: int) -> datetime:
        """When an unreviewed workload is suspended: the due date plus the grace period."""
        return self.due_at + timedelta(seconds=grace_seconds)


class InventoryItem(BaseModel):
    """One workload as the inventory shows it: who owns it, where it runs, what it may reach,
    when it was last used and when its access is reviewed next."""

    id: str
    description: str
    purpose: str | None
    owner_team: str | None
    custodian: str | None
    backup_approver: str | None
    ownership: Literal["owned", "unowned"]
    missing: list[str]
    environment: str
    kind: str | None
    privileged: bool
    privileged_scopes: list[str]
    state: WorkloadState
    suspension: Suspension | None = None
    sign_off: SignOffState
    signed_off_by: str | None = None
    last_used_at: datetime | None
    review_every_seconds: int
    review_clock_started_at: datetime
    last_review: ReviewRecord | None
    next_review_due: datetime
    review_overdue: bool
    expires_on: date | None


class ReviewDue(BaseModel):
    """An overdue access review: whose it is, since when, and when the workload is suspended."""

    workload: str
    owner_team: str | None
    custodian: str | None
    environment: str
    privileged: bool
    due_at: datetime
    overdue_seconds: int
    suspends_at: datetime
    state: WorkloadState


class UnusedScope(BaseModel):
    """A scope the workload may request but has not been issued within the report's window."""

    workload: str
    environment: str
    profile: str
    scope: str
    capabilities: list[str]
    privileged: bool
    last_used_at: datetime | None
    observed_since: datetime


@dataclass
class ReviewEnforcement:
    """What one scheduler round did: workloads suspended, retired, and owners reminded."""

    suspended: list[str]
    retired: list[str]
    reminded: list[str]

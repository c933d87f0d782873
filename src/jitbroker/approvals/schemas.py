"""What approvers send and see."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from jitbroker.config import ProfileConfig, WorkloadConfig
from jitbroker.grants.schemas import ApprovalVote, GrantRecord, GrantState
from jitbroker.tasks.schemas import TaskRecord


class ApproveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    comment: str = Field(default="", max_length=1000)
    ttl_seconds: int | None = Field(default=None, gt=0)
    scopes: list[str] | None = Field(default=None, min_length=1, max_length=16)


class DenyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    comment: str = Field(min_length=1, max_length=1000)


class AcknowledgeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    comment: str = Field(default="", max_length=1000)


class ApprovalItem(BaseModel):
    """A request as an approver sees it: who asks, for what, why, how long, and time left."""

    grant_id: str
    state: GrantState
    workload: str
    triggered_by: str | None
    task_id: str
    task_purpose: str
    profile: str
    destination: str
    scopes: list[str]
    ttl_seconds: int
    justification: str
    rule: str
    reason: str
    approvals_required: int
    approver_groups: list[str]
    votes: list[ApprovalVote]
    created_at: datetime
    expires_at: datetime
    seconds_left: int
    break_glass: bool
    reviewed: bool
    privileged: bool
    capabilities: list[str]
    environment: str | None
    owner_team: str | None

    @classmethod
    def of(
        cls,
        grant: GrantRecord,
        task: TaskRecord | None,
        now: datetime,
        *,
        profile: ProfileConfig | None = None,
        workload: WorkloadConfig | None = None,
    ) -> ApprovalItem:
        assert grant.approval is not None
        return cls(
            grant_id=grant.grant_id,
            state=grant.state,
            workload=grant.workload,
            triggered_by=grant.triggered_by,
            task_id=grant.task_id,
            task_purpose=task.purpose if task else "",
            profile=grant.profile,
            destination=grant.destination,
            scopes=grant.scopes,
            ttl_seconds=grant.requested_ttl_seconds,
            justification=grant.justification,
            rule=grant.approval.rule,
            reason=grant.decision.get("reason", ""),
            approvals_required=grant.approval.approvals_required,
            approver_groups=grant.approval.approver_groups,
            votes=grant.votes,
            created_at=grant.created_at,
            expires_at=grant.approval.expires_at,
            seconds_left=max(0, int((grant.approval.expires_at - now).total_seconds())),
            break_glass=grant.break_glass,
            reviewed=grant.break_glass_review is not None,
            privileged=bool(grant.decision.get("privileged", False)),
            capabilities=list(profile.capabilities_of(grant.scopes)) if profile else [],
            environment=workload.environment if workload else None,
            owner_team=(workload.owner_team or None) if workload else None,
        )

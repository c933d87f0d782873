"""Task records and the task API's request and response bodies."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from jitbroker.grants.schemas import GrantView, RevocationView
from jitbroker.records import VersionedModel
from jitbroker.revocation.receipts import RevocationReceipt


class TaskState(StrEnum):
    active = "active"
    completed = "completed"
    expired = "expired"


class TaskRecord(VersionedModel):
    task_id: str
    workload: str
    purpose: str
    state: TaskState = TaskState.active
    created_at: datetime
    expires_at: datetime
    completed_at: datetime | None = None
    heartbeat_seconds: int | None = None
    last_heartbeat_at: datetime | None = None

    def effective_state(self, now: datetime) -> TaskState:
        """An active task past its deadline, or past the heartbeat it missed, reads as expired
        (before the scheduler's next sweep completes it): no new grant, no reviving beat."""
        if self.state == TaskState.active and (now >= self.expires_at or self.missed_beat(now)):
            return TaskState.expired
        return TaskState(self.state)

    def missed_beat(self, now: datetime) -> bool:
        """Opened with a heartbeat, and `heartbeat_seconds` passed without one."""
        if self.heartbeat_seconds is None:
            return False
        last = self.last_heartbeat_at or self.created_at
        return now >= last + timedelta(seconds=self.heartbeat_seconds)


class OpenTaskRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    purpose: str = Field(min_length=1, max_length=500)
    ttl_seconds: int | None = Field(default=None, gt=0)
    heartbeat_seconds: int | None = Field(default=None, ge=1, le=3600)


class TaskView(BaseModel):
    task_id: str
    state: TaskState
    workload: str
    purpose: str
    created_at: datetime
    expires_at: datetime
    completed_at: datetime | None = None
    heartbeat_seconds: int | None = None
    last_heartbeat_at: datetime | None = None
    grants: list[GrantView] = Field(default_factory=list)

    @classmethod
    def of(cls, task: TaskRecord, grants: list[GrantView], now: datetime) -> TaskView:
        return cls(
            task_id=task.task_id,
            state=task.effective_state(now),
            workload=task.workload,
            purpose=task.purpose,
            created_at=task.created_at,
            expires_at=task.expires_at,
            completed_at=task.completed_at,
            heartbeat_seconds=task.heartbeat_seconds,
            last_heartbeat_at=task.last_heartbeat_at,
            grants=grants,
        )


class CompletionView(BaseModel):
    task_id: str
    state: str
    revocations: list[RevocationView]
    receipts: list[RevocationReceipt] = Field(default_factory=list)

"""The notification model: one event, a human line for Slack, and structured fields."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

NotificationEvent = Literal[
    "approval.pending",
    "approval.approved",
    "approval.denied",
    "approval.expired",
    "break_glass.used",
    "break_glass.acknowledged",
    "incident.revoke",
    "revocation.incident",
    "review.due",
    "review.overdue",
    "workload.retired",
]
ALL_EVENTS = "*"


class Notification(BaseModel):
    """What a webhook receives as its JSON body; `fields` never holds a secret."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    event: NotificationEvent
    time: datetime = Field(default_factory=lambda: datetime.now(UTC))
    text: str
    fields: dict[str, Any] = Field(default_factory=dict)

    def body(self) -> bytes:
        """The exact bytes that are posted and signed."""
        return self.model_dump_json().encode()

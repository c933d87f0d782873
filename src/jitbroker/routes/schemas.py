"""Routes and gateway access checks."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Route(BaseModel):
    """An open path from one live grant to its destinations; it exists only while the grant does."""

    grant_id: str
    workload: str
    task_id: str
    profile: str
    destinations: list[str]
    expires_at: datetime


class AccessCheck(BaseModel):
    """What a gateway asks: may this grant (or the holder of this credential) reach this place?"""

    model_config = ConfigDict(extra="forbid")

    destination: str = Field(min_length=1, max_length=2048)
    grant_id: str | None = Field(default=None, max_length=64)
    credential: str | None = Field(default=None, max_length=8192)

    @model_validator(mode="after")
    def _names_the_caller(self) -> AccessCheck:
        if not self.grant_id and not self.credential:
            raise ValueError("give grant_id or credential")
        return self


class AccessDecision(BaseModel):
    allow: bool
    reason: str
    grant_id: str | None = None
    workload: str | None = None
    expires_in_seconds: int | None = None

"""What the failing-revocations API answers and what a reconciliation run reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from pydantic import BaseModel


class FailingRevocation(BaseModel):
    """A grant whose revocation has failed at least once and is still being retried."""

    grant_id: str
    task_id: str
    workload: str
    profile: str
    engine: str
    backend: str
    revocation_requested_at: datetime | None
    first_failure_at: datetime
    attempts: int
    last_error: str | None
    incident: bool
    incident_at: datetime | None = None


class BackendBacklog(BaseModel):
    """One revocation backend (engine + mount) against the failure budget."""

    backend: str
    profiles: list[str]
    failing: int
    stuck: int
    refusing_issuance: bool


class FailingRevocations(BaseModel):
    """Every failing revocation, oldest first, and each backend's standing against the budget."""

    budget: int
    backends: list[BackendBacklog]
    grants: list[FailingRevocation]


@dataclass
class ReconcileReport:
    """What one reconciliation run found and did."""

    leases_listed: int = 0
    orphans_revoked: list[str] = field(default_factory=list)
    orphans_in_grace: list[str] = field(default_factory=list)
    lost_leases: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

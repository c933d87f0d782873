"""Who is calling: a verified workload or a verified human."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class WorkloadIdentity:
    """A token verified against its issuer and bound to exactly one registered workload."""

    workload_id: str
    issuer: str
    subject: str
    claims: dict[str, Any] = field(default_factory=dict, compare=False)
    jti: str | None = None

    @property
    def triggered_by(self) -> str | None:
        value = self.claims.get("actor") or self.claims.get("triggered_by")
        return str(value) if value else None


@dataclass(frozen=True)
class HumanIdentity:
    """A person (approver, operator) verified against an issuer marked `human`."""

    subject: str
    issuer: str
    email: str | None = None
    groups: tuple[str, ...] = ()
    jti: str | None = None


Principal = WorkloadIdentity | HumanIdentity

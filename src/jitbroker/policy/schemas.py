"""Policy inputs and decisions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from jitbroker.config import ProfileConfig

Effect = Literal["allow", "deny", "require_approval"]
DEFAULT_DENY_RULE = "default-deny"


@dataclass(frozen=True)
class PolicyInput:
    """What a rule can see: the workload, the request, the profile and the context."""

    workload: dict[str, Any]
    request: dict[str, Any]
    profile: dict[str, Any]
    context: dict[str, Any]

    @classmethod
    def of(
        cls,
        *,
        workload: dict[str, Any],
        request: dict[str, Any],
        profile: ProfileConfig,
        now: datetime,
        source_ip: str = "",
        user_agent: str = "",
    ) -> PolicyInput:
        """The one shape rules see, for live requests and offline policy checks alike."""
        return cls(
            workload={"issuer": "", "subject": "", "claims": {}, **workload},
            request={"task_id": "", "task_purpose": "", "justification": "", **request},
            profile={
                "id": profile.id,
                "engine": profile.engine,
                "destination": profile.destination,
                "max_ttl_seconds": profile.max_ttl_seconds,
                "scopes": profile.scope_names(),
                "environment": profile.environment,
            },
            context={"now": now, "source_ip": source_ip, "user_agent": user_agent},
        )

    def as_activation(self) -> dict[str, Any]:
        return {
            "workload": self.workload,
            "request": self.request,
            "profile": self.profile,
            "context": self.context,
        }


@dataclass(frozen=True)
class ApprovalRequirement:
    """Who must approve, how many, how long the request may wait, and the break-glass terms."""

    approvals: int
    approver_groups: tuple[str, ...]
    approval_ttl_seconds: int
    break_glass: bool = False
    break_glass_max_ttl_seconds: int = 900


@dataclass(frozen=True)
class Decision:
    """The outcome of policy evaluation, naming the rule that decided."""

    effect: Effect
    rule: str
    reason: str
    approval: ApprovalRequirement | None = None
    privileged: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "effect": self.effect,
            "rule": self.rule,
            "reason": self.reason,
            "privileged": self.privileged,
        }

"""Policy inputs and decisions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Effect = Literal["allow", "deny", "require_approval"]
DEFAULT_DENY_RULE = "default-deny"


@dataclass(frozen=True)
class PolicyInput:
    """What a rule can see: the workload, the request, the profile and the context."""

    workload: dict[str, Any]
    request: dict[str, Any]
    profile: dict[str, Any]
    context: dict[str, Any]

    def as_activation(self) -> dict[str, Any]:
        return {
            "workload": self.workload,
            "request": self.request,
            "profile": self.profile,
            "context": self.context,
        }


@dataclass(frozen=True)
class Decision:
    """The outcome of policy evaluation, naming the rule that decided."""

    effect: Effect
    rule: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"effect": self.effect, "rule": self.rule, "reason": self.reason}

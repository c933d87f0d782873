"""Compile rules once at load; decide() is pure and fails closed on evaluation errors."""

from __future__ import annotations

from typing import Any

import cel

from jitbroker.config import RuleConfig
from jitbroker.policy.schemas import (
    DEFAULT_DENY_RULE,
    ApprovalRequirement,
    Decision,
    PolicyInput,
)


class PolicyEngine:
    """An ordered list of rules whose CEL conditions were compiled when the config loaded."""

    def __init__(self, rules: list[RuleConfig]) -> None:
        self.rules = list(rules)

    def rule_named(self, name: str) -> RuleConfig | None:
        """The rule with this name (names are unique), or None for built-in decisions."""
        return next((rule for rule in self.rules if rule.name == name), None)

    def decide(self, subject: PolicyInput) -> Decision:
        """First matching rule decides; no match, or a rule that cannot be evaluated, denies."""
        variables = subject.as_activation()
        activation: Any
        try:
            # Converted to CEL values once for all rules, not once per rule as a dict would be.
            activation = cel.Context(variables)
        except Exception:  # noqa: BLE001 - a value CEL cannot take fails in the rule, as before
            activation = variables
        for rule in self.rules:
            try:
                matched = rule.program.execute(activation)
            except Exception as exc:  # noqa: BLE001 - any CEL runtime error must fail closed
                return Decision(
                    "deny",
                    rule.name,
                    f"rule {rule.name!r} could not be evaluated ({_describe(exc)}); denying",
                )
            if not isinstance(matched, bool):
                return Decision(
                    "deny",
                    rule.name,
                    f"rule {rule.name!r} did not evaluate to a boolean; denying",
                )
            if matched:
                return _decision_of(rule, subject)
        return Decision("deny", DEFAULT_DENY_RULE, "no policy rule allows this request")


def _decision_of(rule: RuleConfig, subject: PolicyInput) -> Decision:
    ttl = subject.request.get("ttl_seconds")
    if rule.max_ttl is not None and isinstance(ttl, int) and ttl > rule.max_ttl:
        return Decision(
            "deny", rule.name, f"rule {rule.name!r} allows at most {rule.max_ttl}s; asked {ttl}s"
        )
    if rule.effect != "require_approval":
        return Decision(rule.effect, rule.name, _reason_for(rule))
    requirement = ApprovalRequirement(
        approvals=rule.approvals,
        approver_groups=tuple(rule.approver_groups),
        approval_ttl_seconds=rule.approval_ttl,
        break_glass=rule.break_glass,
        break_glass_max_ttl_seconds=rule.break_glass_max_ttl,
    )
    return Decision(rule.effect, rule.name, _reason_for(rule), requirement)


def _reason_for(rule: RuleConfig) -> str:
    if rule.reason:
        return rule.reason
    return {
        "allow": f"allowed by rule {rule.name!r}",
        "deny": f"denied by rule {rule.name!r}",
        "require_approval": f"rule {rule.name!r} requires human approval",
    }[rule.effect]


def _describe(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"no such field {exc.args[0]!r}" if exc.args else "missing field"
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__

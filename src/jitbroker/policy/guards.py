"""Governance guards around the policy: environment separation, ownership and sign-off in
production, and privileged requests. Pure: the live API and `jitbroker policy` share them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import date
from enum import StrEnum
from typing import Any

from jitbroker.config import ProfileConfig, RuleConfig, WorkloadConfig
from jitbroker.policy.engine import PolicyEngine
from jitbroker.policy.schemas import ApprovalRequirement, Decision, PolicyInput

PRIVILEGED_CAPABILITIES = frozenset({"admin", "impersonation", "cross_tenant"})
PRODUCTION_ENVIRONMENTS = frozenset({"prod", "production"})
ENVIRONMENT_RULE = "environment-separation"
OWNERSHIP_RULE = "ownership-required"
SIGN_OFF_RULE = "prod-sign-off"
EXPIRY_RULE = "workload-expired"
PRIVILEGE_RULE_FLAG = "allow_privileged: true"


class SignOffState(StrEnum):
    """Whether the owner team's sign-off covers the workload as it is configured now."""

    not_required = "not_required"
    signed = "signed"
    missing = "missing"
    stale = "stale"


@dataclass(frozen=True)
class PrivilegedScope:
    """A scope a workload may reach that grants admin, impersonation or cross-tenant access."""

    profile: str
    scope: str
    capabilities: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.profile}/{self.scope} ({', '.join(self.capabilities)})"


def is_production(environment: str) -> bool:
    """`prod` (or `production`): the environment that needs an owner and a sign-off."""
    return environment in PRODUCTION_ENVIRONMENTS


def needs_sign_off(workload: WorkloadConfig) -> bool:
    return is_production(workload.environment)


def privileged_capabilities(profile: ProfileConfig, scopes: Iterable[str]) -> list[str]:
    """The admin/impersonation/cross_tenant capabilities the requested scopes grant."""
    return [c for c in profile.capabilities_of(list(scopes)) if c in PRIVILEGED_CAPABILITIES]


def reachable_profiles(
    workload: WorkloadConfig, profiles: Mapping[str, ProfileConfig]
) -> list[ProfileConfig]:
    """What a workload may reach: every profile of its own environment (rules may narrow it
    further, but the classification does not guess what a CEL condition will say)."""
    return [p for p in profiles.values() if p.environment == workload.environment]


def privileged_reach(
    workload: WorkloadConfig, profiles: Mapping[str, ProfileConfig]
) -> list[PrivilegedScope]:
    """The privileged scopes a workload may reach; a workload is privileged when any exist."""
    return [
        PrivilegedScope(profile.id, binding.name, tuple(found))
        for profile in reachable_profiles(workload, profiles)
        for binding in profile.scopes
        if (found := [c for c in binding.capabilities if c in PRIVILEGED_CAPABILITIES])
    ]


def workload_facts(workload: WorkloadConfig) -> dict[str, Any]:
    """The inventory fields rules may read as `workload.environment`, `workload.kind`, …"""
    return {
        "id": workload.id,
        "environment": workload.environment,
        "kind": workload.kind or "",
        "owner_team": workload.owner_team,
        "unowned": workload.unowned,
    }


def has_expired(workload: WorkloadConfig, today: date) -> bool:
    """Past its `expires_on` date (the workload may still be used on that day itself)."""
    return workload.expires_on is not None and today > workload.expires_on


def governance_refusal(
    workload: WorkloadConfig, profile: ProfileConfig, *, sign_off: SignOffState, today: date
) -> Decision | None:
    """The deny that no rule can override, or None: an expired workload, another environment's
    profile, an unowned workload in production, a production workload without sign-off."""
    if has_expired(workload, today):
        return Decision(
            "deny",
            EXPIRY_RULE,
            f"workload {workload.id!r} expired on {workload.expires_on} (expires_on) and is "
            "retired",
        )
    if profile.environment != workload.environment:
        return Decision(
            "deny",
            ENVIRONMENT_RULE,
            f"workload {workload.id!r} is in environment {workload.environment!r} and profile "
            f"{profile.id!r} is in {profile.environment!r}; a workload only receives profiles "
            "of its own environment",
        )
    if not is_production(workload.environment):
        return None
    if workload.unowned:
        missing = " and ".join(workload.missing_inventory)
        return Decision(
            "deny",
            OWNERSHIP_RULE,
            f"workload {workload.id!r} is unowned (no {missing} in its configuration) and gets "
            f"nothing in {workload.environment!r}",
        )
    if sign_off == SignOffState.missing:
        return Decision(
            "deny",
            SIGN_OFF_RULE,
            f"workload {workload.id!r} has no sign-off from its owner team "
            f"{workload.owner_team!r} for {workload.environment!r} "
            f"(jitbroker workloads sign-off {workload.id})",
        )
    if sign_off == SignOffState.stale:
        return Decision(
            "deny",
            SIGN_OFF_RULE,
            f"workload {workload.id!r} changed since its owner team {workload.owner_team!r} "
            f"signed it off for {workload.environment!r}; it needs a new sign-off "
            f"(jitbroker workloads sign-off {workload.id})",
        )
    return None


def apply_privilege_rule(
    decision: Decision, rule: RuleConfig | None, privileged: list[str]
) -> Decision:
    """Mark the decision privileged or not; a privileged request that a rule simply allows
    needs approval from the rule's approver_groups, or is denied when it names none."""
    decision = replace(decision, privileged=bool(privileged))
    if not privileged or decision.effect != "allow" or rule is None or rule.allow_privileged:
        return decision
    what = f"the request is privileged ({', '.join(privileged)})"
    if rule.approver_groups:
        return Decision(
            "require_approval",
            rule.name,
            f"{what}; rule {rule.name!r} does not say {PRIVILEGE_RULE_FLAG}, so someone from "
            f"{', '.join(rule.approver_groups)} must approve",
            ApprovalRequirement(
                approvals=rule.approvals,
                approver_groups=tuple(rule.approver_groups),
                approval_ttl_seconds=rule.approval_ttl,
            ),
            privileged=True,
        )
    return Decision(
        "deny",
        rule.name,
        f"{what}; rule {rule.name!r} neither says {PRIVILEGE_RULE_FLAG} nor names "
        "approver_groups to approve it",
        privileged=True,
    )


def governed_decision(
    policy: PolicyEngine,
    subject: PolicyInput,
    *,
    workload: WorkloadConfig,
    profile: ProfileConfig,
    scopes: list[str],
    sign_off: SignOffState,
    today: date,
) -> Decision:
    """The guards first, then the first matching rule, then the privileged-request rule."""
    privileged = privileged_capabilities(profile, scopes)
    refusal = governance_refusal(workload, profile, sign_off=sign_off, today=today)
    if refusal is not None:
        return replace(refusal, privileged=bool(privileged))
    decision = policy.decide(subject)
    return apply_privilege_rule(decision, policy.rule_named(decision.rule), privileged)

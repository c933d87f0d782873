"""The governance guards around the policy: pure functions over config models."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

import pytest

from jitbroker.config import ProfileConfig, RuleConfig, WorkloadConfig
from jitbroker.policy.engine import PolicyEngine
from jitbroker.policy.guards import (
    SignOffState,
    governed_decision,
    privileged_reach,
)
from jitbroker.policy.schemas import Decision, PolicyInput

TODAY = date(2030, 6, 3)
Decide = Callable[..., Decision]


def a_workload(**fields: Any) -> WorkloadConfig:
    """A workload owned by ledger-team in dev, with overrides."""
    base = {
        "id": "ledger-agent",
        "issuer": "ci",
        "subject": "ledger-agent",
        "owner_team": "ledger-team",
        "purpose": "answers ledger questions",
    }
    return WorkloadConfig.model_validate({**base, **fields})


def a_profile(**fields: Any) -> ProfileConfig:
    """A dev database profile with read, write and admin scopes, with overrides."""
    base = {
        "id": "ledger-db",
        "engine": "database",
        "mount": "database",
        "destination": "postgres://db.test/ledger",
        "max_ttl_seconds": 3600,
        "scopes": [
            {"name": "read", "role": "ro"},
            {"name": "write", "role": "rw"},
            {"name": "admin", "role": "owner"},
        ],
    }
    return ProfileConfig.model_validate({**base, **fields})


ALLOW_ALL = {"name": "allow-all", "effect": "allow"}


@pytest.fixture
def decide() -> Decide:
    """decide(rules, scopes, workload=, profile=, sign_off=): the guarded decision."""

    def run(
        rules: list[dict[str, Any]],
        scopes: list[str],
        *,
        workload: WorkloadConfig | None = None,
        profile: ProfileConfig | None = None,
        sign_off: SignOffState = SignOffState.not_required,
    ) -> Decision:
        chosen_workload = workload or a_workload()
        chosen_profile = profile or a_profile()
        subject = PolicyInput.of(
            workload={"id": chosen_workload.id},
            request={"profile": chosen_profile.id, "scopes": scopes, "ttl_seconds": 60},
            profile=chosen_profile,
            now=datetime(2030, 6, 3, 12, tzinfo=UTC),
        )
        return governed_decision(
            PolicyEngine([RuleConfig.model_validate(rule) for rule in rules]),
            subject,
            workload=chosen_workload,
            profile=chosen_profile,
            scopes=scopes,
            sign_off=sign_off,
            today=TODAY,
        )

    return run


def test_profile_of_another_environment_is_denied_naming_both_even_if_a_rule_allows(
    decide: Decide,
) -> None:
    decision = decide(
        [ALLOW_ALL],
        ["read"],
        workload=a_workload(environment="staging"),
        profile=a_profile(environment="prod"),
    )

    assert (decision.effect, decision.rule) == ("deny", "environment-separation")
    assert "'staging'" in decision.reason
    assert "'prod'" in decision.reason


def test_unowned_workload_is_denied_in_prod_even_if_a_rule_allows(decide: Decide) -> None:
    decision = decide(
        [ALLOW_ALL],
        ["read"],
        workload=a_workload(environment="prod", owner_team=""),
        profile=a_profile(environment="prod"),
        sign_off=SignOffState.signed,
    )

    assert (decision.effect, decision.rule) == ("deny", "ownership-required")
    assert "no owner_team" in decision.reason


def test_unowned_workload_in_dev_is_left_to_the_rules(decide: Decide) -> None:
    decision = decide([ALLOW_ALL], ["read"], workload=a_workload(owner_team="", purpose=""))

    assert (decision.effect, decision.rule) == ("allow", "allow-all")


def test_prod_workload_without_sign_off_is_denied_naming_the_command(decide: Decide) -> None:
    decision = decide(
        [ALLOW_ALL],
        ["read"],
        workload=a_workload(environment="prod"),
        profile=a_profile(environment="prod"),
        sign_off=SignOffState.missing,
    )

    assert (decision.effect, decision.rule) == ("deny", "prod-sign-off")
    assert "jitbroker workloads sign-off ledger-agent" in decision.reason


def test_prod_workload_changed_since_its_sign_off_is_denied(decide: Decide) -> None:
    decision = decide(
        [ALLOW_ALL],
        ["read"],
        workload=a_workload(environment="prod"),
        profile=a_profile(environment="prod"),
        sign_off=SignOffState.stale,
    )

    assert (decision.effect, decision.rule) == ("deny", "prod-sign-off")
    assert "changed since" in decision.reason


def test_signed_off_prod_workload_is_left_to_the_rules(decide: Decide) -> None:
    decision = decide(
        [ALLOW_ALL],
        ["read"],
        workload=a_workload(environment="prod"),
        profile=a_profile(environment="prod"),
        sign_off=SignOffState.signed,
    )

    assert (decision.effect, decision.rule, decision.privileged) == ("allow", "allow-all", False)


def test_workload_past_its_expiry_date_is_denied(decide: Decide) -> None:
    decision = decide([ALLOW_ALL], ["read"], workload=a_workload(expires_on="2030-06-02"))

    assert (decision.effect, decision.rule) == ("deny", "workload-expired")


def test_workload_may_still_be_used_on_its_expiry_date(decide: Decide) -> None:
    decision = decide([ALLOW_ALL], ["read"], workload=a_workload(expires_on="2030-06-03"))

    assert decision.effect == "allow"


def test_privileged_request_a_rule_simply_allows_needs_its_approver_groups(
    decide: Decide,
) -> None:
    decision = decide([{**ALLOW_ALL, "approver_groups": ["dba"], "approvals": 2}], ["admin"])

    assert (decision.effect, decision.rule, decision.privileged) == (
        "require_approval",
        "allow-all",
        True,
    )
    assert decision.approval is not None
    assert (decision.approval.approver_groups, decision.approval.approvals) == (("dba",), 2)
    assert decision.approval.break_glass is False
    assert decision.reason.startswith("the request is privileged (admin)")


def test_privileged_request_allowed_by_a_rule_without_approvers_is_denied(
    decide: Decide,
) -> None:
    decision = decide([ALLOW_ALL], ["read", "admin"])

    assert (decision.effect, decision.privileged) == ("deny", True)
    assert "allow_privileged: true" in decision.reason


def test_rule_that_says_allow_privileged_allows_a_privileged_request(decide: Decide) -> None:
    decision = decide([{**ALLOW_ALL, "allow_privileged": True}], ["admin"])

    assert (decision.effect, decision.privileged) == ("allow", True)


def test_declared_impersonation_capability_makes_a_request_privileged(decide: Decide) -> None:
    console = a_profile(
        scopes=[
            {"name": "read", "role": "ro"},
            {"name": "act-as-user", "role": "su", "capabilities": ["impersonation", "write"]},
        ]
    )

    decision = decide([ALLOW_ALL], ["act-as-user"], profile=console)

    assert (decision.effect, decision.privileged) == ("deny", True)
    assert "privileged (impersonation)" in decision.reason


def test_write_scope_is_not_privileged(decide: Decide) -> None:
    decision = decide([ALLOW_ALL], ["write"])

    assert (decision.effect, decision.privileged) == ("allow", False)


def test_require_approval_rule_is_unchanged_but_marked_privileged(decide: Decide) -> None:
    rule = {"name": "dba", "effect": "require_approval", "approver_groups": ["dba"]}

    decision = decide([rule], ["admin"])

    assert (decision.effect, decision.rule, decision.privileged) == (
        "require_approval",
        "dba",
        True,
    )


def test_guard_denial_still_carries_the_privilege_classification(decide: Decide) -> None:
    decision = decide([ALLOW_ALL], ["admin"], profile=a_profile(environment="prod"))

    assert (decision.rule, decision.privileged) == ("environment-separation", True)


def test_workload_is_privileged_only_by_profiles_of_its_environment() -> None:
    profiles = {
        "dev-db": a_profile(id="dev-db", scopes=[{"name": "read", "role": "ro"}]),
        "prod-db": a_profile(id="prod-db", environment="prod"),
    }

    assert privileged_reach(a_workload(), profiles) == []
    assert [str(s) for s in privileged_reach(a_workload(environment="prod"), profiles)] == [
        "prod-db/admin (admin)"
    ]

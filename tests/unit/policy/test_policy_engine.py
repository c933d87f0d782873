"""PolicyEngine: first match wins, default deny, and every evaluation problem fails closed."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from jitbroker.config import RuleConfig
from jitbroker.policy.engine import PolicyEngine
from jitbroker.policy.schemas import DEFAULT_DENY_RULE, Decision, PolicyInput

MakeEngine = Callable[..., PolicyEngine]
MakeInput = Callable[..., PolicyInput]


@pytest.fixture
def make_engine() -> MakeEngine:
    """make_engine(rule, ...): an engine over rules given as config mappings, in order."""

    def make(*rules: dict[str, Any]) -> PolicyEngine:
        return PolicyEngine([RuleConfig.model_validate(rule) for rule in rules])

    return make


@pytest.fixture
def make_input() -> MakeInput:
    """make_input(**request_fields): a request for demo-db by `deployer`, read scope, now."""

    def make(**request: Any) -> PolicyInput:
        return PolicyInput(
            workload={"id": "deployer", "issuer": "ci", "claims": {"repository": "org/repo"}},
            request={"profile": "demo-db", "scopes": ["read"], "ttl_seconds": 900, **request},
            profile={"id": "demo-db", "engine": "database"},
            context={"now": datetime(2030, 6, 1, 12, 0, tzinfo=UTC)},
        )

    return make


def test_first_matching_rule_decides_even_when_a_later_rule_also_matches(
    make_engine: MakeEngine, make_input: MakeInput
) -> None:
    engine = make_engine(
        {"name": "other-profile", "when": 'request.profile == "other"', "effect": "deny"},
        {"name": "db-read", "when": 'request.profile == "demo-db"', "effect": "allow"},
        {"name": "everything", "when": "true", "effect": "deny"},
    )

    decision = engine.decide(make_input())

    assert decision == Decision("allow", "db-read", "allowed by rule 'db-read'")


def test_request_no_rule_matches_is_denied_by_default_deny(
    make_engine: MakeEngine, make_input: MakeInput
) -> None:
    engine = make_engine(
        {"name": "other-profile", "when": 'request.profile == "other"', "effect": "allow"},
    )

    decision = engine.decide(make_input())

    assert decision.effect == "deny"
    assert decision.rule == DEFAULT_DENY_RULE == "default-deny"


def test_engine_without_rules_denies(make_engine: MakeEngine, make_input: MakeInput) -> None:
    decision = make_engine().decide(make_input())

    assert (decision.effect, decision.rule) == ("deny", "default-deny")


def test_rule_referencing_a_missing_field_denies_naming_that_rule(
    make_engine: MakeEngine, make_input: MakeInput
) -> None:
    engine = make_engine(
        {"name": "needs-ticket", "when": 'request.ticket == "CHG-1"', "effect": "allow"},
    )

    decision = engine.decide(make_input())

    assert (decision.effect, decision.rule) == ("deny", "needs-ticket")
    assert "could not be evaluated" in decision.reason
    assert "ticket" in decision.reason


def test_deny_rule_that_errors_denies_even_when_a_later_allow_rule_would_match(
    make_engine: MakeEngine, make_input: MakeInput
) -> None:
    engine = make_engine(
        {"name": "block-frozen", "when": "request.freeze_window == true", "effect": "deny"},
        {"name": "allow-everything", "when": "true", "effect": "allow"},
    )

    decision = engine.decide(make_input())

    assert (decision.effect, decision.rule) == ("deny", "block-frozen")


def test_rule_that_does_not_evaluate_to_a_boolean_denies(
    make_engine: MakeEngine, make_input: MakeInput
) -> None:
    engine = make_engine(
        {"name": "profile-name", "when": "request.profile", "effect": "allow"},
    )

    decision = engine.decide(make_input())

    assert (decision.effect, decision.rule) == ("deny", "profile-name")
    assert "did not evaluate to a boolean" in decision.reason


def test_require_approval_rule_returns_its_effect_name_and_reason(
    make_engine: MakeEngine, make_input: MakeInput
) -> None:
    engine = make_engine(
        {
            "name": "db-write",
            "when": '"write" in request.scopes',
            "effect": "require_approval",
            "reason": "writes need a DBA",
            "approver_groups": ["dba"],
            "approvals": 2,
        },
    )

    decision = engine.decide(make_input(scopes=["read", "write"]))

    assert (decision.effect, decision.rule, decision.reason) == (
        "require_approval",
        "db-write",
        "writes need a DBA",
    )
    assert decision.approval is not None
    assert decision.approval.approvals == 2
    assert decision.approval.approver_groups == ("dba",)


def test_cel_macro_over_scopes_and_timezone_aware_now_allow_a_read_request(
    make_engine: MakeEngine, make_input: MakeInput
) -> None:
    engine = make_engine(
        {
            "name": "read-before-2100",
            "when": 'request.scopes.all(s, s == "read") '
            '&& context.now < timestamp("2100-01-01T00:00:00Z") '
            '&& context.now > timestamp("2030-06-01T11:59:59Z")',
            "effect": "allow",
        },
    )

    decision = engine.decide(make_input(scopes=["read"]))

    assert (decision.effect, decision.rule) == ("allow", "read-before-2100")


def test_cel_scopes_all_macro_does_not_match_when_one_scope_differs(
    make_engine: MakeEngine, make_input: MakeInput
) -> None:
    engine = make_engine(
        {"name": "read-only", "when": 'request.scopes.all(s, s == "read")', "effect": "allow"},
    )

    decision = engine.decide(make_input(scopes=["read", "admin"]))

    assert (decision.effect, decision.rule) == ("deny", "default-deny")


def test_input_value_cel_cannot_represent_denies_naming_the_first_rule(
    make_engine: MakeEngine, make_input: MakeInput
) -> None:
    engine = make_engine(
        {"name": "db-read", "when": 'request.profile == "demo-db"', "effect": "allow"},
    )

    decision = engine.decide(make_input(unrepresentable=object()))

    assert (decision.effect, decision.rule) == ("deny", "db-read")
    assert "could not be evaluated" in decision.reason


def test_every_rule_sees_the_same_input_when_earlier_rules_do_not_match(
    make_engine: MakeEngine, make_input: MakeInput
) -> None:
    engine = make_engine(
        {"name": "long", "when": "request.ttl_seconds > 3600", "effect": "deny"},
        {"name": "ticketless", "when": 'request.ticket == ""', "effect": "deny"},
        {"name": "by-claim", "when": 'workload.claims.repository == "org/repo"', "effect": "allow"},
    )

    decision = engine.decide(make_input(ticket="CHG-1"))

    assert (decision.effect, decision.rule) == ("allow", "by-claim")

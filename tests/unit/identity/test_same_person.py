"""Separation of duties: recognising the person behind a run across claim formats."""

from __future__ import annotations

import pytest

from jitbroker.identity.schemas import WorkloadIdentity, same_person


@pytest.mark.parametrize(
    "actor",
    ["alice", "Alice", "alice@corp.example", "ALICE@corp.example", "auth0|42"],
)
def test_actor_names_the_approver(actor: str) -> None:
    assert same_person(actor, subject="auth0|42", email="alice@corp.example")


@pytest.mark.parametrize("actor", [None, "", "bob", "bob@corp.example", "alice2"])
def test_actor_names_someone_else(actor: str | None) -> None:
    assert not same_person(actor, subject="auth0|42", email="alice@corp.example")


@pytest.mark.parametrize("claim", ["actor", "triggered_by", "user_login", "user_email"])
def test_ci_claims_that_name_the_person_behind_a_run_are_read(claim: str) -> None:
    identity = WorkloadIdentity("w", "i", "s", claims={claim: "carol"})
    assert identity.triggered_by == "carol"

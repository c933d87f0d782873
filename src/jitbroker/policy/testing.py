"""Offline policy evaluation: one sample request, or every `policy_tests` case, against a config."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from jitbroker.config import BrokerConfig, PolicyTestCase, ProfileConfig, WorkloadConfig
from jitbroker.errors import InvalidRequest
from jitbroker.grants.schemas import GrantRequest
from jitbroker.policy.engine import PolicyEngine
from jitbroker.policy.guards import (
    SignOffState,
    governed_decision,
    needs_sign_off,
    workload_facts,
)
from jitbroker.policy.schemas import Decision, PolicyInput

ModelT = TypeVar("ModelT", bound=BaseModel)


class InvalidSampleRequest(Exception):
    """A sample request the live API would refuse, or one naming what the config lacks."""


class SampleRequest(BaseModel):
    """A request as `policy check` reads it: a configured workload, the grant body, the context."""

    model_config = ConfigDict(extra="forbid")

    workload: str
    request: dict[str, Any]
    context: dict[str, Any] = Field(default_factory=dict)
    claims: dict[str, Any] = Field(default_factory=dict)
    signed_off: bool = True


class SampleContext(BaseModel):
    """What the live API takes from the HTTP request and the clock."""

    model_config = ConfigDict(extra="forbid")

    now: AwareDatetime | None = None
    source_ip: str = ""
    user_agent: str = ""


@dataclass(frozen=True)
class Evaluation:
    """The decision for one sample request, and notes on how the live API would differ."""

    decision: Decision
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class CaseResult:
    """One policy test case: its decision, or the problem that kept it from being evaluated."""

    case: PolicyTestCase
    decision: Decision | None = None
    problem: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return (
            self.decision is not None
            and self.decision.effect == self.case.expect
            and (self.case.rule is None or self.decision.rule == self.case.rule)
        )


def check_request(
    config: BrokerConfig, sample: SampleRequest, *, now: datetime | None = None
) -> Evaluation:
    """Decide one sample request with the guards and the config's rules, as the live API would."""
    return _evaluate(
        config,
        PolicyEngine(config.rules),
        workload_id=sample.workload,
        request=sample.request,
        context=sample.context,
        claims=sample.claims,
        signed_off=sample.signed_off,
        now=now,
    )


def run_policy_tests(config: BrokerConfig, *, now: datetime | None = None) -> list[CaseResult]:
    """Evaluate every `policy_tests` case of the config, in order."""
    engine = PolicyEngine(config.rules)
    results: list[CaseResult] = []
    for case in config.policy_tests:
        try:
            evaluation = _evaluate(
                config,
                engine,
                workload_id=case.workload,
                request=case.request,
                context=case.context,
                claims={},
                signed_off=case.signed_off,
                now=now,
            )
        except InvalidSampleRequest as exc:
            results.append(CaseResult(case, problem=str(exc)))
            continue
        results.append(CaseResult(case, decision=evaluation.decision, notes=evaluation.notes))
    return results


def _evaluate(
    config: BrokerConfig,
    engine: PolicyEngine,
    *,
    workload_id: str,
    request: dict[str, Any],
    context: dict[str, Any],
    claims: dict[str, Any],
    signed_off: bool,
    now: datetime | None,
) -> Evaluation:
    """The same guards and rules as the live API; the sign-off is assumed (or not) offline."""
    subject, profile, notes = _policy_input(
        config, workload_id=workload_id, request=request, context=context, claims=claims, now=now
    )
    workload = config.workloads[workload_id]
    sign_off = SignOffState.not_required
    if needs_sign_off(workload):
        sign_off = SignOffState.signed if signed_off else SignOffState.missing
        if signed_off and profile.environment == workload.environment:
            notes += (
                f"workload {workload_id!r} is in {workload.environment!r}: assuming its owner "
                "team signed it off (the live API checks the recorded sign-off)",
            )
    decision = governed_decision(
        engine,
        subject,
        workload=workload,
        profile=profile,
        scopes=subject.request["scopes"],
        sign_off=sign_off,
        today=subject.context["now"].date(),
    )
    return Evaluation(decision, notes)


def _policy_input(
    config: BrokerConfig,
    *,
    workload_id: str,
    request: dict[str, Any],
    context: dict[str, Any],
    claims: dict[str, Any],
    now: datetime | None,
) -> tuple[PolicyInput, ProfileConfig, tuple[str, ...]]:
    workload = config.workloads.get(workload_id)
    if workload is None:
        raise InvalidSampleRequest(
            f"unknown workload {workload_id!r}; known: {sorted(config.workloads)}"
        )
    body = dict(request)
    task_purpose = body.pop("task_purpose", "")
    if not isinstance(task_purpose, str):
        raise InvalidSampleRequest("request: field 'task_purpose': must be a string")
    grant_request = _validated(GrantRequest, body, "request")
    profile = _validated_profile(config, grant_request)
    sample_context = _validated(SampleContext, context, "context")
    notes: list[str] = []
    if grant_request.ttl_seconds > profile.max_ttl_seconds:
        # Policy tests may probe a rule's max_ttl past the profile cap, so this is not an error.
        notes.append(
            f"ttl_seconds {grant_request.ttl_seconds} exceeds the profile cap of "
            f"{profile.max_ttl_seconds}; the live API refuses this request before policy"
        )
    subject = PolicyInput.of(
        workload={
            **workload_facts(workload),
            "id": workload.id,
            "issuer": workload.issuer,
            "subject": workload.subject,
            "claims": _token_claims(config, workload, claims),
        },
        request={
            "profile": grant_request.profile,
            "scopes": grant_request.scopes,
            "ttl_seconds": grant_request.ttl_seconds,
            "justification": grant_request.justification,
            "task_purpose": task_purpose,
        },
        profile=profile,
        now=(sample_context.now or now or datetime.now(UTC)).astimezone(UTC),
        source_ip=sample_context.source_ip,
        user_agent=sample_context.user_agent,
    )
    return subject, profile, tuple(notes)


def _validated(model: type[ModelT], raw: dict[str, Any], where: str) -> ModelT:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"field '{'.'.join(str(part) for part in err['loc']) or where}': {err['msg']}"
            for err in exc.errors()
        )
        raise InvalidSampleRequest(f"{where}: {problems}") from None


def _validated_profile(config: BrokerConfig, request: GrantRequest) -> ProfileConfig:
    """The same profile and scope checks the grant API makes before asking the policy."""
    try:
        return request.profile_in(config.profiles, enforce_ttl_cap=False)
    except InvalidRequest as exc:
        raise InvalidSampleRequest(exc.detail) from None


def _token_claims(
    config: BrokerConfig, workload: WorkloadConfig, extra: dict[str, Any]
) -> dict[str, Any]:
    """The claims of a token that binds to this workload, with the sample's claims on top."""
    issuer = config.issuers[workload.issuer]
    binding: dict[str, Any] = {"iss": issuer.issuer, "sub": workload.subject, **workload.claims}
    for name, value in extra.items():
        # A token whose binding claims differ would not be this workload's token at all.
        if name in binding and (type(value) is not type(binding[name]) or value != binding[name]):
            raise InvalidSampleRequest(
                f"claims: {name!r} binds the token to workload {workload.id!r} and must be "
                f"{binding[name]!r}, not {value!r}"
            )
    return {"aud": workload.audience or issuer.audiences[0], **binding, **extra}

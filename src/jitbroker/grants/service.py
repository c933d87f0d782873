"""Grant requests: validate, decide by policy, issue through OpenBao, record before returning."""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from jitbroker import metrics
from jitbroker.approvals.service import announce_break_glass, announce_pending
from jitbroker.audit.events import AuditEvent, RequestContext
from jitbroker.bootstrap import Broker
from jitbroker.config import ProfileConfig
from jitbroker.engines.base import IssuedCredential
from jitbroker.errors import (
    BrokerError,
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    PolicyDenied,
    StateUnavailable,
)
from jitbroker.grants.repository import StateAtRecording
from jitbroker.grants.schemas import (
    AWAITING_STATES,
    ApprovalTerms,
    GrantRecord,
    GrantRequest,
    GrantState,
    RevokeReason,
)
from jitbroker.identity.schemas import WorkloadIdentity, same_person
from jitbroker.inventory.schemas import SignOff
from jitbroker.inventory.service import last_use_of, record_use, sign_off_state_of
from jitbroker.policy.guards import governed_decision, needs_sign_off, workload_facts
from jitbroker.policy.schemas import Decision, PolicyInput
from jitbroker.revocation.failures import backlog_read_for, ensure_revocation_capacity
from jitbroker.revocation.service import request_revocation
from jitbroker.routes.service import open_route, route_of
from jitbroker.tasks.schemas import TaskRecord, TaskState
from jitbroker.tasks.service import get_own_task, own_task
from jitbroker.workloads.service import (
    ensure_workload_active,
    refuse_if_suspended,
    workload_suspension,
)

log = logging.getLogger(__name__)
LONG_POLL_INTERVAL_SECONDS = 0.2


@dataclass(frozen=True)
class GrantOutcome:
    """The grant, and the credential when this very request issued it."""

    grant: GrantRecord
    credential: IssuedCredential | None = None
    replayed: bool = False


def request_grant(
    broker: Broker,
    *,
    workload: WorkloadIdentity,
    task_id: str,
    request: GrantRequest,
    idempotency_key: str | None,
    context: RequestContext,
) -> GrantOutcome:
    """Decide on a grant request and, when allowed, issue its credential exactly once."""
    registered = broker.config.workloads.get(workload.workload_id)
    # The revocation budget is counted in this first read (not in a round trip of its own just
    # before issuing): a few milliseconds earlier, with the same answer.
    backlog = backlog_read_for(broker, profile_id=request.profile)
    state = broker.grants.request_state(
        workload_id=workload.workload_id,
        task_id=task_id,
        sign_off=registered is not None and needs_sign_off(registered),
        backlog_profiles=backlog[0] if backlog else None,
        revoking_since=backlog[1] if backlog else 0.0,
    )
    refuse_if_suspended(workload.workload_id, state.suspension)
    task = own_task(state.task, workload=workload, task_id=task_id)
    now = broker.clock()
    if task.effective_state(now) != TaskState.active:
        raise Conflict(f"task {task_id} is {task.effective_state(now).value}; open a new task")
    try:
        profile = request.profile_in(broker.config.profiles)
        request.check_public_key(profile)
    except InvalidRequest as exc:
        _audit_rejection(broker, workload, task, request, exc, context)
        raise

    if idempotency_key is not None:
        replay = _claim_idempotency_key(broker, workload, task, request, idempotency_key)
        if replay is not None:
            return replay
    try:
        decision = _decide(broker, workload, task, request, profile, context, state.sign_off)
        if decision.effect == "deny":
            raise PolicyDenied(decision.reason, rule=decision.rule)
        grant = _new_grant(broker, workload, task, request, profile, decision)
        idempotency = (
            (workload.workload_id, idempotency_key, broker.settings.idempotency_ttl_seconds)
            if idempotency_key is not None
            else None
        )
        if decision.effect == "require_approval" and request.break_glass:
            credential, seen = _break_glass(
                broker, grant, task, profile, decision, idempotency, context, state.backlog
            )
        elif decision.effect == "require_approval":
            _await_approval(broker, grant, task, decision, idempotency, context)
            return GrantOutcome(grant)
        else:
            credential, seen = _issue_new(
                broker, grant, task, profile, idempotency, context, state.backlog
            )
        _ensure_task_still_active(broker, grant, context, seen=seen)
    except BrokerError:
        if idempotency_key is not None:
            broker.grants.release_idempotency_key(workload.workload_id, idempotency_key)
        raise
    return GrantOutcome(grant, credential)


def _ensure_task_still_active(
    broker: Broker,
    grant: GrantRecord,
    context: RequestContext,
    *,
    seen: StateAtRecording | None = None,
) -> None:
    """Close the race with a concurrent completion or suspension: each lists grants after
    recording itself, so a grant recorded after that listing sees it here and is revoked at once.

    `seen` is what the transaction that recorded the grant read (None: read it now)."""
    if seen is None:
        task = broker.tasks.get(grant.task_id)
        active = task is not None and task.state == TaskState.active
        suspension = workload_suspension(broker, workload_id=grant.workload)
    else:
        active, suspension = seen.task_active, seen.suspension
    if active and suspension is None:
        return
    reason = RevokeReason.task_completed if suspension is None else RevokeReason.workload_suspended
    request_revocation(broker, grant_id=grant.grant_id, reason=reason, context=context)
    refuse_if_suspended(grant.workload, suspension)
    raise Conflict(f"task {grant.task_id} was completed while this grant was being issued")


def issue_approved_grant(
    broker: Broker, *, workload: WorkloadIdentity, grant_id: str, context: RequestContext
) -> GrantOutcome:
    """Issue an approved grant: the secret leaves once, and its TTL starts now."""
    ensure_workload_active(broker, workload_id=workload.workload_id)
    grant = get_own_grant(broker, workload=workload, grant_id=grant_id)
    if grant.state == GrantState.issued:
        raise Conflict(f"grant {grant_id} was already issued; its secret is not shown again")
    if grant.state != GrantState.approved:
        raise Conflict(f"grant {grant_id} is {grant.state.value}, not approved")
    assert grant.issue_by is not None
    if broker.clock() >= grant.issue_by:
        raise Conflict(f"grant {grant_id} was not issued within its window after approval")
    if not grant.digest_intact:
        raise Conflict(f"grant {grant_id} no longer matches what was approved")
    caller = workload.triggered_by
    if grant.triggered_by and (caller or "").casefold() != grant.triggered_by.casefold():
        raise Forbidden(f"grant {grant_id} was requested by another run; only it may issue")
    if any(same_person(caller, subject=v.approver, email=v.email) for v in grant.votes):
        raise Forbidden("an approver of this grant cannot be the one who issues it")
    task = get_own_task(broker, workload=workload, task_id=grant.task_id)
    if task.effective_state(broker.clock()) != TaskState.active:
        raise Conflict(f"task {task.task_id} is {task.effective_state(broker.clock()).value}")
    profile = broker.config.profiles.get(grant.profile)
    if profile is None:
        raise Conflict(f"profile {grant.profile!r} no longer exists")

    def record(issued: GrantRecord, _: IssuedCredential) -> StateAtRecording | None:
        assert issued.expires_at is not None
        if not broker.grants.replace(issued, due=issued.expires_at.timestamp()):
            raise Conflict(f"grant {grant_id} changed while it was being issued")
        record_use(broker, grant=issued)
        return None  # the task and the workload are read once the grant is issued

    credential, seen = _issue(broker, grant, task, profile, record, context, route_recorded=False)
    _ensure_task_still_active(broker, grant, context, seen=seen)
    return GrantOutcome(grant, credential)


def wait_for_change(
    broker: Broker, *, workload: WorkloadIdentity, grant_id: str, wait_seconds: float
) -> GrantRecord:
    """Long poll: the grant as soon as its state moves on, or as it is after `wait_seconds`."""
    grant = get_own_grant(broker, workload=workload, grant_id=grant_id)
    deadline = time.monotonic() + min(wait_seconds, broker.settings.long_poll_max_seconds)
    while grant.state in AWAITING_STATES and time.monotonic() < deadline:
        time.sleep(LONG_POLL_INTERVAL_SECONDS)
        current = broker.grants.get(grant_id)
        if current is None:
            break
        if current.state != grant.state:
            return current
        grant = current
    return grant


def get_own_grant(broker: Broker, *, workload: WorkloadIdentity, grant_id: str) -> GrantRecord:
    """The grant if it belongs to the caller's workload; otherwise not found."""
    grant = broker.grants.get(grant_id)
    if grant is None or grant.workload != workload.workload_id:
        raise NotFound(f"no grant {grant_id} for this workload")
    return grant


def revoke_own_grant(
    broker: Broker, *, workload: WorkloadIdentity, grant_id: str, context: RequestContext
) -> GrantRecord:
    """Ask for the caller's grant to be revoked now."""
    get_own_grant(broker, workload=workload, grant_id=grant_id)
    grant = request_revocation(
        broker, grant_id=grant_id, reason=RevokeReason.revoked_by_workload, context=context
    )
    assert grant is not None
    return grant


def _claim_idempotency_key(
    broker: Broker,
    workload: WorkloadIdentity,
    task: TaskRecord,
    request: GrantRequest,
    key: str,
) -> GrantOutcome | None:
    if not 1 <= len(key) <= 200:
        raise InvalidRequest("Idempotency-Key must be 1 to 200 characters")
    fingerprint = hashlib.sha256(
        f"{task.task_id}\n{request.model_dump_json()}".encode()
    ).hexdigest()
    held = broker.grants.claim_idempotency_key(
        workload.workload_id,
        key,
        fingerprint,
        ttl_seconds=broker.settings.idempotency_claim_seconds,
    )
    if held is None:
        return None
    if held.fingerprint != fingerprint:
        raise InvalidRequest("Idempotency-Key was already used for a different request")
    if held.grant_id is None:
        conflict = Conflict("a request with this Idempotency-Key is still being processed")
        conflict.headers["Retry-After"] = "1"
        raise conflict
    grant = broker.grants.get(held.grant_id)
    if grant is None:
        raise NotFound(f"grant {held.grant_id} of this Idempotency-Key no longer exists")
    return GrantOutcome(grant, replayed=True)


def _decide(
    broker: Broker,
    workload: WorkloadIdentity,
    task: TaskRecord,
    request: GrantRequest,
    profile: ProfileConfig,
    context: RequestContext,
    sign_off: SignOff | None,
) -> Decision:
    registered = broker.config.workloads[workload.workload_id]
    now = broker.clock()
    subject = PolicyInput.of(
        workload={
            **workload_facts(registered),
            "id": workload.workload_id,
            "issuer": workload.issuer,
            "subject": workload.subject,
            "claims": workload.claims,
        },
        request={
            "profile": request.profile,
            "scopes": request.scopes,
            "ttl_seconds": request.ttl_seconds,
            "justification": request.justification,
            "task_id": task.task_id,
            "task_purpose": task.purpose,
        },
        profile=profile,
        now=now,
        source_ip=context.source_ip or "",
        user_agent=context.user_agent or "",
    )
    decision = governed_decision(
        broker.policy,
        subject,
        workload=registered,
        profile=profile,
        scopes=request.scopes,
        sign_off=sign_off_state_of(registered, sign_off),
        today=now.date(),
    )
    metrics.GRANT_DECISIONS.labels(profile.id, decision.effect).inc()
    broker.audit.record(
        AuditEvent(
            type="grant.decided",
            outcome=decision.effect,
            workload=workload.workload_id,
            task_id=task.task_id,
            profile=profile.id,
            rule=decision.rule,
            reason=decision.reason,
            context=context,
            details={
                "scopes": request.scopes,
                "ttl_seconds": request.ttl_seconds,
                "privileged": decision.privileged,
                "environment": registered.environment,
            },
        )
    )
    return decision


def _new_grant(
    broker: Broker,
    workload: WorkloadIdentity,
    task: TaskRecord,
    request: GrantRequest,
    profile: ProfileConfig,
    decision: Decision,
) -> GrantRecord:
    binding = profile.binding_for(request.scopes)
    grant = GrantRecord(
        grant_id="grt_" + secrets.token_hex(12),
        task_id=task.task_id,
        workload=workload.workload_id,
        profile=profile.id,
        engine=profile.engine,
        scopes=request.scopes,
        role=binding.role,
        destination=profile.destination,
        justification=request.justification,
        requested_ttl_seconds=request.ttl_seconds,
        state=(
            GrantState.pending_approval
            if decision.effect == "require_approval"
            else GrantState.issued
        ),
        decision=decision.as_dict(),
        created_at=broker.clock(),
        triggered_by=workload.triggered_by,
        public_key=request.public_key,
    )
    grant.request_digest = grant.digest
    return grant


def _await_approval(
    broker: Broker,
    grant: GrantRecord,
    task: TaskRecord,
    decision: Decision,
    idempotency: tuple[str, str, int] | None,
    context: RequestContext,
) -> None:
    """Record a pending request that dies unapproved at its approval deadline (or the task's)."""
    assert decision.approval is not None
    grant.state = GrantState.pending_approval
    grant.approval = _terms(broker, decision, task)
    seen = broker.grants.create(
        grant, expires_at=grant.approval.expires_at.timestamp(), idempotency=idempotency
    )
    _ensure_task_still_active(broker, grant, context, seen=seen)
    announce_pending(broker, grant)


def _break_glass(
    broker: Broker,
    grant: GrantRecord,
    task: TaskRecord,
    profile: ProfileConfig,
    decision: Decision,
    idempotency: tuple[str, str, int] | None,
    context: RequestContext,
    backlog: tuple[int, int] | None,
) -> tuple[IssuedCredential, StateAtRecording | None]:
    """Issue without waiting, under the rule's break-glass terms, flagged for review."""
    terms = decision.approval
    assert terms is not None
    if not terms.break_glass:
        raise PolicyDenied(f"rule {decision.rule!r} does not allow break-glass", rule=decision.rule)
    minimum = broker.settings.break_glass_min_justification
    if len(grant.justification.strip()) < minimum:
        raise InvalidRequest(f"break-glass needs a justification of at least {minimum} characters")
    if grant.requested_ttl_seconds > terms.break_glass_max_ttl_seconds:
        raise PolicyDenied(
            f"break-glass under rule {decision.rule!r} allows at most "
            f"{terms.break_glass_max_ttl_seconds}s",
            rule=decision.rule,
        )
    if _denied_in_task(broker, grant):
        raise PolicyDenied(
            f"an approver denied {grant.profile!r} in task {grant.task_id}; break-glass cannot "
            "override that decision",
            rule=decision.rule,
        )
    grant.break_glass = True
    grant.approval = _terms(broker, decision, task)
    issued = _issue_new(broker, grant, task, profile, idempotency, context, backlog)
    broker.audit.record(
        grant.audit_event(
            "grant.break_glass", outcome="issued", reason=grant.justification, context=context
        )
    )
    announce_break_glass(broker, grant)
    return issued


def _denied_in_task(broker: Broker, grant: GrantRecord) -> bool:
    for grant_id in broker.tasks.grant_ids(grant.task_id):
        other = broker.grants.get(grant_id)
        if other and other.profile == grant.profile and other.state == GrantState.denied:
            return True
    return False


def _terms(broker: Broker, decision: Decision, task: TaskRecord) -> ApprovalTerms:
    assert decision.approval is not None
    deadline = broker.clock() + timedelta(seconds=decision.approval.approval_ttl_seconds)
    return ApprovalTerms(
        rule=decision.rule,
        approvals_required=decision.approval.approvals,
        approver_groups=list(decision.approval.approver_groups),
        expires_at=min(deadline, task.expires_at),
    )


def _issue_new(
    broker: Broker,
    grant: GrantRecord,
    task: TaskRecord,
    profile: ProfileConfig,
    idempotency: tuple[str, str, int] | None,
    context: RequestContext,
    backlog: tuple[int, int] | None,
) -> tuple[IssuedCredential, StateAtRecording | None]:
    def record(issued: GrantRecord, credential: IssuedCredential) -> StateAtRecording | None:
        assert issued.expires_at is not None
        return broker.grants.create(
            issued,
            expires_at=issued.expires_at.timestamp(),
            idempotency=idempotency,
            last_use=last_use_of(broker, grant=issued),
            route=route_of(broker, grant=issued, credential=credential),
        )

    return _issue(
        broker, grant, task, profile, record, context, route_recorded=True, backlog=backlog
    )


def _issue(
    broker: Broker,
    grant: GrantRecord,
    task: TaskRecord,
    profile: ProfileConfig,
    record: Callable[[GrantRecord, IssuedCredential], StateAtRecording | None],
    context: RequestContext,
    *,
    route_recorded: bool,
    backlog: tuple[int, int] | None = None,
) -> tuple[IssuedCredential, StateAtRecording | None]:
    """Issue, then `record` the lease (and, when `route_recorded`, open the route with it); if
    recording fails, revoke the lease and fail. With the credential, what `record` read of the
    task and the workload (None: not read). `backlog`: the revocation backlog as the request's
    first read counted it (None: count it now)."""
    engine = broker.engines[profile.engine]
    started = time.monotonic()
    scopes = grant.approved_scopes or grant.scopes
    binding = profile.binding_for(scopes)
    # Measured just before issuing so the lease cannot outlive the task's deadline.
    ttl_seconds = min(
        grant.approved_ttl_seconds or grant.requested_ttl_seconds,
        int((task.expires_at - broker.clock()).total_seconds()),
    )
    if ttl_seconds < 1:
        raise Conflict(f"task {task.task_id} ends in less than a second; open a new task")
    try:
        ensure_revocation_capacity(broker, profile=profile, counted=backlog)
        credential = engine.issue(
            profile,
            binding,
            ttl_seconds=ttl_seconds,
            grant_id=grant.grant_id,
            labels={"task_id": grant.task_id, "workload": grant.workload},
            public_key=grant.public_key,
        )
    except BrokerError as exc:
        _audit_issue_failure(broker, grant, exc, context)
        raise
    issued_at = broker.clock()
    grant.state = GrantState.issued
    grant.role = binding.role
    grant.issued_at = issued_at
    grant.expires_at = issued_at + timedelta(seconds=credential.lease_ttl_seconds)
    grant.lease_ref = credential.lease_ref
    grant.lease_ttl_seconds = credential.lease_ttl_seconds
    grant.principal = credential.principal
    try:
        seen = record(grant, credential)
    except (StateUnavailable, Conflict) as exc:
        _roll_back(broker, grant, credential, route_recorded=route_recorded)
        _audit_issue_failure(broker, grant, exc, context)
        if isinstance(exc, Conflict):
            raise
        raise StateUnavailable(
            "the credential could not be recorded, so it was revoked; retry shortly"
        ) from None
    try:
        if not route_recorded:
            open_route(broker, grant=grant, credential=credential)
    except StateUnavailable as exc:
        # Recorded but unreachable through gateways: take it back rather than hand it out.
        request_revocation(
            broker, grant_id=grant.grant_id, reason=RevokeReason.issue_failed, context=context
        )
        _audit_issue_failure(broker, grant, exc, context)
        raise StateUnavailable(
            "the downstream route could not be opened, so the credential was revoked"
        ) from None
    metrics.GRANTS_ISSUED.labels(profile.id).inc()
    metrics.ISSUANCE_SECONDS.labels(profile.id).observe(time.monotonic() - started)
    broker.audit.record(
        grant.audit_event(
            "grant.issued",
            outcome="issued",
            context=context,
            details={
                "scopes": grant.approved_scopes or grant.scopes,
                "requested_scopes": grant.scopes,
                "role": grant.role,
                "lease_ttl_seconds": credential.lease_ttl_seconds,
                "principal": credential.principal,
                "expires_at": grant.expires_at.isoformat(),
            },
        )
    )
    return credential, seen


def _roll_back(
    broker: Broker, grant: GrantRecord, credential: IssuedCredential, *, route_recorded: bool
) -> None:
    metrics.ISSUANCE_FAILURES.labels(grant.profile).inc()
    if route_recorded:
        # A transaction that failed part-way may have opened the route: gateways must not
        # admit a credential that is being taken back.
        try:
            broker.routes.close(grant.grant_id)
        except StateUnavailable as exc:
            log.warning("route of unrecorded grant %s not closed: %s", grant.grant_id, exc.detail)
    try:
        broker.engines[grant.engine].revoke(credential.lease_ref)
    except BrokerError as exc:
        # OpenBao's lease TTL (the grant TTL) still bounds this credential.
        log.critical(
            "unrecorded lease for grant %s could not be revoked (%s); it dies at its TTL",
            grant.grant_id,
            exc.detail,
        )


def _audit_rejection(
    broker: Broker,
    workload: WorkloadIdentity,
    task: TaskRecord,
    request: GrantRequest,
    exc: InvalidRequest,
    context: RequestContext,
) -> None:
    broker.audit.record(
        AuditEvent(
            type="grant.rejected",
            outcome="invalid",
            workload=workload.workload_id,
            task_id=task.task_id,
            profile=request.profile,
            reason=exc.detail,
            context=context,
            details={"scopes": request.scopes, "ttl_seconds": request.ttl_seconds},
        )
    )


def _audit_issue_failure(
    broker: Broker, grant: GrantRecord, exc: BrokerError, context: RequestContext
) -> None:
    broker.audit.record(
        grant.audit_event(
            "grant.issue_failed", outcome="failed", reason=exc.detail, context=context
        )
    )

"""The inventory and its lifecycle: production sign-off, access reviews by the owner team,
automatic suspension when a review is overdue, retirement, and the unused-scope report."""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import timedelta

from jitbroker.audit.events import AuditEvent, RequestContext
from jitbroker.bootstrap import Broker
from jitbroker.config import WorkloadConfig
from jitbroker.errors import BrokerError, Conflict, Forbidden, NotFound, StateUnavailable
from jitbroker.grants.schemas import GrantRecord
from jitbroker.identity.schemas import HumanIdentity, require_admin
from jitbroker.inventory.repository import InventoryRepository
from jitbroker.inventory.schemas import (
    InventoryItem,
    LastUse,
    ReviewClock,
    ReviewDecision,
    ReviewDue,
    ReviewEnforcement,
    ReviewRecord,
    SignOff,
    UnusedScope,
)
from jitbroker.notifications.service import notify
from jitbroker.policy.guards import (
    PRIVILEGED_CAPABILITIES,
    SignOffState,
    has_expired,
    needs_sign_off,
    privileged_reach,
    reachable_profiles,
)
from jitbroker.workloads.schemas import Suspension, SuspensionCause, WorkloadState
from jitbroker.workloads.service import (
    resume_after_review,
    suspend_and_revoke,
    workload_suspension,
)

log = logging.getLogger(__name__)
REVIEWER = "jitbroker:access-review"


def _repository(broker: Broker) -> InventoryRepository:
    # Stateless over the shared Redis client, so it is cheaper to build than to wire.
    return InventoryRepository(broker.redis, broker.settings.key_prefix)


def inventory_digest(workload: WorkloadConfig) -> str:
    """SHA-256 of what a production sign-off vouches for: the trust binding, the environment,
    the owner team and the purpose."""
    canonical = json.dumps(
        {
            "id": workload.id,
            "issuer": workload.issuer,
            "subject": workload.subject,
            "audience": workload.audience,
            "claims": workload.claims,
            "environment": workload.environment,
            "owner_team": workload.owner_team,
            "purpose": workload.purpose,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def sign_off_state(broker: Broker, *, workload: WorkloadConfig) -> SignOffState:
    """Whether a production workload carries a sign-off that matches its configuration."""
    return _sign_off(broker, workload)[0]


def sign_off_state_of(workload: WorkloadConfig, record: SignOff | None) -> SignOffState:
    """`sign_off_state` for a sign-off record the caller has already read."""
    if not needs_sign_off(workload):
        return SignOffState.not_required
    return _judge_sign_off(workload, record)[0]


def _sign_off(broker: Broker, workload: WorkloadConfig) -> tuple[SignOffState, SignOff | None]:
    if not needs_sign_off(workload):
        return SignOffState.not_required, None
    return _judge_sign_off(workload, _repository(broker).sign_off(workload.id))


def _judge_sign_off(
    workload: WorkloadConfig, record: SignOff | None
) -> tuple[SignOffState, SignOff | None]:
    if record is None:
        return SignOffState.missing, None
    if record.inventory_digest != inventory_digest(workload):
        return SignOffState.stale, record
    return SignOffState.signed, record


def review_clock(broker: Broker, *, workload: WorkloadConfig) -> ReviewClock:
    """The workload's review clock; the first call for a workload starts it."""
    repository = _repository(broker)
    return ReviewClock(
        started_at=repository.first_seen(workload.id, broker.clock()),
        last_review=repository.last_review(workload.id),
        every_seconds=workload.review_every,
    )


def list_inventory(broker: Broker, *, admin: HumanIdentity) -> list[InventoryItem]:
    """Every configured workload with its owner, environment, privilege, use and next review."""
    require_admin(admin, broker.settings.admin_groups)
    return [_item(broker, workload) for workload in broker.config.workloads.values()]


def sign_off_workload(
    broker: Broker,
    *,
    person: HumanIdentity,
    workload_id: str,
    comment: str,
    context: RequestContext,
) -> SignOff:
    """Record the owner team's sign-off that the workload, as configured, may run in prod."""
    workload = _registered(broker, workload_id)
    _require_owner_team(person, workload, "sign it off")
    if workload.unowned:
        raise Conflict(
            f"workload {workload_id} is unowned (no {' and '.join(workload.missing_inventory)}); "
            "complete its configuration before signing it off"
        )
    if not needs_sign_off(workload):
        raise Conflict(
            f"workload {workload_id} is in {workload.environment!r}; only production workloads "
            "need a sign-off"
        )
    record = SignOff(
        workload=workload_id,
        environment=workload.environment,
        owner_team=workload.owner_team,
        signed_by=person.subject,
        issuer=person.issuer,
        signed_at=broker.clock(),
        comment=comment,
        inventory_digest=inventory_digest(workload),
    )
    _repository(broker).save_sign_off(record)
    broker.audit.record(
        AuditEvent(
            type="workload.signed_off",
            outcome="signed",
            workload=workload_id,
            reason=comment or None,
            context=context,
            details={
                "by": person.subject,
                "issuer": person.issuer,
                "environment": workload.environment,
                "owner_team": workload.owner_team,
                "inventory_digest": record.inventory_digest,
            },
        )
    )
    return record


def review_workload(
    broker: Broker,
    *,
    person: HumanIdentity,
    workload_id: str,
    decision: ReviewDecision,
    comment: str,
    context: RequestContext,
) -> InventoryItem:
    """Record the owner team's access review; it restarts the review clock. `retire` suspends
    the workload for good (everything live revoked); `keep` and `reduce` lift a suspension that
    the overdue review caused."""
    workload = _registered(broker, workload_id)
    _require_owner_team(person, workload, "review it")
    suspension = workload_suspension(broker, workload_id=workload_id)
    # Retiring again only re-runs the revocation, in case the first attempt could not finish.
    if suspension is not None and suspension.permanent and decision != ReviewDecision.retire:
        raise Conflict(f"workload {workload_id} is retired: {suspension.reason}")
    review = ReviewRecord(
        workload=workload_id,
        decision=decision,
        comment=comment,
        reviewed_by=person.subject,
        issuer=person.issuer,
        reviewed_at=broker.clock(),
    )
    _repository(broker).save_review(review)
    broker.audit.record(
        AuditEvent(
            type="workload.reviewed",
            outcome=decision.value,
            workload=workload_id,
            reason=comment or None,
            context=context,
            details={"by": person.subject, "issuer": person.issuer, "decision": decision.value},
        )
    )
    if decision == ReviewDecision.retire:
        reason = f"retired in an access review by {person.subject}" + (
            f": {comment}" if comment else ""
        )
        _retire(
            broker,
            workload,
            cause=SuspensionCause.retired,
            reason=reason,
            by=person.subject,
            context=context,
        )
    else:
        resume_after_review(broker, workload_id=workload_id, reviewer=person, context=context)
    return _item(broker, workload)


def reviews_due(broker: Broker, *, admin: HumanIdentity) -> list[ReviewDue]:
    """Workloads whose access review is overdue, most overdue first (retired ones excepted)."""
    require_admin(admin, broker.settings.admin_groups)
    now = broker.clock()
    grace = broker.settings.review_grace_seconds
    due: list[ReviewDue] = []
    for workload in broker.config.workloads.values():
        clock = review_clock(broker, workload=workload)
        suspension = workload_suspension(broker, workload_id=workload.id)
        if not clock.is_overdue(now) or (suspension is not None and suspension.permanent):
            continue
        due.append(
            ReviewDue(
                workload=workload.id,
                owner_team=workload.owner_team or None,
                custodian=workload.custodian or None,
                environment=workload.environment,
                privileged=bool(privileged_reach(workload, broker.config.profiles)),
                due_at=clock.due_at,
                overdue_seconds=int((now - clock.due_at).total_seconds()),
                suspends_at=clock.suspends_at(grace),
                state=suspension.state if suspension else WorkloadState.active,
            )
        )
    return sorted(due, key=lambda item: item.due_at)


def enforce_reviews(broker: Broker) -> ReviewEnforcement:
    """One scheduler round: retire workloads past `expires_on`, suspend those whose review is
    overdue beyond the grace period (revoking everything live) and remind owners once a review
    falls due. Safe to repeat: a workload already suspended is left as it is."""
    done = ReviewEnforcement(suspended=[], retired=[], reminded=[])
    for workload in broker.config.workloads.values():
        try:
            _enforce_one(broker, workload, done)
        except BrokerError as exc:
            log.warning("review check of %s failed, next round retries: %s", workload.id, exc)
    return done


def unused_scopes(broker: Broker, *, admin: HumanIdentity, days: int) -> list[UnusedScope]:
    """Scopes each workload may request (those of its environment's profiles) that were not
    issued to it in the last `days` days: candidates for a `reduce` review."""
    require_admin(admin, broker.settings.admin_groups)
    cutoff = broker.clock() - timedelta(days=days)
    unused: list[UnusedScope] = []
    for workload in broker.config.workloads.values():
        last_used = _repository(broker).last_used(workload.id)
        observed_since = review_clock(broker, workload=workload).started_at
        for profile in reachable_profiles(workload, broker.config.profiles):
            for binding in profile.scopes:
                used_at = last_used.get(f"{profile.id}/{binding.name}")
                if used_at is not None and used_at >= cutoff:
                    continue
                unused.append(
                    UnusedScope(
                        workload=workload.id,
                        environment=workload.environment,
                        profile=profile.id,
                        scope=binding.name,
                        capabilities=list(binding.capabilities),
                        privileged=bool(set(binding.capabilities) & PRIVILEGED_CAPABILITIES),
                        last_used_at=used_at,
                        observed_since=observed_since,
                    )
                )
    return unused


def last_use_of(broker: Broker, *, grant: GrantRecord) -> LastUse:
    """What `record_use` writes, for the grant's own recording transaction to carry."""
    return LastUse(
        workload=grant.workload,
        profile=grant.profile,
        scopes=list(grant.approved_scopes or grant.scopes),
        at=grant.issued_at or broker.clock(),
    )


def record_use(broker: Broker, *, grant: GrantRecord) -> None:
    """Remember that the grant's scopes were issued to its workload now (feeds the inventory's
    last use and the unused-scope report); a failure is logged, never raised."""
    try:
        _repository(broker).record_use(
            grant.workload,
            grant.profile,
            grant.approved_scopes or grant.scopes,
            grant.issued_at or broker.clock(),
        )
    except StateUnavailable as exc:
        log.warning("last use of grant %s not recorded: %s", grant.grant_id, exc.detail)


def _enforce_one(broker: Broker, workload: WorkloadConfig, done: ReviewEnforcement) -> None:
    now = broker.clock()
    suspension = workload_suspension(broker, workload_id=workload.id)
    if suspension is not None and suspension.permanent:
        return
    if has_expired(workload, now.date()):
        reason = f"expires_on {workload.expires_on} has passed"
        _retire(
            broker,
            workload,
            cause=SuspensionCause.expired,
            reason=reason,
            by=REVIEWER,
            context=RequestContext(),
        )
        done.retired.append(workload.id)
        return
    clock = review_clock(broker, workload=workload)
    if suspension is not None or not clock.is_overdue(now):
        return
    grace = broker.settings.review_grace_seconds
    if now < clock.suspends_at(grace):
        if _repository(broker).claim_reminder(workload.id, clock.due_at, grace):
            _notify_review_due(broker, workload, clock)
            done.reminded.append(workload.id)
        return
    if _suspend_for_overdue_review(broker, workload, clock):
        done.suspended.append(workload.id)


def _suspend_for_overdue_review(
    broker: Broker, workload: WorkloadConfig, clock: ReviewClock
) -> bool:
    # Re-read just before acting: a review recorded since the check above wins.
    if review_clock(broker, workload=workload).due_at != clock.due_at:
        return False
    grace_days = broker.settings.review_grace_seconds / 86400
    attest = (
        f"its owner team {workload.owner_team!r} must review it "
        f"(POST /v1/workloads/{workload.id}/review)"
        if workload.owner_team
        else "it has no owner_team to review it; record one in its configuration"
    )
    suspension = Suspension(
        workload=workload.id,
        suspended_by=REVIEWER,
        suspended_at=broker.clock(),
        reason=f"access review overdue since {clock.due_at:%Y-%m-%d %H:%M} UTC "
        f"(grace {grace_days:g}d); {attest}",
        cause=SuspensionCause.review_overdue,
    )
    view = suspend_and_revoke(
        broker, suspension=suspension, context=RequestContext(), only_if_active=True
    )
    if view is None:
        return False
    notify(
        broker,
        event="review.overdue",
        text=f":lock: {workload.id} was suspended: {suspension.reason}. "
        f"{view.revocations.matched} live grant(s) revoked.",
        fields={
            **_owner_fields(workload),
            "due_at": clock.due_at.isoformat(),
            "reason": suspension.reason,
            **view.revocations.model_dump(),
        },
    )
    return True


def _retire(
    broker: Broker,
    workload: WorkloadConfig,
    *,
    cause: SuspensionCause,
    reason: str,
    by: str,
    context: RequestContext,
) -> None:
    suspension = Suspension(
        workload=workload.id,
        suspended_by=by,
        suspended_at=broker.clock(),
        reason=reason,
        cause=cause,
    )
    view = suspend_and_revoke(broker, suspension=suspension, context=context)
    assert view is not None
    notify(
        broker,
        event="workload.retired",
        text=f"{workload.id} was retired: {reason}. "
        f"{view.revocations.matched} live grant(s) revoked.",
        fields={**_owner_fields(workload), "reason": reason, **view.revocations.model_dump()},
    )


def _notify_review_due(broker: Broker, workload: WorkloadConfig, clock: ReviewClock) -> None:
    suspends_at = clock.suspends_at(broker.settings.review_grace_seconds)
    notify(
        broker,
        event="review.due",
        text=f"The access review of {workload.id} was due {clock.due_at:%Y-%m-%d}; "
        f"without one it is suspended on {suspends_at:%Y-%m-%d %H:%M} UTC.",
        fields={
            **_owner_fields(workload),
            "due_at": clock.due_at.isoformat(),
            "suspends_at": suspends_at.isoformat(),
        },
    )


def _owner_fields(workload: WorkloadConfig) -> dict[str, str | None]:
    return {
        "workload": workload.id,
        "owner_team": workload.owner_team or None,
        "custodian": workload.custodian or None,
        "backup_approver": workload.backup_approver or None,
        "environment": workload.environment,
    }


def _item(broker: Broker, workload: WorkloadConfig) -> InventoryItem:
    now = broker.clock()
    clock = review_clock(broker, workload=workload)
    suspension = workload_suspension(broker, workload_id=workload.id)
    reach = privileged_reach(workload, broker.config.profiles)
    sign_off, signed = _sign_off(broker, workload)
    last_used = _repository(broker).last_used(workload.id)
    return InventoryItem(
        id=workload.id,
        description=workload.description,
        purpose=workload.purpose or None,
        owner_team=workload.owner_team or None,
        custodian=workload.custodian or None,
        backup_approver=workload.backup_approver or None,
        ownership="unowned" if workload.unowned else "owned",
        missing=workload.missing_inventory,
        environment=workload.environment,
        kind=workload.kind,
        privileged=bool(reach),
        privileged_scopes=[str(scope) for scope in reach],
        state=suspension.state if suspension else WorkloadState.active,
        suspension=suspension,
        sign_off=sign_off,
        signed_off_by=signed.signed_by if signed else None,
        last_used_at=max(last_used.values(), default=None),
        review_every_seconds=workload.review_every,
        review_clock_started_at=clock.started_at,
        last_review=clock.last_review,
        next_review_due=clock.due_at,
        review_overdue=clock.is_overdue(now),
        expires_on=workload.expires_on,
    )


def _registered(broker: Broker, workload_id: str) -> WorkloadConfig:
    workload = broker.config.workloads.get(workload_id)
    if workload is None:
        raise NotFound(f"no workload {workload_id!r} in the configuration")
    return workload


def _require_owner_team(person: HumanIdentity, workload: WorkloadConfig, action: str) -> None:
    if not workload.owner_team:
        raise Conflict(
            f"workload {workload.id} has no owner_team, so nobody can {action}; record "
            "owner_team and purpose in its configuration"
        )
    if workload.owner_team not in person.groups:
        raise Forbidden(
            f"only members of workload {workload.id}'s owner team {workload.owner_team!r} may "
            f"{action}"
        )

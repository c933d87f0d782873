"""The kill switch: suspend and resume a workload, revoke live grants by selector, and revoke
what a workload removed from the configuration still holds."""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Iterable, Iterator

from jitbroker.audit.events import AuditEvent, RequestContext
from jitbroker.bootstrap import Broker
from jitbroker.config import WorkloadConfig
from jitbroker.errors import (
    BrokerError,
    Conflict,
    NotFound,
    StateUnavailable,
    WorkloadSuspended,
)
from jitbroker.grants.schemas import GrantRecord, GrantState, RevokeReason
from jitbroker.identity.schemas import HumanIdentity, require_admin
from jitbroker.notifications.service import notify
from jitbroker.revocation.service import request_revocation
from jitbroker.workloads.repository import WorkloadRepository
from jitbroker.workloads.schemas import (
    RevocationCounts,
    RevokeSelector,
    SuspendedView,
    Suspension,
    SuspensionCause,
    WorkloadState,
    WorkloadView,
)

log = logging.getLogger(__name__)


def _repository(broker: Broker) -> WorkloadRepository:
    # Stateless over the shared Redis client, so it is cheaper to build than to wire.
    return WorkloadRepository(broker.redis, broker.settings.key_prefix)


def ensure_workload_active(broker: Broker, *, workload_id: str) -> None:
    """Refuse new tasks and grants while the workload is suspended (403 with the reason)."""
    refuse_if_suspended(workload_id, _repository(broker).suspension(workload_id))


def refuse_if_suspended(workload_id: str, suspension: Suspension | None) -> None:
    """`ensure_workload_active` for a suspension the caller has already read."""
    if suspension is not None:
        raise WorkloadSuspended(
            f"workload {workload_id} is {suspension.state.value}: {suspension.reason}",
            suspended_at=suspension.suspended_at.isoformat(),
        )


def describe_workload(broker: Broker, *, admin: HumanIdentity, workload_id: str) -> WorkloadView:
    """The workload's state, its suspension if any, and how many live grants it holds."""
    require_admin(admin, broker.settings.admin_groups)
    workload = _registered(broker, workload_id)
    live = sum(1 for grant in _live_grants(broker) if grant.workload == workload_id)
    return _view(workload, _repository(broker).suspension(workload_id), live)


def suspend_workload(
    broker: Broker,
    *,
    admin: HumanIdentity,
    workload_id: str,
    reason: str,
    context: RequestContext,
) -> SuspendedView:
    """Record the suspension, then revoke every live grant of the workload; safe to repeat."""
    require_admin(admin, broker.settings.admin_groups)
    _registered(broker, workload_id)
    current = _repository(broker).suspension(workload_id)
    if current is not None and current.permanent:
        raise Conflict(f"workload {workload_id} is retired: {current.reason}")
    suspension = Suspension(
        workload=workload_id,
        suspended_by=admin.subject,
        suspended_at=broker.clock(),
        reason=reason,
    )
    view = suspend_and_revoke(broker, suspension=suspension, issuer=admin.issuer, context=context)
    assert view is not None
    return view


def suspend_and_revoke(
    broker: Broker,
    *,
    suspension: Suspension,
    context: RequestContext,
    issuer: str = "",
    only_if_active: bool = False,
) -> SuspendedView | None:
    """Record the suspension (or retirement), then revoke every live grant of its workload;
    None when `only_if_active` and the workload was already suspended."""
    workload_id = suspension.workload
    # Recorded first, so no task or grant starts once the listing below has begun.
    if not _repository(broker).suspend(suspension, only_if_active=only_if_active):
        return None
    grants = (grant for grant in _live_grants(broker) if grant.workload == workload_id)
    counts, failed = _revoke_all(
        broker, grants, reason=RevokeReason.workload_suspended, context=context
    )
    broker.audit.record(
        AuditEvent(
            type="workload.retired" if suspension.permanent else "workload.suspended",
            outcome=suspension.state.value,
            workload=workload_id,
            reason=suspension.reason,
            context=context,
            details={
                "by": suspension.suspended_by,
                "issuer": issuer,
                "cause": suspension.cause.value,
                **counts.model_dump(),
            },
        )
    )
    _raise_if_failed(failed, "suspend the workload")
    return SuspendedView(
        workload=workload_id,
        state=suspension.state,
        suspension=suspension,
        revocations=counts,
    )


def workload_suspension(broker: Broker, *, workload_id: str) -> Suspension | None:
    """The workload's suspension (or retirement), or None while it is active."""
    return _repository(broker).suspension(workload_id)


def resume_after_review(
    broker: Broker, *, workload_id: str, reviewer: HumanIdentity, context: RequestContext
) -> bool:
    """Lift a suspension that an overdue review caused (and no other kind); True if lifted."""
    if not _repository(broker).resume_if(workload_id, SuspensionCause.review_overdue):
        return False
    broker.audit.record(
        AuditEvent(
            type="workload.resumed",
            outcome="active",
            workload=workload_id,
            reason="the owner team completed the overdue access review",
            context=context,
            details={"by": reviewer.subject, "issuer": reviewer.issuer},
        )
    )
    return True


def resume_workload(
    broker: Broker, *, admin: HumanIdentity, workload_id: str, context: RequestContext
) -> WorkloadView:
    """Lift the suspension: the workload may open tasks and request grants again."""
    require_admin(admin, broker.settings.admin_groups)
    workload = _registered(broker, workload_id)
    current = _repository(broker).suspension(workload_id)
    if current is not None and current.permanent:
        raise Conflict(
            f"workload {workload_id} is retired ({current.reason}); it cannot be resumed, "
            "register a new workload instead"
        )
    if _repository(broker).resume(workload_id):
        broker.audit.record(
            AuditEvent(
                type="workload.resumed",
                outcome="active",
                workload=workload_id,
                context=context,
                details={"by": admin.subject, "issuer": admin.issuer},
            )
        )
    live = sum(1 for grant in _live_grants(broker) if grant.workload == workload_id)
    return _view(workload, None, live)


def revoke_matching(
    broker: Broker, *, admin: HumanIdentity, selector: RevokeSelector, context: RequestContext
) -> RevocationCounts:
    """Revoke every live grant the selector matches: the incident-response button."""
    require_admin(admin, broker.settings.admin_groups)
    grants = (grant for grant in _live_grants(broker) if _matches(selector, grant))
    counts, failed = _revoke_all(
        broker, grants, reason=RevokeReason.incident_revoke, context=context
    )
    criteria = selector.criteria()
    broker.audit.record(
        AuditEvent(
            type="incident.revoke",
            outcome="revoked",
            workload=selector.workload,
            profile=selector.profile,
            reason=selector.reason,
            context=context,
            details={
                "selector": criteria,
                "by": admin.subject,
                "issuer": admin.issuer,
                **counts.model_dump(),
            },
        )
    )
    described = ", ".join(f"{key}={value}" for key, value in criteria.items())
    notify(
        broker,
        event="incident.revoke",
        text=f":rotating_light: {admin.subject} revoked {counts.matched} live grant(s) matching "
        f"{described}: {selector.reason}",
        fields={
            "selector": criteria,
            "reason": selector.reason,
            "by": admin.subject,
            **counts.model_dump(),
        },
    )
    _raise_if_failed(failed, "revoke")
    return counts


def revoke_grants_of_inactive_workloads(broker: Broker) -> RevocationCounts:
    """Revoke live grants of workloads removed from the configuration, and of suspended ones
    (a grant whose issuance began before its workload was suspended); the total counts."""
    suspensions: dict[str, Suspension | None] = {}

    def cause(workload_id: str) -> RevokeReason | None:
        if workload_id not in broker.config.workloads:
            return RevokeReason.workload_removed
        if workload_id not in suspensions:
            suspensions[workload_id] = _repository(broker).suspension(workload_id)
        return RevokeReason.workload_suspended if suspensions[workload_id] else None

    doomed: dict[str, list[GrantRecord]] = {}
    for grant in _live_grants(broker):
        # A grant already being revoked is on its way out; the ledger sees it through.
        if grant.state != GrantState.revoking and cause(grant.workload) is not None:
            doomed.setdefault(grant.workload, []).append(grant)
    total = RevocationCounts()
    for workload_id, grants in doomed.items():
        reason = cause(workload_id)
        assert reason is not None
        counts, failed = _revoke_all(broker, grants, reason=reason, context=RequestContext())
        _add(total, counts)
        if failed:
            log.warning(
                "revocation of %d grant(s) of %s not requested; next round retries",
                len(failed),
                workload_id,
            )
        if reason == RevokeReason.workload_suspended:
            log.warning(
                "revoked %d grant(s) of suspended workload %s issued during its suspension",
                counts.matched,
                workload_id,
            )
            continue
        broker.audit.record(
            AuditEvent(
                type="workload.removed",
                outcome="revoked",
                workload=workload_id,
                reason=f"workload {workload_id} is no longer in the configuration",
                details=counts.model_dump(),
            )
        )
    return total


def _registered(broker: Broker, workload_id: str) -> WorkloadConfig:
    workload = broker.config.workloads.get(workload_id)
    if workload is None:
        raise NotFound(f"no workload {workload_id!r} in the configuration")
    return workload


def _live_grants(broker: Broker) -> Iterator[GrantRecord]:
    """Every grant not yet in a final state: each one is on the expiry ledger until it is.

    Costs one read per live grant (O(live grants)); fine at today's volumes, and the place to
    put an index by workload and profile once it is not."""
    for grant_id in broker.ledger.members():
        grant = broker.grants.get(grant_id)
        if grant is not None and not grant.is_terminal:
            yield grant


def _matches(selector: RevokeSelector, grant: GrantRecord) -> bool:
    if selector.workload is not None and grant.workload != selector.workload:
        return False
    if selector.profile is not None and grant.profile != selector.profile:
        return False
    if selector.destination is not None:
        pattern = selector.destination
        return grant.destination == pattern or fnmatch.fnmatchcase(grant.destination, pattern)
    return True


def _revoke_all(
    broker: Broker,
    grants: Iterable[GrantRecord],
    *,
    reason: RevokeReason,
    context: RequestContext,
) -> tuple[RevocationCounts, list[str]]:
    """Request revocation of each grant (requests awaiting approval are cancelled); the counts
    and the ids whose revocation could not be requested."""
    counts = RevocationCounts()
    failed: list[str] = []
    for grant in grants:
        counts.matched += 1
        try:
            result = request_revocation(
                broker, grant_id=grant.grant_id, reason=reason, context=context
            )
        except BrokerError as exc:
            log.warning("revocation of %s not requested: %s", grant.grant_id, exc.detail)
            failed.append(grant.grant_id)
            continue
        if result is not None and result.state == GrantState.cancelled:
            counts.cancelled += 1
        elif result is not None:
            counts.revocation_requested += 1
    return counts, failed


def _add(tally: RevocationCounts, counts: RevocationCounts) -> None:
    tally.matched += counts.matched
    tally.revocation_requested += counts.revocation_requested
    tally.cancelled += counts.cancelled


def _raise_if_failed(failed: list[str], action: str) -> None:
    if failed:
        raise StateUnavailable(
            f"revocation of {len(failed)} grant(s) could not be requested; {action} again",
            grants=failed,
        )


def _view(workload: WorkloadConfig, suspension: Suspension | None, live: int) -> WorkloadView:
    return WorkloadView(
        id=workload.id,
        description=workload.description,
        state=suspension.state if suspension else WorkloadState.active,
        suspension=suspension,
        live_grants=live,
    )

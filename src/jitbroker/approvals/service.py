"""Human decisions on grants: approve (quorum, separation of duties), deny, acknowledge."""

from __future__ import annotations

from datetime import datetime, timedelta

from jitbroker.approvals.schemas import ApprovalItem
from jitbroker.audit.events import RequestContext
from jitbroker.bootstrap import Broker
from jitbroker.errors import Conflict, Forbidden, InvalidRequest, NotFound, StateUnavailable
from jitbroker.grants.schemas import ApprovalVote, BreakGlassReview, GrantRecord, GrantState
from jitbroker.identity.schemas import HumanIdentity, same_person
from jitbroker.notifications.service import notify
from jitbroker.tasks.schemas import TaskRecord

MAX_CAS_ATTEMPTS = 20


def list_for_approver(
    broker: Broker, *, approver: HumanIdentity, state: str = "pending"
) -> list[ApprovalItem]:
    """Pending requests (or break-glass grants awaiting review) this approver may decide on."""
    if state not in ("pending", "review"):
        raise InvalidRequest("state must be 'pending' or 'review'")
    ids = broker.grants.pending_ids() if state == "pending" else broker.grants.review_ids()
    now = broker.clock()
    items = []
    for grant_id in ids:
        grant = broker.grants.get(grant_id)
        if grant is None or grant.approval is None:
            continue
        if not set(approver.groups) & set(grant.approval.approver_groups):
            continue
        task = broker.tasks.get(grant.task_id)
        items.append(_item(broker, grant, task, now))
    return sorted(items, key=lambda item: item.created_at)


def get_for_approver(broker: Broker, *, approver: HumanIdentity, grant_id: str) -> ApprovalItem:
    """One request as an approver sees it (404 unless the approver's groups may decide it)."""
    grant = _decidable(broker, approver, grant_id)
    return _item(broker, grant, broker.tasks.get(grant.task_id), broker.clock())


def _item(
    broker: Broker, grant: GrantRecord, task: TaskRecord | None, now: datetime
) -> ApprovalItem:
    """The request with its privilege and the workload's environment and owner from the config."""
    return ApprovalItem.of(
        grant,
        task,
        now,
        profile=broker.config.profiles.get(grant.profile),
        workload=broker.config.workloads.get(grant.workload),
    )


def approve(
    broker: Broker,
    *,
    approver: HumanIdentity,
    grant_id: str,
    comment: str,
    ttl_seconds: int | None,
    scopes: list[str] | None,
    context: RequestContext,
) -> GrantRecord:
    """Record one approval; the quorum turns the grant `approved` and opens its issue window."""
    for _ in range(MAX_CAS_ATTEMPTS):
        grant = _open_request(broker, approver, grant_id)
        assert grant.approval is not None
        if same_person(grant.triggered_by, subject=approver.subject, email=approver.email):
            raise Forbidden("you triggered this request, so you cannot approve it")
        if any(_same_voter(vote, approver) for vote in grant.votes):
            raise Conflict("you have already approved this request")
        if ttl_seconds is not None and ttl_seconds > grant.requested_ttl_seconds:
            raise InvalidRequest(
                f"an approval may shorten the TTL ({grant.requested_ttl_seconds}s), never extend it"
            )
        if scopes is not None and (not scopes or not set(scopes) <= set(grant.scopes)):
            raise InvalidRequest(
                f"an approval may narrow the scopes {grant.scopes}, never add to them"
            )
        now = broker.clock()
        grant.votes.append(_vote(approver, grant, "approve", comment, ttl_seconds, scopes, now))
        due = None
        if len(grant.votes) >= grant.approval.approvals_required:
            grant.state = GrantState.approved
            grant.approved_at = now
            task = broker.tasks.get(grant.task_id)
            window_end = now + timedelta(seconds=broker.settings.approval_issue_window_seconds)
            grant.issue_by = min(window_end, task.expires_at) if task else window_end
            grant.approved_ttl_seconds = min(
                [
                    grant.requested_ttl_seconds,
                    *(v.ttl_seconds for v in grant.votes if v.ttl_seconds),
                ]
            )
            grant.approved_scopes = _narrowed_scopes(grant)
            if not grant.approved_scopes:
                raise InvalidRequest("the approvals leave no scope in common; deny instead")
            due = grant.issue_by.timestamp()
        if not broker.grants.replace(grant, due=due):
            continue
        quorum = grant.state == GrantState.approved
        broker.audit.record(
            grant.audit_event(
                "grant.approved" if quorum else "grant.approval_vote",
                outcome="approved" if quorum else "vote",
                context=context,
                details={
                    "approver": approver.subject,
                    "comment": comment,
                    "votes": len(grant.votes),
                },
            )
        )
        if quorum:
            notify(
                broker,
                event="approval.approved",
                text=f"{approver.subject} approved {_summary(grant)}",
                fields=_fields(grant),
            )
        return grant
    raise StateUnavailable(f"grant {grant_id} changed too often to approve")


def deny(
    broker: Broker,
    *,
    approver: HumanIdentity,
    grant_id: str,
    comment: str,
    context: RequestContext,
) -> GrantRecord:
    """Deny the request: one denial by an allowed approver ends it."""
    for _ in range(MAX_CAS_ATTEMPTS):
        grant = _open_request(broker, approver, grant_id)
        now = broker.clock()
        grant.votes.append(_vote(approver, grant, "deny", comment, None, None, now))
        grant.state = GrantState.denied
        if not broker.grants.replace(grant):
            continue
        broker.ledger.remove(grant_id)
        broker.audit.record(
            grant.audit_event(
                "grant.denied",
                outcome="denied",
                reason=comment,
                context=context,
                details={"approver": approver.subject},
            )
        )
        notify(
            broker,
            event="approval.denied",
            text=f"{approver.subject} denied {_summary(grant)}: {comment}",
            fields=_fields(grant),
        )
        return grant
    raise StateUnavailable(f"grant {grant_id} changed too often to deny")


def acknowledge_break_glass(
    broker: Broker,
    *,
    approver: HumanIdentity,
    grant_id: str,
    comment: str,
    context: RequestContext,
) -> GrantRecord:
    """Close the after-the-fact review of a break-glass grant."""
    for _ in range(MAX_CAS_ATTEMPTS):
        grant = _decidable(broker, approver, grant_id)
        if not grant.break_glass:
            raise Conflict(f"grant {grant_id} was not issued through break-glass")
        if grant.break_glass_review is not None:
            return grant
        if same_person(grant.triggered_by, subject=approver.subject, email=approver.email):
            raise Forbidden("you triggered this break-glass grant, so someone else must review it")
        grant.break_glass_review = BreakGlassReview(
            acknowledged_by=approver.subject, acknowledged_at=broker.clock(), comment=comment
        )
        if not broker.grants.replace(grant):
            continue
        broker.audit.record(
            grant.audit_event(
                "grant.break_glass_acknowledged",
                outcome="acknowledged",
                context=context,
                details={"approver": approver.subject, "comment": comment},
            )
        )
        notify(
            broker,
            event="break_glass.acknowledged",
            text=f"{approver.subject} reviewed break-glass {_summary(grant)}",
            fields=_fields(grant),
        )
        return grant
    raise StateUnavailable(f"grant {grant_id} changed too often to acknowledge")


def announce_pending(broker: Broker, grant: GrantRecord) -> None:
    """Tell approvers a request waits for them."""
    notify(
        broker,
        event="approval.pending",
        text=f"{_summary(grant)} waits for approval: {grant.justification}",
        fields=_fields(grant),
    )


def announce_break_glass(broker: Broker, grant: GrantRecord) -> None:
    """Loudly tell approvers a credential was issued without approval."""
    notify(
        broker,
        event="break_glass.used",
        text=f":rotating_light: BREAK-GLASS {_summary(grant)} issued without approval: "
        f"{grant.justification}",
        fields=_fields(grant),
    )


def _decidable(broker: Broker, approver: HumanIdentity, grant_id: str) -> GrantRecord:
    grant = broker.grants.get(grant_id)
    if grant is None or grant.approval is None:
        raise NotFound(f"no approval request {grant_id}")
    if not set(approver.groups) & set(grant.approval.approver_groups):
        raise Forbidden(
            f"deciding this request needs membership in one of {grant.approval.approver_groups}"
        )
    return grant


def _open_request(broker: Broker, approver: HumanIdentity, grant_id: str) -> GrantRecord:
    grant = _decidable(broker, approver, grant_id)
    assert grant.approval is not None
    if grant.state != GrantState.pending_approval:
        raise Conflict(f"request {grant_id} is {grant.state.value}, not pending approval")
    if broker.clock() >= grant.approval.expires_at:
        raise Conflict(f"request {grant_id} waited longer than its approval window")
    if not grant.digest_intact:
        raise Conflict(f"request {grant_id} no longer matches what was asked")
    return grant


def _vote(
    approver: HumanIdentity,
    grant: GrantRecord,
    decision: str,
    comment: str,
    ttl_seconds: int | None,
    scopes: list[str] | None,
    now: datetime,
) -> ApprovalVote:
    return ApprovalVote(
        approver=approver.subject,
        issuer=approver.issuer,
        email=approver.email,
        groups=list(approver.groups),
        decision=decision,
        comment=comment,
        at=now,
        ttl_seconds=ttl_seconds,
        scopes=scopes,
        request_digest=grant.request_digest,
    )


def _same_voter(vote: ApprovalVote, approver: HumanIdentity) -> bool:
    """One person, one vote: the same issuer and subject, or the same email anywhere."""
    if vote.approver == approver.subject and vote.issuer in ("", approver.issuer):
        return True
    return bool(
        vote.email and approver.email and vote.email.casefold() == approver.email.casefold()
    )


def _narrowed_scopes(grant: GrantRecord) -> list[str]:
    allowed = set(grant.scopes)
    for vote in grant.votes:
        if vote.scopes is not None:
            allowed &= set(vote.scopes)
    return [s for s in grant.scopes if s in allowed]


def _summary(grant: GrantRecord) -> str:
    return (
        f"{grant.workload} → {grant.profile} {'/'.join(grant.scopes)} "
        f"for {grant.requested_ttl_seconds}s (grant {grant.grant_id})"
    )


def _fields(grant: GrantRecord) -> dict[str, object]:
    return {
        "grant_id": grant.grant_id,
        "task_id": grant.task_id,
        "workload": grant.workload,
        "profile": grant.profile,
        "scopes": grant.scopes,
        "ttl_seconds": grant.requested_ttl_seconds,
        "justification": grant.justification,
        "rule": grant.decision.get("rule"),
        "privileged": bool(grant.decision.get("privileged", False)),
        "state": grant.state.value,
        "approvers": [v.approver for v in grant.votes],
        "break_glass": grant.break_glass,
    }

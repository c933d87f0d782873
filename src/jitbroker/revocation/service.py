"""Revocation: request it, carry it out until OpenBao confirms, sweep the expiry ledger."""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from jitbroker.audit.events import EventType, RequestContext
from jitbroker.bootstrap import Broker
from jitbroker.errors import BrokerError, DownstreamUnverified, NotFound, StateUnavailable
from jitbroker.grants.schemas import AWAITING_STATES, GrantRecord, GrantState, RevokeReason
from jitbroker.identity.schemas import WorkloadIdentity
from jitbroker.notifications.service import notify
from jitbroker.revocation.failures import note_revocation_failure
from jitbroker.revocation.receipts import ReceiptCheck, RevocationReceipt, TaskReceipts
from jitbroker.revocation.verification import verify_revoked
from jitbroker.tasks.schemas import TaskState

log = logging.getLogger(__name__)

# A sweeper claim that arrives this early is stale (the grant was re-issued a later expiry).
EARLY_CLAIM_TOLERANCE = timedelta(milliseconds=500)
MAX_CAS_ATTEMPTS = 20


def request_revocation(
    broker: Broker,
    *,
    grant_id: str,
    reason: RevokeReason,
    context: RequestContext | None = None,
) -> GrantRecord | None:
    """Mark a grant for revocation and hand it to a worker; safe to call any number of times."""
    for _ in range(MAX_CAS_ATTEMPTS):
        grant = broker.grants.get(grant_id)
        if grant is None or grant.is_terminal:
            return grant
        now = broker.clock()
        if grant.state in AWAITING_STATES:
            # Nothing was issued yet: the request simply ends.
            grant.state = GrantState.cancelled
            grant.revoke_reason = reason
            grant.revoked_at = now
            if broker.grants.replace(grant):
                broker.ledger.remove(grant_id)
                _audit(broker, "grant.revoked", grant, outcome="cancelled", context=context)
                return grant
            continue
        if grant.state == GrantState.issued:
            # Gateways deny from this moment on, before OpenBao is even asked.
            broker.routes.close(grant_id)
            grant.state = GrantState.revoking
            grant.revoke_reason = reason
            grant.revocation_requested_at = now
            if not broker.grants.replace(grant):
                continue
            _audit(
                broker, "grant.revocation_requested", grant, outcome="requested", context=context
            )
        # Safety net first: if the message below is lost, the sweeper re-enqueues it. Scored on
        # the broker's clock, like every other ledger entry (expiries, approval deadlines).
        now_ts = broker.clock().timestamp()
        broker.ledger.schedule(grant_id, now_ts + broker.settings.revocation_redelivery_seconds)
        try:
            broker.revocations.enqueue(grant_id)
        except Exception as exc:  # noqa: BLE001 - the ledger entry is the record; make it due now
            log.warning("could not enqueue revocation of %s (%s); sweeper will", grant_id, exc)
            broker.ledger.schedule(grant_id, now_ts)
        return grant
    raise StateUnavailable(f"grant {grant_id} changed too often to request revocation")


def revoke_grant(broker: Broker, *, grant_id: str) -> GrantRecord | None:
    """Revoke the grant's lease, confirm OpenBao forgot it, record the outcome; idempotent."""
    for _ in range(MAX_CAS_ATTEMPTS):
        grant = broker.grants.get(grant_id)
        if grant is None or grant.is_terminal:
            broker.ledger.remove(grant_id)
            return grant
        now = broker.clock()
        if grant.state in AWAITING_STATES:
            ended = _end_unissued_request(broker, grant)
            if ended is None:
                continue
            return ended
        if grant.state == GrantState.issued:
            ended_task = _task_has_ended(broker, grant)
            early = grant.expires_at is not None and grant.expires_at - now > EARLY_CLAIM_TOLERANCE
            if early and not ended_task and grant.expires_at is not None:
                # Stale ledger entry: put it back at the real expiry and do nothing now, unless
                # a revocation was requested meanwhile (its safety-net entry must not move).
                broker.ledger.schedule(grant_id, grant.expires_at.timestamp())
                current = broker.grants.get(grant_id)
                if current is not None and current.state != GrantState.issued:
                    continue
                return grant
            # No credential outlives its task: a grant of an ended task goes now, whatever its TTL.
            broker.routes.close(grant_id)
            grant.state = GrantState.revoking
            grant.revoke_reason = RevokeReason.task_completed if early else RevokeReason.expired
            grant.revocation_requested_at = now
            if not broker.grants.replace(grant):
                continue
        return _carry_out(broker, grant)
    raise StateUnavailable(f"grant {grant_id} changed too often to revoke")


def _task_has_ended(broker: Broker, grant: GrantRecord) -> bool:
    task = broker.tasks.get(grant.task_id)
    return task is None or task.effective_state(broker.clock()) != TaskState.active


def _end_unissued_request(broker: Broker, grant: GrantRecord) -> GrantRecord | None:
    """A request nobody approved in time expires; an approval nobody used in time lapses.

    Returns None when the grant changed underneath and the caller should reload."""
    now = broker.clock()
    pending = grant.state == GrantState.pending_approval
    deadline = (grant.approval.expires_at if grant.approval else now) if pending else grant.issue_by
    if deadline is not None and deadline - now > EARLY_CLAIM_TOLERANCE:
        broker.ledger.schedule(grant.grant_id, deadline.timestamp())
        return grant
    grant.state = GrantState.approval_expired if pending else GrantState.approval_lapsed
    grant.revoked_at = now
    if not broker.grants.replace(grant):
        return None
    broker.ledger.remove(grant.grant_id)
    _audit(
        broker,
        "grant.approval_expired" if pending else "grant.approval_lapsed",
        grant,
        outcome=grant.state.value,
    )
    if pending:
        notify(
            broker,
            event="approval.expired",
            text=f"nobody decided on grant {grant.grant_id} ({grant.workload} → {grant.profile}) "
            "in time; it expired",
            fields={
                "grant_id": grant.grant_id,
                "workload": grant.workload,
                "profile": grant.profile,
                "task_id": grant.task_id,
            },
        )
    return grant


def _carry_out(broker: Broker, grant: GrantRecord) -> GrantRecord:
    """Close the route, revoke the lease, look everywhere the credential lived, sign a receipt."""
    assert grant.lease_ref is not None
    engine = broker.engines[grant.engine]
    started = time.monotonic()
    try:
        broker.routes.close(grant.grant_id)
        engine.revoke(grant.lease_ref)
        checks = verify_revoked(broker, grant)
        failed = [c.name for c in checks if c.status == "failed"]
        if failed:
            raise DownstreamUnverified(f"still live after revoking: {', '.join(failed)}")
    except BrokerError as exc:
        _note_failure(broker, grant, exc)
        raise
    final = (
        GrantState.expired if grant.revoke_reason == RevokeReason.expired else GrantState.revoked
    )
    # The receipt is stored before the grant turns terminal, so no finished revocation lacks one.
    revoked_at = broker.clock()
    grant.revoked_at = revoked_at
    elapsed = time.monotonic() - started
    # A concurrent revocation of this grant may have stored its receipt first: that one stands,
    # and everything recorded below (time, checks, duration) is what it says.
    receipt = _signed_receipt(broker, grant, checks, elapsed)
    revoked_at = receipt.revoked_at
    elapsed = receipt.duration_ms / 1000
    for _ in range(MAX_CAS_ATTEMPTS):
        grant.state = final
        grant.revoked_at = revoked_at
        if broker.grants.replace(grant):
            break
        reloaded = broker.grants.get(grant.grant_id)
        if reloaded is None or reloaded.is_terminal:
            broker.ledger.remove(grant.grant_id)
            return reloaded or grant
        grant = reloaded
    else:
        raise StateUnavailable(f"could not record the revocation of grant {grant.grant_id}")
    broker.ledger.remove(grant.grant_id)
    broker.revocation_stats.record_revoked(grant.profile, final.value, elapsed)
    _audit(
        broker,
        "grant.expired" if final == GrantState.expired else "grant.revoked",
        grant,
        outcome=final.value,
        details={
            "checks": {c.name: c.status for c in receipt.checks},
            "revocation_seconds": round(elapsed, 4),
            "receipt_signature": receipt.signature,
        },
    )
    return grant


def _signed_receipt(
    broker: Broker, grant: GrantRecord, checks: list[ReceiptCheck], elapsed: float
) -> RevocationReceipt:
    assert grant.revoked_at is not None
    profile = broker.config.profiles.get(grant.profile)
    receipt = RevocationReceipt(
        grant_id=grant.grant_id,
        task_id=grant.task_id,
        workload=grant.workload,
        profile=grant.profile,
        engine=grant.engine,
        principal=grant.principal,
        destinations=profile.route_patterns() if profile else [grant.destination],
        reason=(grant.revoke_reason or RevokeReason.expired).value,
        requested_at=grant.revocation_requested_at,
        revoked_at=grant.revoked_at,
        duration_ms=round(elapsed * 1000),
        checks=checks,
        key_id=broker.signing_key.key_id,
    ).signed_with(broker.signing_key)
    try:
        return broker.receipts.save(receipt)
    except BrokerError as exc:
        # The revocation itself is done and audited; a missing receipt is reported, not retried.
        log.error("receipt for %s not stored: %s", grant.grant_id, exc.detail)
    return receipt


def _note_failure(broker: Broker, grant: GrantRecord, exc: BrokerError) -> None:
    broker.revocation_stats.record_failure(grant.profile)
    grant.revocation_attempts += 1
    grant.last_revocation_error = exc.detail
    try:
        broker.grants.replace(grant)
    except BrokerError:
        pass  # the attempt count is informative; the retry matters more
    _audit(broker, "grant.revocation_failed", grant, outcome="retrying", reason=exc.detail)
    note_revocation_failure(broker, grant=grant, error=exc.detail)


def sweep_expired(broker: Broker, *, now: float | None = None) -> list[str]:
    """Claim due ledger entries and enqueue one revocation each; returns the claimed ids."""
    claimed = broker.ledger.claim_due(
        broker.clock().timestamp() if now is None else now,
        limit=broker.settings.sweep_batch_size,
        redelivery_seconds=broker.settings.revocation_redelivery_seconds,
    )
    for grant_id in claimed:
        broker.revocations.enqueue(grant_id)
    return claimed


def _audit(
    broker: Broker,
    kind: EventType,
    grant: GrantRecord,
    *,
    outcome: str,
    reason: str | None = None,
    context: RequestContext | None = None,
    details: dict[str, object] | None = None,
) -> None:
    broker.audit.record(
        grant.audit_event(
            kind,
            outcome=outcome,
            context=context,
            reason=reason or (grant.revoke_reason.value if grant.revoke_reason else None),
            details=details,
        )
    )


def task_receipts(broker: Broker, *, workload: WorkloadIdentity, task_id: str) -> TaskReceipts:
    """The receipts of the caller's task, and which grants have none yet."""
    task = broker.tasks.get(task_id)
    if task is None or task.workload != workload.workload_id:
        raise NotFound(f"no task {task_id} for this workload")
    receipts: list[RevocationReceipt] = []
    pending: list[str] = []
    for grant_id in broker.tasks.grant_ids(task_id):
        grant = broker.grants.get(grant_id)
        receipt = broker.receipts.get(grant_id)
        if receipt is not None:
            receipts.append(receipt)
        elif grant is not None and grant.lease_ref is not None:
            pending.append(grant_id)
    return TaskReceipts(
        task_id=task_id, key_id=broker.signing_key.key_id, receipts=receipts, pending=pending
    )

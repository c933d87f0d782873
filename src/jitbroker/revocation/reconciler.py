"""The reconciler: revoke OpenBao leases that no grant holds (orphans), and revoke live grants
whose lease OpenBao no longer knows (lost leases). Both are audited and counted."""

from __future__ import annotations

import logging
from datetime import timedelta

from jitbroker.audit.events import AuditEvent
from jitbroker.bootstrap import Broker
from jitbroker.config import ProfileConfig
from jitbroker.engines.base import CredentialEngine
from jitbroker.errors import BrokerError, VaultUnavailable
from jitbroker.grants.repository import LEASE_HOLDING_STATES
from jitbroker.grants.schemas import GrantState, RevokeReason
from jitbroker.revocation.schemas import ReconcileReport
from jitbroker.revocation.service import request_revocation

log = logging.getLogger(__name__)

# A lease gone this close to its grant's expiry simply expired; the expiry ledger handles it.
EXPIRY_TOLERANCE = timedelta(seconds=10)


def reconcile(broker: Broker) -> ReconcileReport:
    """Compare OpenBao's leases with the grants holding them; revoke orphans and lost grants."""
    report = ReconcileReport()
    broker.grants.index_leases_once()
    by_engine: dict[str, list[ProfileConfig]] = {}
    for profile in broker.config.profiles.values():
        by_engine.setdefault(profile.engine, []).append(profile)
    for kind, profiles in by_engine.items():
        try:
            _reconcile_engine(broker, kind, profiles, report)
        except BrokerError as exc:
            log.warning("reconciling %s leases stopped: %s", kind, exc.detail)
            report.errors.append(f"{kind}: {exc.detail}")
    if report.orphans_revoked or report.lost_leases:
        log.warning(
            "reconciler revoked %d orphan lease(s) and found %d grant(s) with a lost lease",
            len(report.orphans_revoked),
            len(report.lost_leases),
        )
    return report


def _reconcile_engine(
    broker: Broker, kind: str, profiles: list[ProfileConfig], report: ReconcileReport
) -> None:
    """One engine: its listed leases against the lease index. OpenBao being unreachable stops
    the engine's round; any other failure skips one lease."""
    engine = broker.engines[kind]
    # Listed before the index is read: a lease recorded in between looks unheld, and the grace
    # period on its issue time keeps it safe.
    listed: dict[str, str] = {}
    for profile in profiles:
        for lease in engine.list_leases(profile) or []:
            listed.setdefault(lease, profile.id)
    report.leases_listed += len(listed)
    held = broker.grants.leases_held(kind)
    for lease, profile_id in listed.items():
        if lease in held:
            continue
        try:
            _revoke_if_orphan(broker, engine, kind, lease, profile_id, report)
        except VaultUnavailable:
            raise
        except BrokerError as exc:
            report.errors.append(f"{lease}: {exc.detail}")
    for lease, grant_id in held.items():
        if lease in listed:
            continue
        try:
            _revoke_if_lost(broker, engine, kind, lease, grant_id, report)
        except VaultUnavailable:
            raise
        except BrokerError as exc:
            report.errors.append(f"{grant_id}: {exc.detail}")


def _revoke_if_orphan(
    broker: Broker,
    engine: CredentialEngine,
    kind: str,
    lease: str,
    profile_id: str,
    report: ReconcileReport,
) -> None:
    """Revoke a lease no grant holds, unless it is young enough to be an issuance in flight."""
    issued_at = engine.lease_issued_at(lease)
    if issued_at is None:
        return  # gone since it was listed
    age = (broker.clock() - issued_at).total_seconds()
    if age < broker.settings.orphan_grace_seconds:
        report.orphans_in_grace.append(lease)
        return
    if broker.grants.holds_lease(kind, lease):
        return  # recorded since the index was read
    engine.revoke(lease)
    report.orphans_revoked.append(lease)
    broker.revocation_stats.record_reconciled(profile_id, "orphan")
    broker.audit.record(
        AuditEvent(
            type="reconcile.orphan_revoked",
            outcome="revoked",
            profile=profile_id,
            reason=f"no grant holds this lease, issued {round(age)}s ago",
            details={"lease_id": lease, "issued_at": issued_at.isoformat()},
        )
    )


def _revoke_if_lost(
    broker: Broker,
    engine: CredentialEngine,
    kind: str,
    lease: str,
    grant_id: str,
    report: ReconcileReport,
) -> None:
    """Revoke an issued grant whose lease OpenBao no longer knows; drop stale index entries."""
    grant = broker.grants.get(grant_id)
    if grant is None or grant.lease_ref != lease or grant.state not in LEASE_HOLDING_STATES:
        broker.grants.drop_lease(kind, lease)
        return
    if grant.state != GrantState.issued:
        return  # a revocation is already under way
    if grant.expires_at is not None and grant.expires_at - broker.clock() <= EXPIRY_TOLERANCE:
        return
    if not engine.is_revoked(lease):
        return
    request_revocation(broker, grant_id=grant_id, reason=RevokeReason.lease_lost)
    report.lost_leases.append(grant_id)
    broker.revocation_stats.record_reconciled(grant.profile, "lost")
    broker.audit.record(
        grant.audit_event(
            "reconcile.lost_lease",
            outcome="revocation_requested",
            reason="OpenBao no longer knows the lease of this live grant",
        )
    )

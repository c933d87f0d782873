"""The failure budget: which revocations keep failing, one incident for each that fails too long,
and backpressure — a backend that cannot take credentials back gets no new ones."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime

from jitbroker.bootstrap import Broker
from jitbroker.config import ProfileConfig
from jitbroker.errors import BrokerError, RevocationBacklog
from jitbroker.grants.schemas import GrantRecord
from jitbroker.identity.schemas import HumanIdentity, require_admin
from jitbroker.notifications.service import notify
from jitbroker.revocation.schemas import BackendBacklog, FailingRevocation, FailingRevocations

log = logging.getLogger(__name__)


def backend_of(profile: ProfileConfig) -> str:
    """Where a profile's credentials are revoked: its engine and mount."""
    return f"{profile.engine}:{profile.mount}"


def note_revocation_failure(broker: Broker, *, grant: GrantRecord, error: str) -> None:
    """List the grant as failing; raise its incident once it has failed for too long. Never
    raises: the retry matters more than the bookkeeping."""
    now = broker.clock()
    backlog = broker.revocation_backlog
    try:
        first = backlog.record_failure(grant.profile, grant.grant_id, now.timestamp())
        # A concurrent attempt may have completed it meanwhile: do not leave it listed.
        current = broker.grants.get(grant.grant_id)
        if current is None or current.is_terminal:
            backlog.forget(grant.profile, grant.grant_id)
            return
        failing_for = now.timestamp() - first
        if failing_for < broker.settings.revocation_incident_seconds:
            return
        if not backlog.open_incident(grant.grant_id, now.timestamp()):
            return
    except BrokerError as exc:
        log.warning("failure of revocation %s not recorded: %s", grant.grant_id, exc.detail)
        return
    _raise_incident(broker, grant, error=error, first_failure=first, failing_for=failing_for)


def _raise_incident(
    broker: Broker, grant: GrantRecord, *, error: str, first_failure: float, failing_for: float
) -> None:
    first_failure_at = datetime.fromtimestamp(first_failure, UTC).isoformat()
    seconds = round(failing_for)
    broker.audit.record(
        grant.audit_event(
            "revocation.incident",
            outcome="failing",
            reason=f"revocation failing for {seconds}s: {error}",
            details={
                "first_failure_at": first_failure_at,
                "attempts": grant.revocation_attempts,
                "last_error": error,
            },
        )
    )
    notify(
        broker,
        event="revocation.incident",
        text=f":rotating_light: revocation of grant {grant.grant_id} ({grant.workload} → "
        f"{grant.profile}) has been failing for {seconds}s: {error}",
        fields={
            "grant_id": grant.grant_id,
            "workload": grant.workload,
            "profile": grant.profile,
            "task_id": grant.task_id,
            "first_failure_at": first_failure_at,
            "attempts": grant.revocation_attempts,
            "last_error": error,
        },
    )


def backlog_read_for(broker: Broker, *, profile_id: str) -> tuple[list[str], float] | None:
    """What to count for `ensure_revocation_capacity` when the caller folds the count into a
    read of its own: the profiles sharing the profile's backend, and the stuck-since cut-off."""
    profile = broker.config.profiles.get(profile_id)
    if profile is None:
        return None
    return _profiles_of(broker.config.profiles.values(), backend_of(profile)), _stuck_since(broker)


def ensure_revocation_capacity(
    broker: Broker, *, profile: ProfileConfig, counted: tuple[int, int] | None = None
) -> None:
    """Refuse issuance (503, Retry-After) while the profile's backend is over its budget of
    failing or stuck revocations: we never issue what we cannot take back. `counted`: the
    backend's (failing, stuck) as the request's first read found them (None: read them now)."""
    standing = _standing(broker, backend_of(profile), counted=counted)
    if standing.refusing_issuance:
        budget = broker.settings.revocation_failure_budget
        raise RevocationBacklog(
            f"revocations on {standing.backend} are behind ({standing.failing} failing, "
            f"{standing.stuck} stuck, budget {budget}); we never issue what we cannot take "
            "back, retry later",
            retry_after=broker.settings.revocation_redelivery_seconds,
            backend=standing.backend,
            failing=standing.failing,
            stuck=standing.stuck,
            budget=budget,
        )


def failing_revocations(broker: Broker, *, admin: HumanIdentity) -> FailingRevocations:
    """Every failing revocation, oldest first, and each backend against the failure budget."""
    require_admin(admin, broker.settings.admin_groups)
    backlog = broker.revocation_backlog
    found: list[tuple[GrantRecord, float]] = []
    for profile in broker.config.profiles.values():
        for grant_id, first in backlog.failing(profile.id):
            grant = broker.grants.get(grant_id)
            if grant is not None and not grant.is_terminal:
                found.append((grant, first))
    incidents = backlog.incidents([grant.grant_id for grant, _ in found])
    profiles = broker.config.profiles
    views = [
        FailingRevocation(
            grant_id=grant.grant_id,
            task_id=grant.task_id,
            workload=grant.workload,
            profile=grant.profile,
            engine=grant.engine,
            backend=backend_of(profiles[grant.profile]),
            revocation_requested_at=grant.revocation_requested_at,
            first_failure_at=datetime.fromtimestamp(first, UTC),
            attempts=grant.revocation_attempts,
            last_error=grant.last_revocation_error,
            incident=grant.grant_id in incidents,
            incident_at=(
                datetime.fromtimestamp(incidents[grant.grant_id], UTC)
                if grant.grant_id in incidents
                else None
            ),
        )
        for grant, first in sorted(found, key=lambda pair: pair[1])
    ]
    backends = sorted({backend_of(profile) for profile in profiles.values()})
    return FailingRevocations(
        budget=broker.settings.revocation_failure_budget,
        backends=[_standing(broker, backend) for backend in backends],
        grants=views,
    )


def failing_counts(broker: Broker) -> dict[str, int]:
    """How many revocations are failing, per profile (for the metrics endpoint)."""
    return broker.revocation_backlog.failing_counts(list(broker.config.profiles))


def _stuck_since(broker: Broker) -> float:
    return broker.clock().timestamp() - broker.settings.revocation_redelivery_seconds


def _standing(
    broker: Broker, backend: str, *, counted: tuple[int, int] | None = None
) -> BackendBacklog:
    profiles = _profiles_of(broker.config.profiles.values(), backend)
    if counted is None:
        counted = broker.revocation_backlog.counts(profiles, revoking_since=_stuck_since(broker))
    failing, stuck = counted
    budget = broker.settings.revocation_failure_budget
    return BackendBacklog(
        backend=backend,
        profiles=profiles,
        failing=failing,
        stuck=stuck,
        refusing_issuance=failing > budget or stuck > budget,
    )


def _profiles_of(profiles: Iterable[ProfileConfig], backend: str) -> list[str]:
    return sorted(profile.id for profile in profiles if backend_of(profile) == backend)

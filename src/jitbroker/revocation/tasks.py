"""Celery tasks: thin shells that reload state by id and call the revocation service."""

from __future__ import annotations

from celery import shared_task

from jitbroker.bootstrap import worker_broker
from jitbroker.errors import DownstreamUnverified, StateUnavailable, VaultUnavailable
from jitbroker.revocation import reconciler, service


@shared_task(
    name="revocation.revoke_grant",
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(VaultUnavailable, StateUnavailable, DownstreamUnverified),
    retry_backoff=1,
    retry_backoff_max=16,
    retry_jitter=True,
    # Celery retries cover about one redelivery interval; after that the expiry ledger hands
    # the grant out again, so there is never more than one or two retry chains per grant.
    max_retries=5,
    ignore_result=True,
)
def revoke_grant_task(grant_id: str) -> None:
    """Revoke one grant; the ledger hands it out again until OpenBao confirms: never give up."""
    service.revoke_grant(worker_broker(), grant_id=grant_id)


@shared_task(
    name="revocation.reconcile",
    acks_late=True,
    reject_on_worker_lost=True,
    # The scheduler reconciles every minute anyway; a stale request is not worth running.
    expires=600,
    ignore_result=True,
)
def reconcile_task() -> None:
    """Revoke orphan leases and grants whose lease is lost; on demand, the scheduler runs it too."""
    reconciler.reconcile(worker_broker())

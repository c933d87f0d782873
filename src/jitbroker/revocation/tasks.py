"""Celery tasks: thin shells that reload state by id and call the revocation service."""

from __future__ import annotations

import functools

from celery import shared_task

from jitbroker.bootstrap import Broker, build_broker
from jitbroker.config import Settings
from jitbroker.errors import StateUnavailable, VaultUnavailable
from jitbroker.revocation import service


@functools.cache
def worker_broker() -> Broker:
    """The worker process's Broker, built on first use (after fork, never at import)."""
    return build_broker(Settings())


@shared_task(
    name="revocation.revoke_grant",
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(VaultUnavailable, StateUnavailable),
    retry_backoff=1,
    retry_backoff_max=30,
    retry_jitter=True,
    max_retries=None,
    ignore_result=True,
)
def revoke_grant_task(grant_id: str) -> None:
    """Revoke one grant. Unavailability retries forever with capped backoff; a refusal is
    left on the expiry ledger, which hands it out again every redelivery interval."""
    service.revoke_grant(worker_broker(), grant_id)

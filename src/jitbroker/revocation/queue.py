"""How revocations reach the workers: a port with a Celery adapter and an in-memory fake."""

from __future__ import annotations

from typing import Protocol

from celery import Celery

REVOKE_TASK = "revocation.revoke_grant"


class RevocationQueue(Protocol):
    def enqueue(self, grant_id: str) -> None:
        """Ask a worker to revoke `grant_id` (ids only; never a secret)."""


class CeleryRevocationQueue:
    def __init__(self, app: Celery) -> None:
        self._app = app

    def enqueue(self, grant_id: str) -> None:
        self._app.send_task(REVOKE_TASK, args=[grant_id])


class InMemoryRevocationQueue:
    """Collects enqueued grant ids; for unit tests of the services."""

    def __init__(self) -> None:
        self.enqueued: list[str] = []

    def enqueue(self, grant_id: str) -> None:
        self.enqueued.append(grant_id)

"""Tasks: open one, read it with its grants, complete it (which revokes every grant in it)."""

from __future__ import annotations

import secrets
import time
from datetime import timedelta

from jitbroker.audit.events import AuditEvent, RequestContext
from jitbroker.bootstrap import Broker
from jitbroker.errors import InvalidRequest, NotFound
from jitbroker.grants.schemas import GrantRecord, GrantView, RevocationView, RevokeReason
from jitbroker.identity.schemas import WorkloadIdentity
from jitbroker.revocation.service import request_revocation
from jitbroker.tasks.schemas import CompletionView, TaskRecord, TaskState, TaskView

POLL_INTERVAL_SECONDS = 0.05


def open_task(
    broker: Broker,
    workload: WorkloadIdentity,
    *,
    purpose: str,
    ttl_seconds: int | None,
    context: RequestContext,
) -> TaskRecord:
    """Open a task for the calling workload with a deadline."""
    ttl = ttl_seconds or broker.settings.default_task_ttl_seconds
    if ttl > broker.settings.max_task_ttl_seconds:
        raise InvalidRequest(
            f"ttl_seconds {ttl} exceeds the task cap of {broker.settings.max_task_ttl_seconds}",
            errors=[{"field": "ttl_seconds", "message": "over the task cap"}],
        )
    now = broker.clock()
    task = TaskRecord(
        task_id="tsk_" + secrets.token_hex(12),
        workload=workload.workload_id,
        purpose=purpose,
        created_at=now,
        expires_at=now + timedelta(seconds=ttl),
    )
    broker.tasks.create(task)
    broker.audit.record(
        AuditEvent(
            type="task.opened",
            outcome="active",
            workload=workload.workload_id,
            task_id=task.task_id,
            context=context,
            details={"purpose": purpose, "ttl_seconds": ttl},
        )
    )
    return task


def get_own_task(broker: Broker, workload: WorkloadIdentity, *, task_id: str) -> TaskRecord:
    """The task if it belongs to the caller's workload; otherwise not found (no existence leak)."""
    task = broker.tasks.get(task_id)
    if task is None or task.workload != workload.workload_id:
        raise NotFound(f"no task {task_id} for this workload")
    return task


def describe_task(broker: Broker, workload: WorkloadIdentity, *, task_id: str) -> TaskView:
    """The task and its grants, never a secret."""
    task = get_own_task(broker, workload, task_id=task_id)
    return TaskView(
        task_id=task.task_id,
        state=task.effective_state(broker.clock()),
        workload=task.workload,
        purpose=task.purpose,
        created_at=task.created_at,
        expires_at=task.expires_at,
        completed_at=task.completed_at,
        grants=[GrantView.of(g) for g in _grants_of(broker, task.task_id)],
    )


def complete_task(
    broker: Broker,
    workload: WorkloadIdentity,
    *,
    task_id: str,
    wait: bool,
    context: RequestContext,
) -> CompletionView:
    """Close the task and revoke every grant in it; with `wait`, until OpenBao confirms each."""
    task = get_own_task(broker, workload, task_id=task_id)
    while task.state == TaskState.active:
        task.state = TaskState.completed
        task.completed_at = broker.clock()
        if broker.tasks.replace(task):
            broker.audit.record(
                AuditEvent(
                    type="task.completed",
                    outcome="completed",
                    workload=task.workload,
                    task_id=task.task_id,
                    context=context,
                )
            )
            break
        task = get_own_task(broker, workload, task_id=task_id)
    grant_ids = broker.tasks.grant_ids(task_id)
    for grant_id in grant_ids:
        request_revocation(broker, grant_id, reason=RevokeReason.task_completed, context=context)
    grants = _grants_of(broker, task_id)
    if wait:
        grants = _wait_until_terminal(broker, task_id, broker.settings.complete_wait_seconds)
    all_done = all(g.is_terminal for g in grants)
    return CompletionView(
        task_id=task_id,
        state="completed" if all_done else "completing",
        revocations=[
            RevocationView(grant_id=g.grant_id, state=g.state, revoked_at=g.revoked_at)
            for g in grants
        ],
    )


def _grants_of(broker: Broker, task_id: str) -> list[GrantRecord]:
    found = (broker.grants.get(gid) for gid in broker.tasks.grant_ids(task_id))
    return [g for g in found if g is not None]


def _wait_until_terminal(broker: Broker, task_id: str, timeout: float) -> list[GrantRecord]:
    deadline = time.monotonic() + timeout
    while True:
        grants = _grants_of(broker, task_id)
        if all(g.is_terminal for g in grants) or time.monotonic() >= deadline:
            return grants
        time.sleep(POLL_INTERVAL_SECONDS)

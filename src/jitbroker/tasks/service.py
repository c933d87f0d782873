"""Tasks: open one, read it with its grants, complete it (which revokes every grant in it)."""

from __future__ import annotations

import logging
import secrets
import time
from datetime import datetime, timedelta

from jitbroker.audit.events import AuditEvent, RequestContext
from jitbroker.bootstrap import Broker
from jitbroker.errors import BrokerError, Conflict, InvalidRequest, NotFound, StateUnavailable
from jitbroker.grants.schemas import GrantRecord, GrantView, RevocationView, RevokeReason
from jitbroker.identity.schemas import WorkloadIdentity
from jitbroker.revocation.service import request_revocation
from jitbroker.tasks.schemas import CompletionView, TaskRecord, TaskState, TaskView
from jitbroker.workloads.service import ensure_workload_active

log = logging.getLogger(__name__)
POLL_INTERVAL_SECONDS = 0.05
MAX_CAS_ATTEMPTS = 20


def open_task(
    broker: Broker,
    *,
    workload: WorkloadIdentity,
    purpose: str,
    ttl_seconds: int | None,
    context: RequestContext,
    heartbeat_seconds: int | None = None,
) -> TaskView:
    """Open a task for the calling workload with a deadline (and, optionally, a heartbeat)."""
    ensure_workload_active(broker, workload_id=workload.workload_id)
    ttl = ttl_seconds or broker.settings.default_task_ttl_seconds
    if heartbeat_seconds is not None and heartbeat_seconds > ttl:
        raise InvalidRequest(
            f"heartbeat_seconds {heartbeat_seconds} exceeds the task's ttl_seconds {ttl}",
            errors=[{"field": "heartbeat_seconds", "message": "longer than the task"}],
        )
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
        heartbeat_seconds=heartbeat_seconds,
    )
    broker.tasks.create(task)
    if heartbeat_seconds is not None:
        broker.heartbeats.schedule(task.task_id, _heartbeat_deadline(task).timestamp())
    broker.audit.record(
        AuditEvent(
            type="task.opened",
            outcome="active",
            workload=workload.workload_id,
            task_id=task.task_id,
            context=context,
            details={
                "purpose": purpose,
                "ttl_seconds": ttl,
                "heartbeat_seconds": heartbeat_seconds,
            },
        )
    )
    return TaskView.of(task, [], now)


def get_own_task(broker: Broker, *, workload: WorkloadIdentity, task_id: str) -> TaskRecord:
    """The task if it belongs to the caller's workload; otherwise not found (no existence leak)."""
    return own_task(broker.tasks.get(task_id), workload=workload, task_id=task_id)


def own_task(task: TaskRecord | None, *, workload: WorkloadIdentity, task_id: str) -> TaskRecord:
    """`get_own_task` for a task the caller has already read."""
    if task is None or task.workload != workload.workload_id:
        raise NotFound(f"no task {task_id} for this workload")
    return task


def describe_task(broker: Broker, *, workload: WorkloadIdentity, task_id: str) -> TaskView:
    """The task and its grants, never a secret."""
    task = get_own_task(broker, workload=workload, task_id=task_id)
    grants = [GrantView.of(g) for g in _grants_of(broker, task.task_id)]
    return TaskView.of(task, grants, broker.clock())


def complete_task(
    broker: Broker,
    *,
    workload: WorkloadIdentity,
    task_id: str,
    wait: bool,
    context: RequestContext,
) -> CompletionView:
    """Close the task and revoke every grant; with `wait`, until OpenBao confirms each.

    Safe to call again: a retry after a partial failure requests what is still missing."""
    task = get_own_task(broker, workload=workload, task_id=task_id)
    return _complete(broker, task, wait=wait, context=context, reason=RevokeReason.task_completed)


def record_heartbeat(broker: Broker, *, workload: WorkloadIdentity, task_id: str) -> TaskView:
    """The workload is alive: push the task's dead-man's-switch deadline forward."""
    for _ in range(MAX_CAS_ATTEMPTS):
        task = get_own_task(broker, workload=workload, task_id=task_id)
        now = broker.clock()
        if task.effective_state(now) != TaskState.active:
            raise Conflict(f"task {task_id} is {task.effective_state(now).value}")
        if task.heartbeat_seconds is None:
            raise Conflict(f"task {task_id} was opened without heartbeat_seconds")
        task.last_heartbeat_at = now
        if broker.tasks.replace(task):
            broker.heartbeats.schedule(task_id, _heartbeat_deadline(task).timestamp())
            return TaskView.of(task, [], now)
    raise StateUnavailable(f"task {task_id} changed too often to record a heartbeat")


def complete_silent_tasks(broker: Broker) -> list[str]:
    """Complete every task whose heartbeat is overdue (called by the scheduler)."""
    completed: list[str] = []
    due = broker.heartbeats.claim_due(
        broker.clock().timestamp(),
        limit=broker.settings.sweep_batch_size,
        redelivery_seconds=broker.settings.revocation_redelivery_seconds,
    )
    for task_id in due:
        try:
            task = broker.tasks.get(task_id)
            if task is None or task.heartbeat_seconds is None:
                broker.heartbeats.remove(task_id)
                continue
            deadline = _heartbeat_deadline(task)
            if task.state == TaskState.active and deadline > broker.clock():
                broker.heartbeats.schedule(task_id, deadline.timestamp())  # a beat came in
                continue
            # Also for a task already completed whose revocations were not all requested: the
            # entry stays on the heartbeat ledger until they are.
            _complete(
                broker,
                task,
                wait=False,
                context=RequestContext(),
                reason=RevokeReason.heartbeat_missed,
            )
            completed.append(task_id)
        except BrokerError as exc:
            log.warning("task %s: heartbeat deadline not enforced yet: %s", task_id, exc.detail)
    return completed


def _heartbeat_deadline(task: TaskRecord) -> datetime:
    assert task.heartbeat_seconds is not None
    return (task.last_heartbeat_at or task.created_at) + timedelta(seconds=task.heartbeat_seconds)


def _complete(
    broker: Broker,
    task: TaskRecord,
    *,
    wait: bool,
    context: RequestContext,
    reason: RevokeReason,
) -> CompletionView:
    task_id = task.task_id
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
                    reason=reason.value,
                    context=context,
                )
            )
            break
        reloaded = broker.tasks.get(task_id)
        if reloaded is None:
            raise NotFound(f"no task {task_id}")
        task = reloaded
    failed: list[str] = []
    for grant_id in broker.tasks.grant_ids(task_id):
        try:
            request_revocation(broker, grant_id=grant_id, reason=reason, context=context)
        except BrokerError as exc:
            log.warning("revocation of %s not requested: %s", grant_id, exc.detail)
            failed.append(grant_id)
    if failed:
        raise StateUnavailable(
            f"task {task_id} is completed but revocation of {len(failed)} grant(s) could not be "
            "requested; call complete again",
            grants=failed,
        )
    broker.heartbeats.remove(task_id)
    grants = _grants_of(broker, task_id)
    if wait:
        grants = _wait_until_terminal(broker, task_id, broker.settings.complete_wait_seconds)
    found = (broker.receipts.get(g.grant_id) for g in grants if g.lease_ref is not None)
    return CompletionView(
        task_id=task_id,
        state="completed" if all(g.is_terminal for g in grants) else "completing",
        revocations=[
            RevocationView(grant_id=g.grant_id, state=g.state, revoked_at=g.revoked_at)
            for g in grants
        ],
        receipts=[r for r in found if r is not None],
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

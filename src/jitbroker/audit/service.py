"""Reading the audit trail: admin paging with filters, and a task's evidence bundle."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from jitbroker.audit.repository import AuditStream
from jitbroker.audit.schemas import AuditPage, EvidenceBundle, GrantAccess
from jitbroker.bootstrap import Broker
from jitbroker.errors import NotFound
from jitbroker.grants.schemas import GrantView
from jitbroker.identity.schemas import HumanIdentity, Principal, require_admin
from jitbroker.tasks.schemas import TaskView

# One request reads at most this many records while looking for matches; the cursor resumes.
MAX_SCANNED_PER_PAGE = 10_000
CLOCK_SKEW_MS = 300_000


def _stream(broker: Broker) -> AuditStream:
    return broker.audit.stream


def list_records(
    broker: Broker,
    *,
    admin: HumanIdentity,
    workload: str | None,
    task_id: str | None,
    since: datetime | None,
    cursor: str | None,
    limit: int,
) -> AuditPage:
    """A page of chained records matching the filters, oldest first (admins only)."""
    require_admin(admin, broker.settings.admin_groups)
    stream = _stream(broker)
    since = _aware(since) if since else None
    if task_id is not None:
        # The per-task index answers this directly; one page holds a task's whole story.
        matching = [
            (e.position, e.document)
            for e in stream.task_records(task_id)
            if e.document
            and _matches(e.document, workload=workload, since=since)
            and (cursor is None or _stream_id_after(e.position, cursor))
        ]
        more = len(matching) > limit
        return AuditPage(
            records=[document for _, document in matching[:limit]],
            next_cursor=matching[limit - 1][0] if more else None,
        )
    if since is not None and cursor is None:
        # Stream ids are Redis append times in ms; start early enough for clock skew between
        # the writer and Redis, and let the record's own time decide.
        start_ms = int(since.timestamp() * 1000) - CLOCK_SKEW_MS
        cursor = f"{max(start_ms, 0)}-0"
    records: list[dict[str, Any]] = []
    scanned = 0
    while len(records) < limit and scanned < MAX_SCANNED_PER_PAGE:
        page = stream.records_after(cursor, max(limit, 200))
        if not page:
            return AuditPage(records=records, next_cursor=None)
        for entry in page:
            scanned += 1
            cursor = entry.position
            if entry.document and _matches(entry.document, workload=workload, since=since):
                records.append(entry.document)
                if len(records) == limit:
                    break
    return AuditPage(records=records, next_cursor=cursor)


def task_evidence(broker: Broker, *, caller: Principal, task_id: str) -> EvidenceBundle:
    """Who had the task's access, who allowed it, when it ended (own workload or an admin)."""
    task = broker.tasks.get(task_id)
    if isinstance(caller, HumanIdentity):
        require_admin(caller, broker.settings.admin_groups)
    elif task is not None and task.workload != caller.workload_id:
        task = None
    if task is None:
        raise NotFound(f"no task {task_id} for this caller")
    found = (broker.grants.get(gid) for gid in broker.tasks.grant_ids(task_id))
    grants = [g for g in found if g is not None]
    receipts = (broker.receipts.get(g.grant_id) for g in grants)
    now = broker.clock()
    return EvidenceBundle(
        task=TaskView.of(task, [GrantView.of(g) for g in grants], now),
        access=[GrantAccess.of(g) for g in grants],
        events=[e.document for e in _stream(broker).task_records(task_id) if e.document],
        receipts=[r for r in receipts if r is not None],
        key_id=broker.signing_key.key_id,
        generated_at=now,
    )


def _matches(record: Mapping[str, Any], *, workload: str | None, since: datetime | None) -> bool:
    if workload is not None and record.get("workload") != workload:
        return False
    if since is not None:
        try:
            return _aware(datetime.fromisoformat(str(record.get("time")))) >= since
        except ValueError:
            return True  # an unreadable time is shown rather than hidden
    return True


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _stream_id_after(stream_id: str, cursor: str) -> bool:
    def parts(value: str) -> tuple[int, int]:
        ms, _, seq = value.partition("-")
        return int(ms), int(seq or 0)

    try:
        return parts(stream_id) > parts(cursor)
    except ValueError:
        return True

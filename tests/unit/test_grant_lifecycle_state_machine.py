"""A Hypothesis state machine over the grant lifecycle: the real services on fakeredis and a fake
OpenBao, driven through tasks, grants, approvals, expiry, the kill switch and crashes, with the
product brief's invariants checked after every step."""

from __future__ import annotations

import logging
import os
import secrets as token_source
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)
from pydantic import SecretStr
from tests.unit.fakes import FakeEngine, memory_broker, write_demo_config

from jitbroker.approvals import service as approvals
from jitbroker.audit.chain import ChainEntry, verify_chain
from jitbroker.audit.events import AuditEvent, RequestContext
from jitbroker.bootstrap import Broker, build_broker
from jitbroker.config import BrokerConfig, ProfileConfig, ScopeBinding, Settings, load_config
from jitbroker.engines.base import IssuedCredential
from jitbroker.errors import (
    BrokerError,
    Conflict,
    DownstreamUnverified,
    Forbidden,
    ServiceUnavailable,
    StateUnavailable,
    VaultUnavailable,
    WorkloadSuspended,
)
from jitbroker.grants import service as grants
from jitbroker.grants.schemas import GrantRecord, GrantRequest, GrantState
from jitbroker.identity.schemas import HumanIdentity, WorkloadIdentity
from jitbroker.notifications.queue import InMemoryNotificationQueue
from jitbroker.revocation.queue import InMemoryRevocationQueue
from jitbroker.revocation.receipts import verify_receipt
from jitbroker.revocation.reconciler import reconcile
from jitbroker.revocation.service import revoke_grant, sweep_expired
from jitbroker.tasks import service as tasks
from jitbroker.tasks.schemas import TaskRecord, TaskState
from jitbroker.workloads import service as workloads

# CI budget: 80 examples of 30 steps (about 20-30 s); hunt longer with, for example,
# JITBROKER_LIFECYCLE_EXAMPLES=1000 JITBROKER_LIFECYCLE_STEPS=60.
MAX_EXAMPLES = int(os.environ.get("JITBROKER_LIFECYCLE_EXAMPLES", "80"))
STEPS = int(os.environ.get("JITBROKER_LIFECYCLE_STEPS", "30"))

QUORUM = 2
APPROVAL_TTL_SECONDS = 300
# Reads are allowed; writes need two DBAs; anything else (admin, demo-token, …) matches no rule.
POLICY = f"""
rules:
  - name: db-read
    when: request.profile == "demo-db" && request.scopes.all(s, s == "read")
    effect: allow
    max_ttl: 30m
  - name: db-write-two-dbas
    when: request.profile == "demo-db" && request.scopes.all(s, s == "write")
    effect: require_approval
    reason: writes need two DBAs
    approvals: {QUORUM}
    approver_groups: [dba]
    approval_ttl: {APPROVAL_TTL_SECONDS}s
    max_ttl: 1h
"""
RULES = {"db-read": "allow", "db-write-two-dbas": "require_approval"}

# Every run is triggered by a person (the CI `actor` claim): carol triggers demo-pipeline's.
WORKLOADS = {
    "demo-pipeline": WorkloadIdentity(
        workload_id="demo-pipeline",
        issuer="test-workloads",
        subject="demo-pipeline",
        claims={"actor": "carol"},
    ),
    "other-pipeline": WorkloadIdentity(
        workload_id="other-pipeline",
        issuer="test-workloads",
        subject="other-pipeline",
        claims={"actor": "erin"},
    ),
}
REQUESTER = {"demo-pipeline": "carol", "other-pipeline": "erin"}


@dataclass(frozen=True)
class Approver:
    """A human identity and the real person behind it (two identities may be one person)."""

    person: str
    identity: HumanIdentity

    @property
    def in_dba(self) -> bool:
        return "dba" in self.identity.groups


def _human(
    subject: str, email: str, groups: tuple[str, ...], issuer: str = "test-humans"
) -> HumanIdentity:
    return HumanIdentity(subject=subject, issuer=issuer, email=email, groups=groups)


APPROVERS = [
    Approver("alice", _human("alice", "alice@example.com", ("dba",))),
    # Alice again, signed in through another issuer: one person, one vote.
    Approver("alice", _human("a.smith", "Alice@Example.com", ("dba",), issuer="corp-sso")),
    Approver("bob", _human("bob", "bob@example.com", ("dba",))),
    Approver("erin", _human("erin", "erin@example.com", ("dba",))),
    # Carol triggers demo-pipeline's runs: under either identity she may not approve them.
    Approver("carol", _human("carol", "carol@example.com", ("dba",))),
    Approver("carol", _human("c.jones", "carol@example.com", ("dba",), issuer="corp-sso")),
    Approver("dave", _human("dave", "dave@example.com", ("developers",))),
]
PEOPLE = {(a.identity.issuer, a.identity.subject): a.person for a in APPROVERS}
ADMIN = HumanIdentity(subject="root-admin", issuer="test-humans", groups=("platform-admins",))

TERMINAL_EVENT = {
    GrantState.revoked: ("grant.revoked", "revoked"),
    GrantState.expired: ("grant.expired", "expired"),
    GrantState.cancelled: ("grant.revoked", "cancelled"),
    GrantState.denied: ("grant.denied", "denied"),
    GrantState.approval_expired: ("grant.approval_expired", "approval_expired"),
    GrantState.approval_lapsed: ("grant.approval_lapsed", "approval_lapsed"),
}
RETRYABLE = (VaultUnavailable, StateUnavailable, DownstreamUnverified)


class TestClock:
    """The broker's clock, moved only by the state machine."""

    __test__ = False

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class ClockedEngine(FakeEngine):
    """The fake OpenBao on the test clock: per-lease TTLs, unguessable secrets, down for issuing
    too, (once, on demand) a response lost after the lease was created, and (once, on demand)
    something else happening while OpenBao is issuing."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        super().__init__()
        self.clock = clock
        self.ttl: dict[str, int] = {}
        self.secrets: list[str] = []
        self.lose_next_response = False
        self.while_issuing: Callable[[], object] | None = None

    def issue(
        self,
        profile: ProfileConfig,
        binding: ScopeBinding,
        *,
        ttl_seconds: int,
        grant_id: str,
        labels: dict[str, str],
        public_key: str | None = None,
    ) -> IssuedCredential:
        if self.down:
            raise VaultUnavailable("OpenBao is unavailable during issue")
        self.issued += 1
        lease = f"{profile.mount}/creds/{binding.role}/{self.issued}"
        secret = "sk-" + token_source.token_hex(16)
        self.live.add(lease)
        self.issued_at[lease] = self.clock()
        self.ttl[lease] = ttl_seconds
        self.secrets.append(secret)
        if self.lose_next_response:
            self.lose_next_response = False
            raise VaultUnavailable("the connection dropped after OpenBao created the lease")
        meanwhile, self.while_issuing = self.while_issuing, None
        if meanwhile is not None:
            meanwhile()
        return IssuedCredential(
            lease_ref=lease,
            lease_ttl_seconds=ttl_seconds,
            principal=f"v-{self.issued}",
            secret={"password": SecretStr(secret)},
            public={"username": f"v-{self.issued}"},
        )

    def lease_number(self) -> int:
        return self.issued


@contextmanager
def recording_fails(broker: Broker) -> Iterator[None]:
    """Redis refuses the one write that records an issued lease (a crash between OpenBao
    answering and the broker writing it down)."""
    repository = broker.grants
    real_create, real_replace = repository.create, repository.replace
    failed: list[bool] = []

    def refuse(grant: GrantRecord) -> None:
        if grant.state == GrantState.issued and not failed:
            failed.append(True)
            raise StateUnavailable("cannot record grant: ConnectionError")

    def create(grant: GrantRecord, **kwargs: Any) -> None:
        refuse(grant)
        real_create(grant, **kwargs)

    def replace(grant: GrantRecord, **kwargs: Any) -> bool:
        refuse(grant)
        return real_replace(grant, **kwargs)

    repository.create = create  # type: ignore[method-assign]
    repository.replace = replace  # type: ignore[method-assign]
    try:
        yield
    finally:
        del repository.create
        del repository.replace


@contextmanager
def final_write_fails(broker: Broker) -> Iterator[None]:
    """The worker dies after OpenBao revoked the lease, before the terminal state is written."""
    repository = broker.grants
    real_replace = repository.replace

    def replace(grant: GrantRecord, **kwargs: Any) -> bool:
        if grant.state in (GrantState.revoked, GrantState.expired):
            raise StateUnavailable("worker lost")
        return real_replace(grant, **kwargs)

    repository.replace = replace  # type: ignore[method-assign]
    try:
        yield
    finally:
        del repository.replace


def refusal(call: Callable[[], object]) -> BrokerError | None:
    """The error `call` was refused with, or None when it went through."""
    try:
        call()
    except BrokerError as exc:
        return exc
    return None


def redis_dump(client: fakeredis.FakeRedis, *, skip: bytes) -> bytes:
    """Every key and value in Redis but `skip`, whatever its type, as one blob to search."""
    keys = [key for key in client.scan_iter(count=1000) if key != skip]
    types = client.pipeline(transaction=False)
    for key in keys:
        types.type(key)
    reads = client.pipeline(transaction=False)
    for key, kind in zip(keys, types.execute(), strict=True):
        match kind.decode():
            case "string":
                reads.get(key)
            case "hash":
                reads.hgetall(key)
            case "set":
                reads.smembers(key)
            case "zset":
                reads.zrange(key, 0, -1)
            case "list":
                reads.lrange(key, 0, -1)
            case "stream":
                reads.xrange(key)
            case other:
                raise AssertionError(f"unexpected Redis type {other} at {key!r}")
    return repr((keys, reads.execute())).encode()


def _distinct_people(identities: list[tuple[str, str, str | None]]) -> set[str]:
    """The people behind (issuer, subject, email) votes, by the test's own directory."""
    return {
        PEOPLE.get((issuer, subject), f"{issuer}/{subject}") for issuer, subject, _ in identities
    }


class GrantLifecycle(RuleBasedStateMachine):
    """Tasks, grants, approvals, expiry, suspension and crashes against one in-memory broker."""

    tasks = Bundle("tasks")
    awaiting = Bundle("awaiting")
    approved = Bundle("approved")
    issued = Bundle("issued")

    # Set by the test function before the machine runs.
    config_dir: Path
    config: BrokerConfig
    workdir: Path
    log_records: Callable[[], list[logging.LogRecord]]

    def __init__(self) -> None:
        super().__init__()
        self.clock = TestClock()
        self.queue = InMemoryRevocationQueue()
        settings_ = Settings(
            config_dir=self.config_dir,
            vault_addr="http://127.0.0.1:9",
            vault_token=SecretStr("unused"),
            audit_stdout=False,
            audit_file=self.workdir / f"audit-{token_source.token_hex(6)}.jsonl",
            signing_key_file=self.config_dir / "keys" / "broker-signing-key.pem",
        )
        self.redis = fakeredis.FakeRedis()
        self.broker = build_broker(
            settings_,
            revocations=self.queue,
            notifications=InMemoryNotificationQueue(),
            redis_client=self.redis,
            config=self.config,
        )
        self.broker.clock = self.clock
        self.engine = ClockedEngine(self.clock)
        self.broker.engines = dict.fromkeys(self.broker.engines, self.engine)
        self.redelivery = self.broker.settings.revocation_redelivery_seconds
        self.task_workload: dict[str, str] = {}
        # A revocation message lost or failed at t comes back from the ledger by t + redelivery.
        self.recovered_by = 0.0
        # What the last clean scheduler run (OpenBao up, nothing lost) had to have finished.
        self.settled_at: datetime | None = None
        self.due_grants: set[str] = set()
        self.due_tasks: set[str] = set()
        self.due_orphans: set[str] = set()
        # Leases OpenBao created whose response never reached the broker.
        self.orphans: set[str] = set()
        self.final: dict[str, GrantState] = {}
        self.completed_tasks: set[str] = set()
        self.log_offset = len(self.log_records())
        # The audit stream is append-only: read each record once, keep them all for the walk.
        self.audit_cursor: str | None = None
        self.audit_records: list[ChainEntry] = []
        self.audit_events: list[AuditEvent] = []
        self.audit_events_searched = 0
        self.audit_file_searched = 0
        self._snapshot: list[GrantRecord] | None = None
        self._invariant_rounds = 0

    def check_invariants(self, *args: Any, **kwargs: Any) -> None:
        # A step has run: the invariants below read the grants afresh, once between them.
        self._snapshot = None
        self._invariant_rounds += 1
        super().check_invariants(*args, **kwargs)

    def teardown(self) -> None:
        assert self._invariant_rounds, "Hypothesis skipped check_invariants: stale snapshots"

    # -- helpers -----------------------------------------------------------------------------

    def _grants_of(self, task_id: str) -> list[GrantRecord]:
        found = (self.broker.grants.get(g) for g in self.broker.tasks.grant_ids(task_id))
        return [g for g in found if g is not None]

    def _all_grants(self) -> list[GrantRecord]:
        return [g for task_id in self.task_workload for g in self._grants_of(task_id)]

    def _grants_now(self) -> list[GrantRecord]:
        """Every grant as the step left it (read once per step, for the invariants)."""
        if self._snapshot is None:
            self._snapshot = self._all_grants()
        return self._snapshot

    def _read_new_audit_records(self) -> None:
        stream = self.broker.audit.stream
        while page := stream.records_after(self.audit_cursor, 500):
            self.audit_records += page
            self.audit_cursor = page[-1].position
            self.audit_events += [AuditEvent.model_validate(e.document) for e in page if e.document]

    def _grant(self, grant_id: str) -> GrantRecord:
        grant = self.broker.grants.get(grant_id)
        assert grant is not None, f"grant {grant_id} vanished"
        return grant

    def _lost_at_now(self) -> None:
        self.recovered_by = max(self.recovered_by, self.clock().timestamp() + self.redelivery)

    def _deliver(self, grant_id: str) -> GrantRecord | None:
        """One revocation message, as the Celery task runs it; a retryable failure is left to
        the ledger's redelivery (Celery's own retries are only a shortcut)."""
        try:
            return revoke_grant(self.broker, grant_id=grant_id)
        except RETRYABLE:
            self._lost_at_now()
            return None

    def _drain(self) -> bool:
        clean = True
        for _ in range(1000):
            if not self.queue.enqueued:
                return clean
            clean = self._deliver(self.queue.enqueued.pop(0)) is not None and clean
        raise AssertionError("the revocation queue never drained")

    def _missed_beat(self, task: TaskRecord) -> bool:
        if task.heartbeat_seconds is None:
            return False
        beat = task.last_heartbeat_at or task.created_at
        return beat + timedelta(seconds=task.heartbeat_seconds) <= self.clock()

    def _has_heartbeat_task(self) -> bool:
        found = (self.broker.tasks.get(task_id) for task_id in self.task_workload)
        return any(
            t is not None and t.heartbeat_seconds is not None and t.state == TaskState.active
            for t in found
        )

    def _any_suspended(self) -> bool:
        return any(
            workloads.workload_suspension(self.broker, workload_id=w) is not None for w in WORKLOADS
        )

    def _ledger_has_due(self) -> bool:
        return bool(self.redis.zcount(self.broker.ledger.key, "-inf", self.clock().timestamp()))

    def _new_leases(self, before: int) -> list[str]:
        return [lease for lease in self.engine.issued_at if int(lease.rsplit("/", 1)[1]) > before]

    def _request(self, task_id: str, request: GrantRequest) -> grants.GrantOutcome:
        return grants.request_grant(
            self.broker,
            workload=WORKLOADS[self.task_workload[task_id]],
            task_id=task_id,
            request=request,
            idempotency_key=None,
            context=RequestContext(source_ip="10.0.0.7", user_agent="state-machine"),
        )

    def _check_returned(self, outcome: grants.GrantOutcome) -> None:
        """Invariant 4 at the moment of return: the lease is on record before the secret leaves."""
        credential = outcome.credential
        assert credential is not None
        stored = self._grant(outcome.grant.grant_id)
        assert stored.state == GrantState.issued
        assert stored.lease_ref == credential.lease_ref
        # Invariant 1: issued only into a task that is alive: open, before its deadline and,
        # with a heartbeat, before the beat it missed (swept yet or not).
        task = self.broker.tasks.get(stored.task_id)
        assert task is not None
        assert task.state == TaskState.active
        assert self.clock() < task.expires_at
        assert not self._missed_beat(task), f"issued into {task.task_id}, which missed a beat"
        assert self.broker.grants.holds_lease(stored.engine, credential.lease_ref)
        assert self.broker.ledger.due_at(stored.grant_id) is not None

    def _scheduler_runs(self) -> None:
        """One scheduler round at the current time, then the workers drain the queue."""
        at = self.clock()
        vault_up = not self.engine.down
        sweep_expired(self.broker, now=at.timestamp())
        tasks.complete_silent_tasks(self.broker)
        workloads.revoke_grants_of_inactive_workloads(self.broker)
        reconcile(self.broker)
        clean = self._drain()
        if vault_up and not self.engine.down and clean and at.timestamp() >= self.recovered_by:
            self._settle(at)

    def _settle(self, at: datetime) -> None:
        """Record what this clean round had to finish: everything due by `at`."""
        due_grants: set[str] = set()
        due_tasks: set[str] = set()
        for task_id, workload_id in self.task_workload.items():
            task = self.broker.tasks.get(task_id)
            assert task is not None
            beat_due = task.heartbeat_seconds is not None and (
                (task.last_heartbeat_at or task.created_at)
                + timedelta(seconds=task.heartbeat_seconds)
                <= at
            )
            if beat_due:
                due_tasks.add(task_id)
            ended = beat_due or task.effective_state(at) != TaskState.active
            suspended = workloads.workload_suspension(self.broker, workload_id=workload_id)
            for grant in self._grants_of(task_id):
                if (
                    grant.is_terminal
                    or ended
                    or suspended is not None
                    or grant.state == GrantState.revoking
                    or (grant.expires_at is not None and grant.expires_at <= at)
                    or (
                        grant.state == GrantState.pending_approval
                        and grant.approval is not None
                        and grant.approval.expires_at <= at
                    )
                    or (
                        grant.state == GrantState.approved
                        and grant.issue_by is not None
                        and grant.issue_by <= at
                    )
                ):
                    due_grants.add(grant.grant_id)
        grace = timedelta(seconds=self.broker.settings.orphan_grace_seconds)
        self.due_orphans = {
            lease for lease in self.orphans if self.engine.issued_at[lease] <= at - grace
        }
        self.settled_at = at
        self.due_grants = due_grants
        self.due_tasks = due_tasks

    # -- rules: tasks and grants ----------------------------------------------------------------

    @initialize(target=tasks)
    def first_task(self) -> str:
        return str(self.open_task("demo-pipeline", 3600, None))

    @initialize(target=awaiting)
    def first_request_awaiting_approval(self) -> str:
        task_id = str(self.open_task("demo-pipeline", 3600, None))
        return str(self.request_approval_required_grant(task_id, 600))

    @rule(
        target=tasks,
        workload=st.sampled_from(sorted(WORKLOADS)),
        ttl=st.sampled_from([30, 600, 3600, 3600]),
        heartbeat=st.sampled_from([None, None, 10, 60]),
    )
    def open_task(self, workload: str, ttl: int, heartbeat: int | None) -> Any:
        try:
            view = tasks.open_task(
                self.broker,
                workload=WORKLOADS[workload],
                purpose="state machine",
                ttl_seconds=ttl,
                context=RequestContext(),
                heartbeat_seconds=heartbeat if heartbeat is None or heartbeat <= ttl else None,
            )
        except Forbidden:
            assert workloads.workload_suspension(self.broker, workload_id=workload) is not None
            return multiple()
        self.task_workload[view.task_id] = workload
        return view.task_id

    @rule(target=issued, task_id=tasks, ttl=st.sampled_from([5, 60, 300, 1800]))
    def request_auto_allowed_grant(self, task_id: str, ttl: int) -> Any:
        before = self.engine.lease_number()
        try:
            outcome = self._request(
                task_id,
                GrantRequest(
                    profile="demo-db", scopes=["read"], ttl_seconds=ttl, justification="r"
                ),
            )
        except (Conflict, Forbidden, ServiceUnavailable):
            assert not set(self._new_leases(before)) & self.engine.live
            return multiple()
        self._check_returned(outcome)
        return outcome.grant.grant_id

    @rule(target=awaiting, task_id=tasks, ttl=st.sampled_from([60, 600, 3600]))
    def request_approval_required_grant(self, task_id: str, ttl: int) -> Any:
        try:
            outcome = self._request(
                task_id,
                GrantRequest(
                    profile="demo-db", scopes=["write"], ttl_seconds=ttl, justification="w"
                ),
            )
        except (Conflict, Forbidden):
            return multiple()
        assert outcome.credential is None
        stored = self._grant(outcome.grant.grant_id)
        assert stored.state == GrantState.pending_approval
        assert stored.lease_ref is None
        return stored.grant_id

    @rule(
        task_id=tasks,
        ask=st.sampled_from(
            [
                ("demo-token", ["read"]),  # no rule matches: default deny
                ("demo-db", ["admin"]),  # no rule matches: default deny
                ("no-such-profile", ["read"]),
                ("demo-db", ["read", "no-such-scope"]),
            ]
        ),
    )
    def request_refused_by_default(self, task_id: str, ask: tuple[str, list[str]]) -> None:
        """Invariant 3: default deny, a clear 4xx with the reason, nothing issued or recorded."""
        before = self.engine.lease_number()
        recorded = set(self.broker.tasks.grant_ids(task_id))
        profile, scopes = ask
        with pytest.raises(BrokerError) as refused:
            self._request(
                task_id,
                GrantRequest(profile=profile, scopes=scopes, ttl_seconds=60, justification="x"),
            )
        assert 400 <= refused.value.status < 500, refused.value
        assert refused.value.detail
        assert self._new_leases(before) == []
        assert set(self.broker.tasks.grant_ids(task_id)) == recorded

    @rule(
        target=approved,
        grant_id=awaiting,
        voters=st.lists(st.sampled_from(APPROVERS), min_size=1, max_size=4),
    )
    def approve(self, grant_id: str, voters: list[Approver]) -> Any:
        """Invariant 6: a quorum of distinct people from the approver groups, never the
        requester; a second vote by the same person (under any of their identities) is refused
        and not counted."""
        for approver in voters:
            before = self._grant(grant_id)
            voted = _distinct_people([(v.issuer, v.approver, v.email) for v in before.votes])
            try:
                after = approvals.approve(
                    self.broker,
                    approver=approver.identity,
                    grant_id=grant_id,
                    comment="ok",
                    ttl_seconds=None,
                    scopes=None,
                    context=RequestContext(),
                )
            except (Forbidden, Conflict):
                assert self._grant(grant_id).votes == before.votes
                continue
            assert approver.person != REQUESTER[before.workload], (
                f"{approver.identity} approved a request they triggered"
            )
            assert approver.in_dba, f"{approver.identity} is not an approver of {grant_id}"
            assert approver.person not in voted, f"{approver.person} voted twice on {grant_id}"
            assert len(after.votes) == len(before.votes) + 1
        if self._grant(grant_id).state == GrantState.approved:
            return grant_id
        return multiple()

    @rule(grant_id=awaiting, approver=st.sampled_from(APPROVERS))
    def deny(self, grant_id: str, approver: Approver) -> None:
        try:
            approvals.deny(
                self.broker,
                approver=approver.identity,
                grant_id=grant_id,
                comment="no",
                context=RequestContext(),
            )
        except (Forbidden, Conflict):
            return
        assert approver.in_dba
        denied = self._grant(grant_id)
        assert denied.state == GrantState.denied
        assert self.broker.ledger.due_at(grant_id) is None

    @rule(target=issued, grant_id=approved)
    def issue_approved_grant(self, grant_id: str) -> Any:
        before = self.engine.lease_number()
        grant = self._grant(grant_id)
        try:
            outcome = grants.issue_approved_grant(
                self.broker,
                workload=WORKLOADS[grant.workload],
                grant_id=grant_id,
                context=RequestContext(),
            )
        except (Conflict, Forbidden, ServiceUnavailable):
            assert not set(self._new_leases(before)) & self.engine.live
            return multiple()
        assert grant.state == GrantState.approved, f"{grant.state} grant issued"
        self._check_returned(outcome)
        return grant_id

    @rule(grant_id=issued)
    def workload_revokes_its_grant(self, grant_id: str) -> None:
        grant = self._grant(grant_id)
        after = grants.revoke_own_grant(
            self.broker,
            workload=WORKLOADS[grant.workload],
            grant_id=grant_id,
            context=RequestContext(),
        )
        assert after.is_terminal or after.state == GrantState.revoking
        assert self.broker.routes.get(grant_id) is None

    @rule(task_id=tasks)
    def complete_task(self, task_id: str) -> None:
        view = tasks.complete_task(
            self.broker,
            workload=WORKLOADS[self.task_workload[task_id]],
            task_id=task_id,
            wait=False,
            context=RequestContext(),
        )
        assert view.task_id == task_id
        self.completed_tasks.add(task_id)
        for grant in self._grants_of(task_id):
            # Revocation is at least requested for everything, and no gateway admits it any more.
            assert grant.is_terminal or grant.state == GrantState.revoking, grant.state
            assert self.broker.routes.get(grant.grant_id) is None

    @rule(task_id=tasks)
    def heartbeat(self, task_id: str) -> None:
        """A beat keeps a live task alive; one that comes after the deadline it missed must not
        revive the task (the scheduler may simply not have swept it yet)."""
        task = self.broker.tasks.get(task_id)
        assert task is not None
        missed = self._missed_beat(task)
        error = refusal(
            lambda: tasks.record_heartbeat(
                self.broker, workload=WORKLOADS[self.task_workload[task_id]], task_id=task_id
            )
        )
        assert error is None or isinstance(error, Conflict), error
        assert error is not None or not missed, f"a late beat revived task {task_id}"

    # -- rules: time, the scheduler and the kill switch ---------------------------------------

    @rule(seconds=st.sampled_from([0, 1, 4, 11, 31, 61, 125, 301, 700, 1900]))
    def time_passes(self, seconds: int) -> None:
        """The clock moves, then the scheduler sweeps and the workers drain the queue."""
        self.clock.advance(seconds)
        self._scheduler_runs()

    @rule(seconds=st.sampled_from([1, 11, 61, 301]))
    def time_passes_while_the_scheduler_is_down(self, seconds: int) -> None:
        """Nobody sweeps (a scheduler failover, a stalled lock holder): only OpenBao's TTLs and
        the next scheduler round stand between a due credential and its use."""
        self.clock.advance(seconds)

    @precondition(lambda self: self._has_heartbeat_task())
    @rule(task_id=tasks)
    def heartbeat_missed(self, task_id: str) -> None:
        task = self.broker.tasks.get(task_id)
        assert task is not None
        if task.heartbeat_seconds is None or task.state != TaskState.active:
            return
        deadline = (task.last_heartbeat_at or task.created_at) + timedelta(
            seconds=task.heartbeat_seconds
        )
        if deadline > self.clock():
            self.clock.advance((deadline - self.clock()).total_seconds() + 1)
        self._scheduler_runs()
        after = self.broker.tasks.get(task_id)
        assert after is not None
        assert after.state == TaskState.completed, f"silent task {task_id} still {after.state}"

    @rule(workload=st.sampled_from(sorted(WORKLOADS)))
    def suspend_workload(self, workload: str) -> None:
        """The kill switch: every live grant of the workload is cancelled or being revoked."""
        workloads.suspend_workload(
            self.broker,
            admin=ADMIN,
            workload_id=workload,
            reason="incident",
            context=RequestContext(),
        )
        for task_id, owner in self.task_workload.items():
            if owner != workload:
                continue
            for grant in self._grants_of(task_id):
                assert grant.is_terminal or grant.state == GrantState.revoking, grant.state
                assert self.broker.routes.get(grant.grant_id) is None

    @precondition(lambda self: self._any_suspended())
    @rule(workload=st.sampled_from(sorted(WORKLOADS)))
    def resume_workload(self, workload: str) -> None:
        workloads.resume_workload(
            self.broker, admin=ADMIN, workload_id=workload, context=RequestContext()
        )

    @rule()
    def openbao_goes_down_or_comes_back(self) -> None:
        """While down, OpenBao neither issues nor revokes."""
        self.engine.down = not self.engine.down

    # -- rules: crashes -------------------------------------------------------------------------

    @rule(task_id=tasks)
    def crash_recording_fails_after_issue(self, task_id: str) -> None:
        """Invariant 4: the lease is revoked, the caller gets a 503, nothing is recorded issued."""
        before = self.engine.lease_number()
        recorded = set(self.broker.tasks.grant_ids(task_id))
        read = GrantRequest(profile="demo-db", scopes=["read"], ttl_seconds=60, justification="c")
        with recording_fails(self.broker):
            error = refusal(lambda: self._request(task_id, read))
        assert error is not None, "a grant was issued although recording it failed"
        self._check_rolled_back(error, before)
        assert set(self.broker.tasks.grant_ids(task_id)) == recorded

    @rule(grant_id=approved)
    def crash_recording_fails_after_issuing_approved(self, grant_id: str) -> None:
        before = self.engine.lease_number()
        grant = self._grant(grant_id)
        with recording_fails(self.broker):
            error = refusal(
                lambda: grants.issue_approved_grant(
                    self.broker,
                    workload=WORKLOADS[grant.workload],
                    grant_id=grant_id,
                    context=RequestContext(),
                )
            )
        assert error is not None, "a grant was issued although recording it failed"
        self._check_rolled_back(error, before)
        after = self._grant(grant_id)
        assert (after.state, after.lease_ref) == (grant.state, grant.lease_ref)

    def _check_rolled_back(self, error: BrokerError, before: int) -> None:
        if isinstance(error, StateUnavailable):
            assert error.status == 503
            (lease,) = self._new_leases(before)
            assert lease not in self.engine.live, "unrecorded lease left live"
            assert not any(secret in error.detail for secret in self.engine.secrets)
        else:
            assert isinstance(error, Conflict | Forbidden | ServiceUnavailable), error
            assert not set(self._new_leases(before)) & self.engine.live

    @rule(task_id=tasks)
    def crash_openbao_response_lost(self, task_id: str) -> None:
        """OpenBao created the lease but the broker never heard back: a 503, nothing recorded,
        and the reconciler must take the orphan back once its grace period is over."""
        before = self.engine.lease_number()
        recorded = set(self.broker.tasks.grant_ids(task_id))
        read = GrantRequest(profile="demo-db", scopes=["read"], ttl_seconds=60, justification="l")
        self.engine.lose_next_response = True
        try:
            error = refusal(lambda: self._request(task_id, read))
        finally:
            self.engine.lose_next_response = False
        assert error is not None, "issued although OpenBao's answer was lost"
        assert isinstance(error, Conflict | Forbidden | ServiceUnavailable), error
        self.orphans |= set(self._new_leases(before))
        if self._new_leases(before):
            assert isinstance(error, VaultUnavailable)
        assert set(self.broker.tasks.grant_ids(task_id)) == recorded

    @rule(task_id=tasks, interruption=st.sampled_from(["complete_task", "suspend_workload"]))
    def race_task_ends_while_issuing(self, task_id: str, interruption: str) -> None:
        """The task is completed, or its workload suspended, while OpenBao issues the lease: the
        caller must not walk away with a credential its task or workload no longer allows."""
        workload = self.task_workload[task_id]

        def interrupt() -> None:
            if interruption == "complete_task":
                self.complete_task(task_id)
            else:
                self.suspend_workload(workload)

        before = self.engine.lease_number()
        read = GrantRequest(profile="demo-db", scopes=["read"], ttl_seconds=60, justification="i")
        self.engine.while_issuing = interrupt
        try:
            error = refusal(lambda: self._request(task_id, read))
        finally:
            self.engine.while_issuing = None
        new = self._new_leases(before)
        assert error is not None or not new, (
            f"a credential was handed out although {interruption} ran while it was issued"
        )
        assert isinstance(error, Conflict | Forbidden | ServiceUnavailable), error
        holders = {g.lease_ref: g for g in self._grants_of(task_id)}
        for lease in new:
            if lease in holders:
                assert holders[lease].state == GrantState.revoking, holders[lease].state

    @precondition(lambda self: bool(self.queue.enqueued))
    @rule(index=st.integers(min_value=0, max_value=20))
    def revocation_delivered_twice(self, index: int) -> None:
        """Invariant 5: a redelivered revocation message changes nothing the first one did."""
        grant_id = self.queue.enqueued.pop(index % len(self.queue.enqueued))
        first = self._deliver(grant_id)
        if first is None:
            return
        receipt = self.broker.receipts.get(grant_id)
        second = self._deliver(grant_id)
        assert second is not None, "the second delivery failed where the first succeeded"
        assert (second.state, second.version) == (first.state, first.version)
        assert self.broker.receipts.get(grant_id) == receipt

    @precondition(lambda self: bool(self.queue.enqueued))
    @rule()
    def crash_worker_dies_after_openbao_revoked(self) -> None:
        """The lease is gone but the terminal state never got written; the ledger redelivers."""
        grant_id = self.queue.enqueued.pop(0)
        with final_write_fails(self.broker):
            self._deliver(grant_id)

    @precondition(lambda self: self._ledger_has_due())
    @rule()
    def crash_sweep_claim_lost(self) -> None:
        """The sweeper claimed due entries, but the messages it enqueued are lost."""
        enqueued = len(self.queue.enqueued)
        claimed = sweep_expired(self.broker, now=self.clock().timestamp())
        del self.queue.enqueued[enqueued:]
        if claimed:
            self._lost_at_now()

    # -- invariants -----------------------------------------------------------------------------

    @invariant()
    def invariant_1_no_credential_outlives_ttl_task_or_workload(self) -> None:
        """Lease TTL = grant TTL, within the task; live grants are on the ledger; after a clean
        scheduler run nothing due by then (TTL, task end, suspension, deadline) is still live."""
        for grant in self._grants_now():
            if not grant.is_terminal:
                assert self.broker.ledger.due_at(grant.grant_id) is not None, (
                    f"live grant {grant.grant_id} ({grant.state}) is not on the expiry ledger"
                )
            if grant.lease_ref is None:
                continue
            assert grant.issued_at is not None
            assert grant.expires_at is not None
            assert self.engine.ttl[grant.lease_ref] == grant.lease_ttl_seconds
            assert grant.expires_at == grant.issued_at + timedelta(
                seconds=self.engine.ttl[grant.lease_ref]
            )
            assert grant.lease_ttl_seconds <= (
                grant.approved_ttl_seconds or grant.requested_ttl_seconds
            )
            task = self.broker.tasks.get(grant.task_id)
            assert task is not None
            assert grant.expires_at <= task.expires_at, f"{grant.grant_id} outlives its task"
        for grant_id in self.due_grants:
            grant = self._grant(grant_id)
            assert grant.is_terminal, (
                f"at {self.settled_at} grant {grant_id} was due but is still {grant.state}"
            )
            assert grant.lease_ref not in self.engine.live
        for task_id in self.due_tasks:
            task = self.broker.tasks.get(task_id)
            assert task is not None
            assert task.state == TaskState.completed, f"task {task_id} missed its heartbeat"

    @invariant()
    def invariant_2_secrets_never_persisted_or_logged(self) -> None:
        """No issued secret in any Redis key or value, the audit file, or a log record."""
        # What was written before a secret existed cannot hold it: the append-only sinks (the
        # audit stream, the audit file, the log) are searched from where the last step stopped.
        audit_stream = self.broker.audit.stream.stream_key.encode()
        stored = redis_dump(self.redis, skip=audit_stream)
        self._read_new_audit_records()
        fresh = self.audit_events[self.audit_events_searched :]
        self.audit_events_searched = len(self.audit_events)
        events = "\n".join(e.model_dump_json() for e in fresh)
        audit_file = self.broker.audit.file
        assert audit_file is not None
        assert audit_file.exists()
        with audit_file.open("rb") as lines:
            lines.seek(self.audit_file_searched)
            written = lines.read()
        self.audit_file_searched += len(written)
        records = self.log_records()
        logged = "\n".join(r.getMessage() for r in records[self.log_offset :])
        self.log_offset = len(records)
        for secret in self.engine.secrets:
            assert secret.encode() not in stored, "a secret value is stored in Redis"
            assert secret not in events, "a secret value is in an audit event"
            assert secret.encode() not in written, "a secret value is in the audit file"
            assert secret not in logged, "a secret value was logged"

    @invariant()
    def invariant_3_default_deny(self) -> None:
        """Every recorded grant was decided by a rule that exists; none was denied."""
        for grant in self._grants_now():
            assert grant.decision.get("rule") in RULES, grant.decision
            assert grant.decision.get("effect") == RULES[grant.decision["rule"]], grant.decision

    @invariant()
    def invariant_4_nothing_issued_is_untracked(self) -> None:
        """Every live lease is held by an issued or revoking grant, or is an orphan of a lost
        OpenBao answer that the reconciler takes back once its grace period is over."""
        held = self.broker.grants.leases_held("database")
        for lease in self.engine.live:
            grant_id = held.get(lease)
            if grant_id is None:
                assert lease in self.orphans, f"lease {lease} is live and no grant holds it"
                assert lease not in self.due_orphans, f"orphan {lease} outlived its grace"
                continue
            grant = self._grant(grant_id)
            assert grant.lease_ref == lease
            assert grant.state in (GrantState.issued, GrantState.revoking), grant.state

    @invariant()
    def invariant_5_revocation_confirmed_with_receipt_and_final(self) -> None:
        """A revoked or expired grant has no live lease, no route and a signed receipt whose
        checks passed; terminal states never change (no resurrection)."""
        public_jwk = self.broker.signing_key.public_jwk()
        for grant in self._grants_now():
            if grant.grant_id in self.final:
                assert grant.state == self.final[grant.grant_id], (
                    f"{grant.grant_id} left {self.final[grant.grant_id]} for {grant.state}"
                )
            if not grant.is_terminal:
                continue
            self.final[grant.grant_id] = grant.state
            assert self.broker.routes.get(grant.grant_id) is None
            if grant.lease_ref is None:
                continue
            assert grant.lease_ref not in self.engine.live, f"{grant.grant_id} lease still live"
            receipt = self.broker.receipts.get(grant.grant_id)
            assert receipt is not None, f"{grant.grant_id} is {grant.state} without a receipt"
            assert all(check.status != "failed" for check in receipt.checks), receipt.checks
            assert verify_receipt(receipt.model_dump(mode="json"), public_jwk)
        for task_id in self.completed_tasks:
            task = self.broker.tasks.get(task_id)
            assert task is not None
            assert task.state == TaskState.completed

    @invariant()
    def invariant_6_approvals_distinct_not_requester_from_groups_unexpired(self) -> None:
        """Whatever went ahead on approvals had the rule's quorum of distinct people (by the
        test's own directory of who is who), none of them the requester, all from the approver
        groups, all before the approval deadline, and was issued inside its window."""
        for grant in self._grants_now():
            if grant.decision.get("effect") != "require_approval":
                continue
            assert grant.approval is not None
            assert grant.approval.approvals_required == QUORUM
            assert grant.approval.approver_groups == ["dba"]
            approving = [v for v in grant.votes if v.decision == "approve"]
            people = _distinct_people([(v.issuer, v.approver, v.email) for v in approving])
            assert len(people) == len(approving), f"one person voted twice on {grant.grant_id}"
            assert REQUESTER[grant.workload] not in people, "the requester approved"
            for vote in approving:
                assert "dba" in vote.groups
                assert vote.at < grant.approval.expires_at
            if grant.approved_at is not None or grant.issued_at is not None:
                assert len(people) >= QUORUM, (
                    f"{grant.grant_id} went ahead on {len(people)} vote(s)"
                )
            if grant.issued_at is not None:
                assert grant.issue_by is not None
                assert grant.issued_at < grant.issue_by

    @invariant()
    def invariant_7_audit_chain_intact_and_complete(self) -> None:
        """The hash chain verifies, and every issuance and every terminal state has its event."""
        head = self.broker.audit.stream.head()
        self._read_new_audit_records()
        report = verify_chain(self.audit_records, head=(head.seq, head.hash))
        assert report.intact, [str(p) for p in report.problems]
        events = self.audit_events
        seen = {(e.type, e.grant_id, e.outcome) for e in events}
        opened = {e.task_id for e in events if e.type == "task.opened"}
        for event in events:
            if event.grant_id is not None:
                assert event.workload, event
                assert event.task_id, event
        for task_id in self.task_workload:
            assert task_id in opened
        for grant in self._grants_now():
            if grant.issued_at is not None:
                assert ("grant.issued", grant.grant_id, "issued") in seen
            if grant.is_terminal:
                kind, outcome = TERMINAL_EVENT[grant.state]
                assert (kind, grant.grant_id, outcome) in seen, (grant.grant_id, grant.state)


@pytest.fixture
def lifecycle_config(tmp_path: Path) -> Path:
    directory = tmp_path / "config"
    directory.mkdir()
    write_demo_config(directory)
    (directory / "policy.yaml").write_text(POLICY)
    return directory


def test_grant_lifecycle_keeps_the_brief_invariants(
    lifecycle_config: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Receipts look only at OpenBao and the route; no real PostgreSQL or Redis is asked.
    for profile in ("JITBROKER_DEMO_PG_MONITOR_DSN", "JITBROKER_DEMO_REDIS_MONITOR_URL"):
        monkeypatch.delenv(profile, raising=False)
    caplog.set_level(logging.DEBUG, logger="jitbroker")
    GrantLifecycle.config_dir = lifecycle_config
    GrantLifecycle.config = load_config(lifecycle_config)
    GrantLifecycle.workdir = tmp_path
    GrantLifecycle.log_records = staticmethod(lambda: caplog.records)  # type: ignore[assignment]
    run_state_machine_as_test(
        GrantLifecycle,
        settings=settings(
            max_examples=MAX_EXAMPLES,
            stateful_step_count=STEPS,
            deadline=None,
            database=None,
            derandomize=False,
            print_blob=True,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )


def test_workload_suspended_while_its_lease_is_issued_gets_no_credential(
    lifecycle_config: Path,
) -> None:
    # Found by the state machine: the suspension's listing ran before the grant was recorded.
    broker, _, queue = memory_broker(lifecycle_config)
    engine = ClockedEngine(broker.clock)
    broker.engines = dict.fromkeys(broker.engines, engine)
    workload = WORKLOADS["demo-pipeline"]
    task = tasks.open_task(
        broker, workload=workload, purpose="race", ttl_seconds=600, context=RequestContext()
    )
    engine.while_issuing = lambda: workloads.suspend_workload(
        broker,
        admin=ADMIN,
        workload_id=workload.workload_id,
        reason="incident",
        context=RequestContext(),
    )

    with pytest.raises(WorkloadSuspended):
        grants.request_grant(
            broker,
            workload=workload,
            task_id=task.task_id,
            request=GrantRequest(
                profile="demo-db", scopes=["read"], ttl_seconds=60, justification="race"
            ),
            idempotency_key=None,
            context=RequestContext(),
        )

    (grant_id,) = broker.tasks.grant_ids(task.task_id)
    grant = broker.grants.get(grant_id)
    assert grant is not None
    assert grant.state == GrantState.revoking
    assert queue.enqueued == [grant_id]


@pytest.fixture
def silent_task(lifecycle_config: Path) -> tuple[Broker, str]:
    """A heartbeat task whose beat is 5 s overdue, with no scheduler sweep since."""
    broker, _, _ = memory_broker(lifecycle_config)
    clock = TestClock()
    broker.clock = clock
    task = tasks.open_task(
        broker,
        workload=WORKLOADS["demo-pipeline"],
        purpose="silent",
        ttl_seconds=600,
        heartbeat_seconds=10,
        context=RequestContext(),
    )
    clock.advance(15)
    return broker, task.task_id


def test_late_heartbeat_does_not_revive_a_task_that_missed_its_beat(
    silent_task: tuple[Broker, str],
) -> None:
    # Found by the state machine: the beat was accepted until the scheduler's sweep came by.
    broker, task_id = silent_task

    with pytest.raises(Conflict):
        tasks.record_heartbeat(broker, workload=WORKLOADS["demo-pipeline"], task_id=task_id)

    assert tasks.complete_silent_tasks(broker) == [task_id]


def test_no_grant_is_issued_into_a_task_that_missed_its_beat(
    silent_task: tuple[Broker, str],
) -> None:
    # Found by the state machine: a fresh credential went into a task that was already dead.
    broker, task_id = silent_task

    with pytest.raises(Conflict):
        grants.request_grant(
            broker,
            workload=WORKLOADS["demo-pipeline"],
            task_id=task_id,
            request=GrantRequest(
                profile="demo-db", scopes=["read"], ttl_seconds=60, justification="late"
            ),
            idempotency_key=None,
            context=RequestContext(),
        )

    assert broker.tasks.grant_ids(task_id) == []

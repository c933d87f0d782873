"""The only code that touches Redis for grants and their idempotency keys."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import redis

from jitbroker.errors import StateUnavailable
from jitbroker.grants.schemas import GrantRecord, GrantState
from jitbroker.inventory.repository import InventoryRepository, parse_sign_off
from jitbroker.inventory.schemas import LastUse, SignOff
from jitbroker.records import VersionedStore
from jitbroker.revocation.ledger import ExpiryLedger
from jitbroker.revocation.repository import COUNT_BACKLOG_FUNCTION, RevocationBacklogRepository
from jitbroker.routes.repository import RouteRepository
from jitbroker.routes.schemas import Route
from jitbroker.tasks.repository import TaskRepository, parse_task
from jitbroker.tasks.schemas import TaskRecord, TaskState
from jitbroker.workloads.repository import WorkloadRepository, parse_suspension
from jitbroker.workloads.schemas import Suspension

log = logging.getLogger(__name__)

# Claim an idempotency key for one request; return what is already there if someone has.
CLAIM_KEY = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.call('HMGET', KEYS[1], 'fingerprint', 'grant_id')
end
redis.call('HSET', KEYS[1], 'fingerprint', ARGV[1], 'grant_id', '')
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
return false
"""


# What a grant request reads before it is decided, as one consistent read: the workload's
# suspension, the task's document and version, the sign-off (when ARGV[1] is '1': KEYS[3]) and
# the revocation backlog of the profile's backend (failing, stuck since ARGV[2]) over the
# remaining keys, in (failing, revoking) pairs.
READ_REQUEST_STATE = (
    COUNT_BACKLOG_FUNCTION
    + """
local task = redis.call('HMGET', KEYS[2], 'doc', 'version')
local sign_off = false
local first = 3
if ARGV[1] == '1' then
  sign_off = redis.call('GET', KEYS[3])
  first = 4
end
local failing, stuck = count_backlog(first, ARGV[2])
return {redis.call('GET', KEYS[1]), task[1], task[2], sign_off, failing, stuck}
"""
)


# Compare-and-set a grant, and in the same step keep its expiry-ledger entry, the approver
# indexes (pending, awaiting break-glass review), the live-lease index and the revocation
# backlog (in progress since, failing since, incident raised) in line with its new state.
REPLACE_GRANT = """
local version = redis.call('HGET', KEYS[1], 'version')
if version == false then return -1 end
if tonumber(version) ~= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'doc', ARGV[2], 'state', ARGV[3], 'version', tonumber(version) + 1)
if ARGV[4] ~= '' then redis.call('ZADD', KEYS[2], ARGV[4], ARGV[7]) end
for i, flag in ipairs({ARGV[5], ARGV[6]}) do
  if flag == '1' then redis.call('SADD', KEYS[2 + i], ARGV[7])
  else redis.call('SREM', KEYS[2 + i], ARGV[7]) end
end
if ARGV[8] ~= '' then
  if ARGV[9] == '1' then redis.call('HSET', KEYS[5], ARGV[8], ARGV[7])
  else redis.call('HDEL', KEYS[5], ARGV[8]) end
end
if ARGV[10] ~= '' then redis.call('ZADD', KEYS[6], 'NX', ARGV[10], ARGV[7])
else
  redis.call('ZREM', KEYS[6], ARGV[7])
  redis.call('ZREM', KEYS[7], ARGV[7])
  redis.call('HDEL', KEYS[8], ARGV[7])
end
return 1
"""
# Grants whose lease OpenBao still holds (the lease index maps lease ref -> grant id).
LEASE_HOLDING_STATES = frozenset({GrantState.issued, GrantState.revoking})


@dataclass(frozen=True)
class RequestState:
    """What a grant request reads before it is decided, read in one round trip."""

    suspension: Suspension | None
    task: TaskRecord | None
    sign_off: SignOff | None
    # Failing and stuck revocations over the backlog profiles asked for (None: not asked).
    backlog: tuple[int, int] | None = None


@dataclass(frozen=True)
class StateAtRecording:
    """The task's state and the workload's suspension, read in the transaction that recorded a
    grant."""

    task_active: bool
    suspension: Suspension | None


@dataclass(frozen=True)
class IdempotencyClaim:
    """Who holds an idempotency key: the request's fingerprint and, once recorded, its grant."""

    fingerprint: str
    grant_id: str | None


class GrantRepository:
    def __init__(
        self,
        client: redis.Redis,
        prefix: str,
        *,
        tasks: TaskRepository,
        ledger: ExpiryLedger,
        backlog: RevocationBacklogRepository,
    ) -> None:
        self._redis = client
        self._prefix = prefix
        self._tasks = tasks
        self._ledger = ledger
        self._backlog = backlog
        self._store = VersionedStore(
            client, GrantRecord, key_pattern=f"{prefix}:grant:{{id}}", id_field="grant_id"
        )
        # Stateless over the shared client; the grant path reads and writes their keys in its
        # own round trips.
        self._workloads = WorkloadRepository(client, prefix)
        self._inventory = InventoryRepository(client, prefix)
        self._routes = RouteRepository(client, prefix)
        self._claim_key = client.register_script(CLAIM_KEY)
        self._read_request_state = client.register_script(READ_REQUEST_STATE)
        self._replace = client.register_script(REPLACE_GRANT)
        self.pending_key = f"{prefix}:approvals:pending"
        self.review_key = f"{prefix}:approvals:review"

    def get(self, grant_id: str) -> GrantRecord | None:
        return self._store.get(grant_id)

    def request_state(
        self,
        *,
        workload_id: str,
        task_id: str,
        sign_off: bool,
        backlog_profiles: list[str] | None = None,
        revoking_since: float = 0.0,
    ) -> RequestState:
        """The workload's suspension, the task, (when `sign_off`) the workload's sign-off and
        (when `backlog_profiles`) their failing revocations and those in progress since before
        `revoking_since`, in one round trip instead of one each."""
        keys = [self._workloads.suspension_key(workload_id), self._tasks.key(task_id)]
        if sign_off:
            keys.append(self._inventory.sign_off_key(workload_id))
        for profile in backlog_profiles or []:
            keys += [self._backlog.failing_key(profile), self._backlog.revoking_key(profile)]
        try:
            suspension, doc, version, signed, failing, stuck = self._read_request_state(
                keys=keys, args=["1" if sign_off else "0", repr(revoking_since)]
            )
        except redis.RedisError as exc:
            raise StateUnavailable(f"cannot read state: {type(exc).__name__}") from None
        # Lua hands back false for a missing value.
        return RequestState(
            suspension=parse_suspension(suspension or None),
            task=parse_task(doc or None, version or None),
            sign_off=parse_sign_off(signed or None),
            backlog=(int(failing), int(stuck)) if backlog_profiles else None,
        )

    def replace(self, grant: GrantRecord, *, due: float | None = None) -> bool:
        """Write `grant` if unchanged since read; `due` moves its expiry-ledger entry."""
        try:
            result = self._replace(
                keys=[
                    self._store.key(grant.grant_id),
                    self._ledger.key,
                    self.pending_key,
                    self.review_key,
                    self.lease_index_key(grant.engine),
                    self._backlog.revoking_key(grant.profile),
                    self._backlog.failing_key(grant.profile),
                    self._backlog.incidents_key,
                ],
                args=[
                    grant.version,
                    grant.model_dump_json(exclude={"version"}),
                    grant.state,
                    "" if due is None else repr(due),
                    "1" if grant.state == GrantState.pending_approval else "0",
                    "1" if grant.awaiting_review else "0",
                    grant.grant_id,
                    grant.lease_ref or "",
                    "1" if grant.state in LEASE_HOLDING_STATES else "0",
                    _revoking_since(grant),
                ],
            )
        except redis.RedisError as exc:
            raise StateUnavailable(f"cannot write grant: {type(exc).__name__}") from None
        if result == 1:
            grant.version += 1
            return True
        return False

    def pending_ids(self) -> list[str]:
        """Grants waiting for an approver."""
        return self._members(self.pending_key)

    def review_ids(self) -> list[str]:
        """Break-glass grants nobody has acknowledged yet."""
        return self._members(self.review_key)

    def _members(self, key: str) -> list[str]:
        try:
            return sorted(_text(m) for m in self._redis.smembers(key))
        except redis.RedisError as exc:
            raise StateUnavailable(f"cannot read approvals: {type(exc).__name__}") from None

    def create(
        self,
        grant: GrantRecord,
        *,
        expires_at: float | None = None,
        idempotency: tuple[str, str, int] | None = None,
        last_use: LastUse | None = None,
        route: tuple[Route, str] | None = None,
    ) -> StateAtRecording | None:
        """Write a new grant, link it to its task, put it on the expiry ledger, settle its key,
        open its `route` (route, credential fingerprint), note `last_use`; the task's state and
        the workload's suspension, read in the same transaction (None if those reads failed).

        A completion (a suspension) records itself and then lists the task's grants (the
        ledger): one that came before this transaction is seen here, one that comes after lists
        this grant. The route becomes visible with the grant: a revocation, which closes the
        route once it sees the grant issued, cannot miss it."""
        task_key, state_field = self._tasks.state_key(grant.task_id)
        try:
            pipe = self._redis.pipeline(transaction=True)
            pipe.hset(self._store.key(grant.grant_id), mapping=self._store.fields(grant))
            pipe.sadd(self._tasks.grants_key(grant.task_id), grant.grant_id)
            if expires_at is not None:
                self._ledger.schedule(grant.grant_id, expires_at, pipe=pipe)
            if grant.state == GrantState.pending_approval:
                pipe.sadd(self.pending_key, grant.grant_id)
            if grant.awaiting_review:
                pipe.sadd(self.review_key, grant.grant_id)
            if grant.lease_ref and grant.state in LEASE_HOLDING_STATES:
                pipe.hset(self.lease_index_key(grant.engine), grant.lease_ref, grant.grant_id)
            if idempotency is not None:
                workload, key, ttl = idempotency
                pipe.hset(self._idempotency_key(workload, key), "grant_id", grant.grant_id)
                pipe.expire(self._idempotency_key(workload, key), ttl)
            if route is not None:
                self._routes.open(*route, pipe=pipe)
            recorded = len(pipe)
            if last_use is not None:
                self._inventory.record_use(
                    last_use.workload, last_use.profile, last_use.scopes, last_use.at, pipe=pipe
                )
            pipe.hget(task_key, state_field)
            pipe.get(self._workloads.suspension_key(grant.workload))
            results = pipe.execute(raise_on_error=False)
        except redis.RedisError as exc:
            raise StateUnavailable(f"cannot record grant: {type(exc).__name__}") from None
        failed = next((r for r in results[:recorded] if isinstance(r, Exception)), None)
        if failed is not None:
            raise StateUnavailable(f"cannot record grant: {type(failed).__name__}")
        if last_use is not None and isinstance(results[recorded], Exception):
            # Bookkeeping for the inventory: never a reason to take the credential back.
            log.warning("last use of grant %s not recorded: %s", grant.grant_id, results[recorded])
        state, suspension = results[-2:]
        if isinstance(state, Exception) or isinstance(suspension, Exception):
            return None  # recorded all the same: the caller reads them on its own
        return StateAtRecording(
            task_active=_text(state) == TaskState.active.value,
            suspension=parse_suspension(suspension),
        )

    def claim_idempotency_key(
        self, workload: str, key: str, fingerprint: str, *, ttl_seconds: int
    ) -> IdempotencyClaim | None:
        """None when this request now owns `key`; otherwise the claim already holding it."""
        try:
            held = self._claim_key(
                keys=[self._idempotency_key(workload, key)], args=[fingerprint, ttl_seconds]
            )
        except redis.RedisError as exc:
            raise StateUnavailable(f"cannot check idempotency key: {type(exc).__name__}") from None
        if not held:
            return None
        stored_fingerprint, grant_id = (_text(v) for v in held)
        return IdempotencyClaim(fingerprint=stored_fingerprint, grant_id=grant_id or None)

    def release_idempotency_key(self, workload: str, key: str) -> None:
        try:
            self._redis.delete(self._idempotency_key(workload, key))
        except redis.RedisError:
            pass  # the key expires on its own; a stuck claim only delays a retry

    def lease_index_key(self, engine: str) -> str:
        return f"{self._prefix}:leases:{engine}"

    def leases_held(self, engine: str) -> dict[str, str]:
        """Lease ref -> grant id of every issued or revoking grant of the engine."""
        try:
            held = self._redis.hgetall(self.lease_index_key(engine))
        except redis.RedisError as exc:
            raise StateUnavailable(f"cannot read lease index: {type(exc).__name__}") from None
        return {_text(lease): _text(grant_id) for lease, grant_id in held.items()}

    def holds_lease(self, engine: str, lease_ref: str) -> bool:
        """Whether an issued or revoking grant holds `lease_ref`."""
        try:
            return bool(self._redis.hexists(self.lease_index_key(engine), lease_ref))
        except redis.RedisError as exc:
            raise StateUnavailable(f"cannot read lease index: {type(exc).__name__}") from None

    def drop_lease(self, engine: str, lease_ref: str) -> None:
        """Remove an index entry whose grant is gone or final."""
        try:
            self._redis.hdel(self.lease_index_key(engine), lease_ref)
        except redis.RedisError as exc:
            raise StateUnavailable(f"cannot update lease index: {type(exc).__name__}") from None

    def index_leases_once(self) -> int:
        """Index the leases of grants on the ledger, once per Redis (grants recorded before the
        index existed would otherwise look like orphans); how many were added."""
        marker = f"{self._prefix}:leases:indexed"
        try:
            if self._redis.exists(marker):
                return 0
            added = 0
            for grant_id in self._ledger.members():
                grant = self.get(grant_id)
                if grant and grant.lease_ref and grant.state in LEASE_HOLDING_STATES:
                    self._redis.hset(
                        self.lease_index_key(grant.engine), grant.lease_ref, grant.grant_id
                    )
                    added += 1
            self._redis.set(marker, "1")
        except redis.RedisError as exc:
            raise StateUnavailable(f"cannot index leases: {type(exc).__name__}") from None
        return added

    def _idempotency_key(self, workload: str, key: str) -> str:
        digest = hashlib.sha256(key.encode()).hexdigest()
        return f"{self._prefix}:idem:{workload}:{digest}"


def _revoking_since(grant: GrantRecord) -> str:
    if grant.state != GrantState.revoking:
        return ""
    since = grant.revocation_requested_at or grant.created_at
    return repr(since.timestamp())


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value

"""The broker protocol without I/O: each flow yields the HTTP calls and pauses it needs.

The sync `Broker` and the async `AsyncBroker` drive the same flows, so retries, idempotency keys
and the approval wait behave the same in both, and tests can drive them with a mock transport.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import httpx

from jitbroker.client.credentials import Completion, Credential
from jitbroker.client.errors import (
    ApprovalRequired,
    ApprovalTimedOut,
    BrokerError,
    BrokerUnavailable,
    Denied,
    error_for,
    problem_of,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_TIMEOUT_SECONDS = 30.0
# The broker waits up to JITBROKER_COMPLETE_WAIT_SECONDS (30 by default) for OpenBao to confirm.
COMPLETE_TIMEOUT_SECONDS = 120.0
LONG_POLL_MARGIN_SECONDS = 15.0
# Errors raised before the request left this process: resending cannot act twice.
UNSENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# A proxy answered for the broker, which may or may not have acted.
GATEWAY_STATUSES = frozenset({502, 504})


@dataclass(frozen=True)
class Call:
    """One HTTP request a flow wants made (the driver adds the Authorization header)."""

    method: str
    path: str
    params: dict[str, str] | None = None
    json: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float = DEFAULT_TIMEOUT_SECONDS


@dataclass(frozen=True)
class Pause:
    """Wait this long before the next step (backoff between retries)."""

    seconds: float


Answer = httpx.Response | httpx.TransportError
Flow = Generator[Call | Pause, Answer | None, T]


@dataclass(frozen=True)
class RetryPolicy:
    """Up to `attempts` tries with capped exponential backoff; Retry-After wins, within the cap."""

    attempts: int = 6
    first_delay: float = 0.5
    max_delay: float = 8.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        backoff = self.first_delay * 2 ** (attempt - 1)
        return max(0.0, min(self.max_delay, backoff if retry_after is None else retry_after))


NO_RETRY = RetryPolicy(attempts=1)


@dataclass(frozen=True)
class CredentialRequest:
    """What a task asks for: a profile, scopes, a TTL and why."""

    profile: str
    scopes: list[str]
    ttl_seconds: int
    justification: str
    break_glass: bool = False
    public_key: str | None = None  # ssh profiles: the key the certificate is signed for

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "profile": self.profile,
            "scopes": list(self.scopes),
            "ttl_seconds": self.ttl_seconds,
            "justification": self.justification,
        }
        if self.break_glass:
            body["break_glass"] = True
        if self.public_key is not None:
            body["public_key"] = self.public_key
        return body


@dataclass(frozen=True)
class ApprovalStatus:
    """Where a grant stands while it waits for people, for a live status line."""

    grant_id: str
    profile: str
    scopes: list[str]
    state: str
    rule: str
    reason: str
    approver_groups: list[str]
    approvals_required: int
    approvals_given: int
    seconds_left: float

    @classmethod
    def of(cls, grant: dict[str, Any], seconds_left: float) -> ApprovalStatus:
        decision = grant.get("decision") or {}
        approval = grant.get("approval") or {}
        votes = grant.get("votes") or []
        return cls(
            grant_id=str(grant["grant_id"]),
            profile=str(grant.get("profile", "")),
            scopes=[str(s) for s in grant.get("scopes") or []],
            state=str(grant["state"]),
            rule=str(decision.get("rule", "")),
            reason=str(decision.get("reason", "")),
            approver_groups=[str(g) for g in approval.get("approver_groups") or []],
            approvals_required=int(approval.get("approvals_required") or 0),
            approvals_given=sum(1 for v in votes if v.get("decision") == "approve"),
            seconds_left=max(0.0, seconds_left),
        )


@dataclass(frozen=True)
class ApprovalWait:
    """Whether to wait for approval, for how long, and who hears about progress."""

    wait: bool = True
    timeout_seconds: float = 900.0
    long_poll_seconds: float = 25.0
    on_status: Callable[[ApprovalStatus], None] | None = None


def drive(
    flow: Flow[T], send: Callable[[Call], httpx.Response], sleep: Callable[[float], None]
) -> T:
    """Run a flow to its end with a blocking `send` and `sleep`."""
    answer: Answer | None = None
    while True:
        try:
            step = flow.send(answer)
        except StopIteration as stop:
            return cast(T, stop.value)
        if isinstance(step, Pause):
            sleep(step.seconds)
            answer = None
            continue
        try:
            answer = send(step)
        except httpx.TransportError as exc:
            answer = exc


def exchange(call: Call, retry: RetryPolicy, *, resend_safe: bool) -> Flow[httpx.Response]:
    """Make `call`, retrying transient failures with the very same call (the same key)."""
    # `resend_safe`: the broker deduplicates the call, so a request that may have reached it can
    # be sent again; otherwise only failures that certainly did not act are retried.
    attempt = 1
    while True:
        answer = yield call
        assert answer is not None
        if not _transient(answer, resend_safe=resend_safe):
            if isinstance(answer, httpx.TransportError):
                raise BrokerUnavailable(
                    f"{call.method} {call.path}: {_describe(answer)}", maybe_processed=True
                ) from answer
            return answer
        if attempt >= retry.attempts:
            cause = answer if isinstance(answer, httpx.TransportError) else None
            raise _exhausted(call, answer, attempt) from cause
        delay = retry.delay(attempt, _retry_after(answer))
        log.warning(
            "%s %s: %s; retrying in %.1fs (attempt %d of %d)",
            call.method,
            call.path,
            _describe(answer),
            delay,
            attempt + 1,
            retry.attempts,
        )
        yield Pause(delay)
        attempt += 1


def open_task(
    *, purpose: str, ttl_seconds: int | None, heartbeat_seconds: int | None, retry: RetryPolicy
) -> Flow[dict[str, Any]]:
    """Open a task; only failures that certainly created nothing are retried."""
    body: dict[str, Any] = {"purpose": purpose}
    if ttl_seconds is not None:
        body["ttl_seconds"] = ttl_seconds
    if heartbeat_seconds is not None:
        body["heartbeat_seconds"] = heartbeat_seconds
    response = yield from exchange(Call("POST", "/v1/tasks", json=body), retry, resend_safe=False)
    return _expect(response, {201}, "opening a task")


def send_heartbeat(task_id: str) -> Flow[dict[str, Any]]:
    """One heartbeat, not retried: the next beat is the retry."""
    call = Call("POST", f"/v1/tasks/{task_id}/heartbeat")
    response = yield from exchange(call, NO_RETRY, resend_safe=True)
    return _expect(response, {200}, f"heartbeat of task {task_id}")


def complete_task(task_id: str, retry: RetryPolicy) -> Flow[Completion]:
    """Complete the task and wait for OpenBao to confirm every revocation (safe to repeat)."""
    call = Call(
        "POST",
        f"/v1/tasks/{task_id}/complete",
        params={"wait": "true"},
        timeout=COMPLETE_TIMEOUT_SECONDS,
    )
    response = yield from exchange(call, retry, resend_safe=True)
    body = _expect(response, {200, 202}, f"completing task {task_id}")
    return Completion(
        task_id=task_id,
        state=str(body.get("state", "")),
        revocations=list(body.get("revocations") or []),
        receipts=list(body.get("receipts") or []),
    )


def revoke_grant(grant_id: str, retry: RetryPolicy) -> Flow[dict[str, Any]]:
    """Ask for one grant to be revoked now (safe to repeat)."""
    call = Call("POST", f"/v1/grants/{grant_id}/revoke")
    response = yield from exchange(call, retry, resend_safe=True)
    return _expect(response, {200}, f"revoking grant {grant_id}")


def obtain_credential(
    task_id: str,
    request: CredentialRequest,
    *,
    wait: ApprovalWait,
    retry: RetryPolicy,
    clock: Callable[[], float] = time.monotonic,
    new_key: Callable[[], str] = lambda: str(uuid.uuid4()),
) -> Flow[Credential]:
    """Request a grant (one Idempotency-Key across retries), await approval, issue it."""
    doing = f"requesting {request.profile} [{', '.join(request.scopes)}]"
    for _ in range(2):
        call = Call(
            "POST",
            f"/v1/tasks/{task_id}/grants",
            json=request.body(),
            headers={"Idempotency-Key": new_key()},
        )
        response = yield from exchange(call, retry, resend_safe=True)
        if response.status_code == 201:
            return Credential.from_issued_grant(response.json())
        grant = _expect(response, {200, 202}, doing)
        if grant.get("state") != "issued":
            return (yield from _await_and_issue(grant, wait=wait, retry=retry, clock=clock))
        # A retry replayed a grant issued in an answer that never arrived: its secret is gone.
        log.warning(
            "grant %s was issued but its answer was lost; revoking it and asking again",
            grant["grant_id"],
        )
        yield from _revoke_quietly(str(grant["grant_id"]), retry)
    raise BrokerUnavailable(f"{doing}: the credential was lost in transit twice (both revoked)")


def await_grant(
    grant_id: str,
    *,
    wait: ApprovalWait,
    retry: RetryPolicy,
    clock: Callable[[], float] = time.monotonic,
) -> Flow[Credential]:
    """Wait for a grant that needs approval (after `ApprovalRequired`) and issue it."""
    call = Call("GET", f"/v1/grants/{grant_id}")
    response = yield from exchange(call, retry, resend_safe=True)
    grant = _expect(response, {200}, f"reading grant {grant_id}")
    return (yield from _await_and_issue(grant, wait=wait, retry=retry, clock=clock))


def _await_and_issue(
    grant: dict[str, Any],
    *,
    wait: ApprovalWait,
    retry: RetryPolicy,
    clock: Callable[[], float],
) -> Flow[Credential]:
    grant_id = str(grant["grant_id"])
    deadline = clock() + wait.timeout_seconds
    while True:
        state = grant.get("state")
        left = deadline - clock()
        if wait.on_status is not None:
            wait.on_status(ApprovalStatus.of(grant, left))
        if state == "approved":
            return (yield from _issue(grant_id, retry))
        if state == "denied":
            raise _approver_denial(grant)
        if state == "approval_expired":
            raise ApprovalTimedOut(
                f"grant {grant_id}: nobody approved it within its approval window",
                grant_id=grant_id,
            )
        if state != "pending_approval":
            raise BrokerError(f"grant {grant_id} is {state}; there is nothing to issue")
        if not wait.wait:
            rule = (grant.get("decision") or {}).get("rule")
            raise ApprovalRequired(
                f"grant {grant_id} waits for approval (rule {rule})", grant=grant
            )
        if left <= 0:
            raise ApprovalTimedOut(
                f"grant {grant_id}: not approved within {wait.timeout_seconds:g}s",
                grant_id=grant_id,
            )
        poll = max(1, math.ceil(min(left, wait.long_poll_seconds)))
        call = Call(
            "GET",
            f"/v1/grants/{grant_id}",
            params={"wait": str(poll)},
            timeout=poll + LONG_POLL_MARGIN_SECONDS,
        )
        response = yield from exchange(call, retry, resend_safe=True)
        grant = _expect(response, {200}, f"waiting for grant {grant_id}")


def _issue(grant_id: str, retry: RetryPolicy) -> Flow[Credential]:
    call = Call("POST", f"/v1/grants/{grant_id}/issue")
    try:
        response = yield from exchange(call, retry, resend_safe=False)
    except BrokerUnavailable as exc:
        if exc.maybe_processed:
            # The broker may have issued it in the answer we lost: take the credential back.
            yield from _revoke_quietly(grant_id, retry)
        raise
    return Credential.from_issued_grant(_expect(response, {200}, f"issuing grant {grant_id}"))


def _revoke_quietly(grant_id: str, retry: RetryPolicy) -> Flow[None]:
    try:
        yield from revoke_grant(grant_id, retry)
    except BrokerError as exc:
        log.warning(
            "grant %s could not be revoked now (%s); completing its task revokes it",
            grant_id,
            exc.message,
        )


def _approver_denial(grant: dict[str, Any]) -> Denied:
    rule = (grant.get("decision") or {}).get("rule")
    denials = [v for v in grant.get("votes") or [] if v.get("decision") == "deny"]
    if denials:
        reason = f"denied by {denials[-1].get('approver')}: {denials[-1].get('comment', '')}"
    else:
        reason = "denied"
    return Denied(
        f"grant {grant['grant_id']} was {reason}",
        rule=str(rule) if rule else None,
        reason=reason,
        status=None,
    )


def _expect(response: httpx.Response, statuses: set[int], doing: str) -> dict[str, Any]:
    if response.status_code not in statuses:
        raise error_for(response, doing)
    body = response.json()
    if not isinstance(body, dict):
        raise BrokerError(f"{doing}: the broker answered with a non-object body")
    return body


def _transient(answer: Answer, *, resend_safe: bool) -> bool:
    if isinstance(answer, httpx.TransportError):
        return resend_safe or isinstance(answer, UNSENT_ERRORS)
    status = answer.status_code
    if status == 503:
        return True
    if status in (409, 429) and "retry-after" in answer.headers:
        return True  # 409 here: a request with this Idempotency-Key is still being processed
    return resend_safe and status in GATEWAY_STATUSES


def _retry_after(answer: Answer) -> float | None:
    if isinstance(answer, httpx.TransportError):
        return None
    try:
        return float(answer.headers.get("retry-after", ""))
    except ValueError:
        return None  # absent, or an HTTP date: use the backoff


def _describe(answer: Answer) -> str:
    if isinstance(answer, httpx.TransportError):
        return f"{type(answer).__name__}: {answer}"
    problem = problem_of(answer)
    detail = problem.get("detail") or problem.get("title") or answer.reason_phrase
    return f"{answer.status_code} {detail}"


def _exhausted(call: Call, answer: Answer, attempts: int) -> BrokerUnavailable:
    message = f"{call.method} {call.path}: {_describe(answer)} (after {attempts} attempts)"
    if isinstance(answer, httpx.TransportError):
        return BrokerUnavailable(message, maybe_processed=not isinstance(answer, UNSENT_ERRORS))
    return BrokerUnavailable(
        message,
        status=answer.status_code,
        problem=problem_of(answer),
        maybe_processed=answer.status_code in GATEWAY_STATUSES,
    )

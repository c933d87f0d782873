"""The synchronous client: `Broker` for one workload identity, `Task` as a context manager."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, TypeVar

import httpx

from jitbroker.client.credentials import Completion, Credential
from jitbroker.client.errors import BrokerError
from jitbroker.client.flows import (
    DEFAULT_TIMEOUT_SECONDS,
    ApprovalStatus,
    ApprovalWait,
    Call,
    CredentialRequest,
    Flow,
    RetryPolicy,
    await_grant,
    complete_task,
    drive,
    obtain_credential,
    open_task,
    send_heartbeat,
)
from jitbroker.client.token_discovery import StaticToken, discover_token

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_API = "http://127.0.0.1:8400"
DEFAULT_HEARTBEAT_SECONDS = 30
DEFAULT_GRANT_TTL_SECONDS = 600
DEFAULT_APPROVAL_TIMEOUT_SECONDS = 900.0
USER_AGENT = "jitbroker-client/0.1"
# Beat three times per interval, so one lost beat never lets the task die.
BEATS_PER_INTERVAL = 3
# A task the broker no longer accepts beats for: completed, expired, or gone.
TASK_ENDED_STATUSES = frozenset({404, 409})


def broker_url(url: str | None) -> str:
    """`url`, else JITBROKER_API, else the local default."""
    return (url or os.environ.get("JITBROKER_API") or DEFAULT_API).rstrip("/")


def heartbeat_pace(heartbeat_seconds: int) -> float:
    """Seconds between beats for a task whose broker-side interval is `heartbeat_seconds`."""
    return max(0.2, heartbeat_seconds / BEATS_PER_INTERVAL)


class Broker:
    """A client of the broker for one workload: opens tasks that hold credentials."""

    # The identity token comes from `token`, a `token_provider` called before each request (for
    # tokens that rotate), or else is discovered from the environment (`token_discovery`).

    def __init__(
        self,
        url: str | None = None,
        *,
        token: str | None = None,
        token_provider: Callable[[], str] | None = None,
        retry: RetryPolicy = RetryPolicy(),
        long_poll_seconds: float = 25.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if token is not None and token_provider is not None:
            raise ValueError("pass token or token_provider, not both")
        self.url = broker_url(url)
        if token is not None:
            token_provider = StaticToken(token, source="token argument")
        self._token_provider = token_provider or discover_token()
        self.retry = retry
        self.long_poll_seconds = long_poll_seconds
        self.sleep = sleep
        self.clock = clock
        self._client = httpx.Client(
            base_url=self.url,
            transport=transport,
            timeout=DEFAULT_TIMEOUT_SECONDS,
            headers={"User-Agent": USER_AGENT},
        )

    def task(
        self,
        purpose: str,
        *,
        ttl: int | None = None,
        heartbeat: int | None = DEFAULT_HEARTBEAT_SECONDS,
    ) -> Task:
        """A task for `with broker.task(...) as task:`: opened on entry, completed on exit."""
        return Task(self, purpose=purpose, ttl_seconds=ttl, heartbeat_seconds=heartbeat)

    def run(self, flow: Flow[T]) -> T:
        """Drive one protocol flow over this client."""
        return drive(flow, self._send, self.sleep)

    def _send(self, call: Call) -> httpx.Response:
        headers = {**call.headers, "Authorization": f"Bearer {self._token_provider()}"}
        return self._client.request(
            call.method,
            call.path,
            params=call.params,
            json=call.json,
            headers=headers,
            timeout=call.timeout,
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Broker:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class Task:
    """One task: its credentials are revoked when it completes (on leaving the `with` block)."""

    # As a context manager it opens the task, beats its heartbeat from a background thread, and
    # on exit (also when the body raises) stops the heartbeat and completes the task, waiting
    # until the broker confirms every revocation.

    def __init__(
        self,
        broker: Broker,
        *,
        purpose: str,
        ttl_seconds: int | None,
        heartbeat_seconds: int | None,
    ) -> None:
        self.broker = broker
        self.purpose = purpose
        self.ttl_seconds = ttl_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.task_id: str | None = None
        self.view: dict[str, Any] = {}
        self.completion: Completion | None = None
        self.credentials: list[Credential] = []
        self._heartbeat: _HeartbeatThread | None = None

    @property
    def heartbeat_running(self) -> bool:
        """True while the background heartbeat is beating."""
        return self._heartbeat is not None and self._heartbeat.running

    @property
    def ended_by_broker(self) -> str | None:
        """Why the broker stopped accepting heartbeats (the task ended), or None."""
        return self._heartbeat.ended if self._heartbeat is not None else None

    def open(self) -> Task:
        """Open the task on the broker and start its heartbeat."""
        if self.task_id is not None:
            return self
        self.view = self.broker.run(
            open_task(
                purpose=self.purpose,
                ttl_seconds=self.ttl_seconds,
                heartbeat_seconds=self.heartbeat_seconds,
                retry=self.broker.retry,
            )
        )
        self.task_id = str(self.view["task_id"])
        if self.heartbeat_seconds is not None:
            self._heartbeat = _HeartbeatThread(self.broker, self.task_id, self.heartbeat_seconds)
            self._heartbeat.start()
        return self

    def credential(
        self,
        profile: str,
        *,
        scopes: Sequence[str] = ("read",),
        ttl: int = DEFAULT_GRANT_TTL_SECONDS,
        justification: str | None = None,
        wait_for_approval: bool = True,
        approval_timeout: float = DEFAULT_APPROVAL_TIMEOUT_SECONDS,
        on_status: Callable[[ApprovalStatus], None] | None = None,
        break_glass: bool = False,
        public_key: str | None = None,
    ) -> Credential:
        """A credential for `profile` in this task, waiting for approval when it needs one."""
        request = CredentialRequest(
            profile=profile,
            scopes=list(scopes),
            ttl_seconds=ttl,
            justification=justification or self.purpose,
            break_glass=break_glass,
            public_key=public_key,
        )
        credential = self.broker.run(
            obtain_credential(
                self._open_id(),
                request,
                wait=self._approval_wait(wait_for_approval, approval_timeout, on_status),
                retry=self.broker.retry,
                clock=self.broker.clock,
            )
        )
        self.credentials.append(credential)
        return credential

    def wait_for_grant(
        self,
        grant_id: str,
        *,
        timeout: float = DEFAULT_APPROVAL_TIMEOUT_SECONDS,
        on_status: Callable[[ApprovalStatus], None] | None = None,
    ) -> Credential:
        """Wait for a grant that raised `ApprovalRequired`, then issue it."""
        self._open_id()
        credential = self.broker.run(
            await_grant(
                grant_id,
                wait=self._approval_wait(True, timeout, on_status),
                retry=self.broker.retry,
                clock=self.broker.clock,
            )
        )
        self.credentials.append(credential)
        return credential

    def complete(self) -> Completion:
        """Stop the heartbeat and complete the task; returns once revocation is confirmed."""
        task_id = self._open_id()
        if self._heartbeat is not None:
            self._heartbeat.stop()
        self.completion = self.broker.run(complete_task(task_id, self.broker.retry))
        return self.completion

    def __enter__(self) -> Task:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.task_id is None or self.completion is not None:
            return
        try:
            self.complete()
        except BrokerError as error:
            if exc is None:
                raise
            # Keep the body's exception; with the heartbeat stopped the broker ends the task
            # within one interval anyway (or at its deadline without a heartbeat).
            log.error("task %s could not be completed: %s", self.task_id, error.message)

    def _open_id(self) -> str:
        if self.task_id is None:
            raise BrokerError("the task is not open: use `with broker.task(...)` or .open()")
        return self.task_id

    def _approval_wait(
        self,
        wait: bool,
        timeout: float,
        on_status: Callable[[ApprovalStatus], None] | None,
    ) -> ApprovalWait:
        return ApprovalWait(
            wait=wait,
            timeout_seconds=timeout,
            long_poll_seconds=self.broker.long_poll_seconds,
            on_status=on_status,
        )


class _HeartbeatThread:
    """Beats a task's heartbeat until stopped, or until the broker says the task has ended."""

    def __init__(self, broker: Broker, task_id: str, heartbeat_seconds: int) -> None:
        self.broker = broker
        self.task_id = task_id
        self.pace = heartbeat_pace(heartbeat_seconds)
        self.ended: str | None = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._beat_until_stopped, name=f"jitbroker-heartbeat-{task_id}", daemon=True
        )

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=DEFAULT_TIMEOUT_SECONDS)

    def _beat_until_stopped(self) -> None:
        while not self._stopped.wait(self.pace):
            try:
                self.broker.run(send_heartbeat(self.task_id))
            except BrokerError as exc:
                if self._stopped.is_set():
                    return
                if exc.status in TASK_ENDED_STATUSES:
                    self.ended = exc.message
                    log.error("task %s ended on the broker: %s", self.task_id, exc.message)
                    return
                log.warning("heartbeat of task %s failed: %s", self.task_id, exc.message)

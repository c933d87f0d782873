"""The asyncio client: `AsyncBroker` and `AsyncTask`, driving the same flows as `Broker`."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, TypeVar, cast

import httpx

from jitbroker.client.broker import (
    DEFAULT_APPROVAL_TIMEOUT_SECONDS,
    DEFAULT_GRANT_TTL_SECONDS,
    DEFAULT_HEARTBEAT_SECONDS,
    TASK_ENDED_STATUSES,
    USER_AGENT,
    broker_url,
    heartbeat_pace,
)
from jitbroker.client.credentials import Completion, Credential
from jitbroker.client.errors import BrokerError
from jitbroker.client.flows import (
    DEFAULT_TIMEOUT_SECONDS,
    Answer,
    ApprovalStatus,
    ApprovalWait,
    Call,
    CredentialRequest,
    Flow,
    Pause,
    RetryPolicy,
    await_grant,
    complete_task,
    obtain_credential,
    open_task,
    send_heartbeat,
)
from jitbroker.client.token_discovery import StaticToken, discover_token

log = logging.getLogger(__name__)
T = TypeVar("T")


class AsyncBroker:
    """The asyncio twin of `Broker`: `async with broker.task(...) as task:`."""

    def __init__(
        self,
        url: str | None = None,
        *,
        token: str | None = None,
        token_provider: Callable[[], str] | None = None,
        retry: RetryPolicy = RetryPolicy(),
        long_poll_seconds: float = 25.0,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
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
        self._client = httpx.AsyncClient(
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
    ) -> AsyncTask:
        """A task to use as `async with broker.task(...) as task:`."""
        return AsyncTask(self, purpose=purpose, ttl_seconds=ttl, heartbeat_seconds=heartbeat)

    async def run(self, flow: Flow[T]) -> T:
        """Drive one protocol flow over this client."""
        answer: Answer | None = None
        while True:
            try:
                step = flow.send(answer)
            except StopIteration as stop:
                return cast(T, stop.value)
            if isinstance(step, Pause):
                await self.sleep(step.seconds)
                answer = None
                continue
            try:
                answer = await self._send(step)
            except httpx.TransportError as exc:
                answer = exc

    async def _send(self, call: Call) -> httpx.Response:
        # The provider may fetch a fresh token over HTTP (GitHub Actions): off the event loop.
        token = await asyncio.to_thread(self._token_provider)
        return await self._client.request(
            call.method,
            call.path,
            params=call.params,
            json=call.json,
            headers={**call.headers, "Authorization": f"Bearer {token}"},
            timeout=call.timeout,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> AsyncBroker:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()


class AsyncTask:
    """One task on the event loop: heartbeats from an asyncio task, completed on exit."""

    def __init__(
        self,
        broker: AsyncBroker,
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
        self.ended_by_broker: str | None = None
        self._heartbeat: asyncio.Task[None] | None = None

    async def open(self) -> AsyncTask:
        """Open the task on the broker and start its heartbeat."""
        if self.task_id is not None:
            return self
        self.view = await self.broker.run(
            open_task(
                purpose=self.purpose,
                ttl_seconds=self.ttl_seconds,
                heartbeat_seconds=self.heartbeat_seconds,
                retry=self.broker.retry,
            )
        )
        self.task_id = str(self.view["task_id"])
        if self.heartbeat_seconds is not None:
            self._heartbeat = asyncio.create_task(
                self._beat_forever(self.task_id, heartbeat_pace(self.heartbeat_seconds)),
                name=f"jitbroker-heartbeat-{self.task_id}",
            )
        return self

    async def credential(
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
        wait = ApprovalWait(
            wait=wait_for_approval,
            timeout_seconds=approval_timeout,
            long_poll_seconds=self.broker.long_poll_seconds,
            on_status=on_status,
        )
        credential = await self.broker.run(
            obtain_credential(
                self._open_id(),
                request,
                wait=wait,
                retry=self.broker.retry,
                clock=self.broker.clock,
            )
        )
        self.credentials.append(credential)
        return credential

    async def wait_for_grant(
        self,
        grant_id: str,
        *,
        timeout: float = DEFAULT_APPROVAL_TIMEOUT_SECONDS,
        on_status: Callable[[ApprovalStatus], None] | None = None,
    ) -> Credential:
        """Wait for a grant that raised `ApprovalRequired`, then issue it."""
        self._open_id()
        wait = ApprovalWait(
            timeout_seconds=timeout,
            long_poll_seconds=self.broker.long_poll_seconds,
            on_status=on_status,
        )
        credential = await self.broker.run(
            await_grant(grant_id, wait=wait, retry=self.broker.retry, clock=self.broker.clock)
        )
        self.credentials.append(credential)
        return credential

    async def complete(self) -> Completion:
        """Stop the heartbeat and complete the task; returns once revocation is confirmed."""
        task_id = self._open_id()
        await self._stop_heartbeat()
        self.completion = await self.broker.run(complete_task(task_id, self.broker.retry))
        return self.completion

    async def __aenter__(self) -> AsyncTask:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.task_id is None or self.completion is not None:
            return
        try:
            await self.complete()
        except BrokerError as error:
            if exc is None:
                raise
            log.error("task %s could not be completed: %s", self.task_id, error.message)

    def _open_id(self) -> str:
        if self.task_id is None:
            raise BrokerError("the task is not open: use `async with broker.task(...)` or .open()")
        return self.task_id

    async def _stop_heartbeat(self) -> None:
        if self._heartbeat is None:
            return
        heartbeat, self._heartbeat = self._heartbeat, None
        heartbeat.cancel()
        try:
            await heartbeat
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # the caller itself is being cancelled, not only the heartbeat
        except Exception:  # a broken heartbeat must not keep the task from completing
            log.exception("heartbeat of task %s failed", self.task_id)

    async def _beat_forever(self, task_id: str, pace: float) -> None:
        while True:
            await asyncio.sleep(pace)
            try:
                await self.broker.run(send_heartbeat(task_id))
            except BrokerError as exc:
                if exc.status in TASK_ENDED_STATUSES:
                    self.ended_by_broker = exc.message
                    log.error("task %s ended on the broker: %s", task_id, exc.message)
                    return
                log.warning("heartbeat of task %s failed: %s", task_id, exc.message)

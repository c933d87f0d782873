"""Fixtures: the scripted API, a recorded backoff instead of sleeping, a hand-moved clock."""

from __future__ import annotations

import httpx
import pytest
from tests.unit.client.scripted_api import FakeClock, ScriptedApi

from jitbroker.client import AsyncBroker, Broker, RetryPolicy


@pytest.fixture
def api() -> ScriptedApi:
    return ScriptedApi()


@pytest.fixture
def sleeps() -> list[float]:
    """Every backoff the client asked for, instead of sleeping."""
    return []


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def broker(api: ScriptedApi, sleeps: list[float], clock: FakeClock) -> Broker:
    return Broker(
        "http://broker.test",
        token="workload-jwt",
        transport=httpx.MockTransport(api.handle),
        sleep=sleeps.append,
        clock=clock,
        retry=RetryPolicy(attempts=4, first_delay=0.5, max_delay=4.0),
    )


@pytest.fixture
def async_broker(api: ScriptedApi, sleeps: list[float], clock: FakeClock) -> AsyncBroker:
    async def record(seconds: float) -> None:
        sleeps.append(seconds)

    return AsyncBroker(
        "http://broker.test",
        token="workload-jwt",
        transport=httpx.MockTransport(api.handle),
        sleep=record,
        clock=clock,
        retry=RetryPolicy(attempts=4, first_delay=0.5, max_delay=4.0),
    )

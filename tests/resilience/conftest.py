"""The resilience suite runs in a pytest session of its own (`make test-resilience`): the real
stack of tests/real_stack.py, but on a redis-server this suite starts, kills and restarts, and
with scheduler processes it may kill."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from jitbroker.bootstrap import Broker
from jitbroker.config import Settings
from jitbroker.vault import VaultClient
from tests.integration.support import ROOT_TOKEN, free_port
from tests.real_stack import process_env
from tests.resilience.support import (
    Aftermath,
    OpenBaoPause,
    RedisServer,
    SchedulerFleet,
    database_leases,
)

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse to share a session: the stack fixtures would point other tests at our Redis."""
    outside = [item.nodeid for item in items if HERE not in item.path.parents]
    if outside and len(outside) < len(items):
        raise pytest.UsageError(
            "tests/resilience runs in a pytest session of its own (make test-resilience); "
            f"run {outside[0]} and the others separately"
        )


@pytest.fixture(scope="session")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """The broker's state and queue Redis for this session, AOF on, killed and restarted at will."""
    server = RedisServer(tmp_path_factory.mktemp("redis-data"), free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def settings(settings: Settings, own_redis: RedisServer) -> Settings:
    """The real stack's settings, with state and Celery queue on the suite's own Redis."""
    return settings.model_copy(
        update={"redis_url": own_redis.url(0), "celery_broker_url": own_redis.url(1)}
    )


@pytest.fixture(scope="session")
def scheduler(
    settings: Settings, demo_openbao: VaultClient, logs_dir: Path
) -> Iterator[SchedulerFleet]:
    """Scheduler processes this suite may kill, pause and add to; one runs between tests."""
    fleet = SchedulerFleet(process_env(settings), logs_dir)
    fleet.start()
    yield fleet
    fleet.stop_all()


@pytest.fixture
def schedulers(scheduler: SchedulerFleet, broker: Broker) -> Iterator[SchedulerFleet]:
    yield scheduler
    scheduler.restore()


@pytest.fixture
def openbao(openbao_process: subprocess.Popen[bytes]) -> Iterator[OpenBaoPause]:
    pause = OpenBaoPause(openbao_process)
    yield pause
    pause.resume()


@pytest.fixture
def root_vault(openbao_addr: str) -> VaultClient:
    return VaultClient(openbao_addr, ROOT_TOKEN)


@pytest.fixture
def aftermath(
    broker: Broker,
    settings: Settings,
    root_vault: VaultClient,
    logs_dir: Path,
    own_redis: RedisServer,
    openbao: OpenBaoPause,
) -> Aftermath:
    """The end-of-scenario check; the database leases already there are not this scenario's."""
    return Aftermath(
        broker=broker,
        settings=settings,
        root=root_vault,
        logs_dir=logs_dir,
        leases_before=database_leases(root_vault),
        extra_files=own_redis.data_files,
    )

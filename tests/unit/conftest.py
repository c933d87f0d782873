"""Shared fixtures: write a configuration directory into tmp_path and load it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from tests.unit.fakes import (
    PIPELINE,
    READ_REQUEST,
    FakeEngine,
    memory_broker,
    write_demo_config,
)

from jitbroker.app import create_app
from jitbroker.audit.events import RequestContext
from jitbroker.bootstrap import Broker
from jitbroker.config import BrokerConfig, load_config
from jitbroker.grants import service as grants
from jitbroker.grants.schemas import GrantRecord
from jitbroker.identity.dev_issuer import DevIssuer
from jitbroker.revocation.queue import InMemoryRevocationQueue
from jitbroker.tasks import service as tasks

ConfigFiles = dict[str, Any]


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[ConfigFiles], Path]:
    """Write `{file name: YAML document, or raw text}` into a fresh directory; return it."""
    directory = tmp_path / "config"
    directory.mkdir()

    def write(files: ConfigFiles) -> Path:
        for name, content in files.items():
            text = content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False)
            (directory / name).write_text(text, encoding="utf-8")
        return directory

    return write


@pytest.fixture
def make_config(
    write_config: Callable[[ConfigFiles], Path],
) -> Callable[[ConfigFiles], BrokerConfig]:
    """Write a configuration directory and return `load_config` of it."""

    def make(files: ConfigFiles) -> BrokerConfig:
        return load_config(write_config(files))

    return make


@pytest.fixture
def demo_config_dir(tmp_path: Path) -> Path:
    """Test issuers and workloads with the demo profiles and policy."""
    directory = tmp_path / "demo-config"
    directory.mkdir()
    return write_demo_config(directory)


@pytest.fixture
def wired(demo_config_dir: Path) -> tuple[Broker, FakeEngine, InMemoryRevocationQueue]:
    return memory_broker(demo_config_dir)


@pytest.fixture
def broker(wired: tuple[Broker, FakeEngine, InMemoryRevocationQueue]) -> Broker:
    return wired[0]


@pytest.fixture
def engine(wired: tuple[Broker, FakeEngine, InMemoryRevocationQueue]) -> FakeEngine:
    return wired[1]


@pytest.fixture
def queue(wired: tuple[Broker, FakeEngine, InMemoryRevocationQueue]) -> InMemoryRevocationQueue:
    return wired[2]


@pytest.fixture
def open_task_id(broker: Broker) -> str:
    task = tasks.open_task(
        broker, workload=PIPELINE, purpose="unit", ttl_seconds=600, context=RequestContext()
    )
    return task.task_id


@pytest.fixture
def issued_grant(broker: Broker, open_task_id: str) -> GrantRecord:
    outcome = grants.request_grant(
        broker,
        workload=PIPELINE,
        task_id=open_task_id,
        request=READ_REQUEST,
        idempotency_key=None,
        context=RequestContext(),
    )
    return outcome.grant


@pytest.fixture
def client(broker: Broker) -> Iterator[TestClient]:
    """The API over the memory broker; unexpected errors come back as responses, not raises."""
    with TestClient(create_app(broker=broker), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def dev_issuer(demo_config_dir: Path) -> DevIssuer:
    return DevIssuer(demo_config_dir / "keys")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def pipeline_auth(broker: Broker, dev_issuer: DevIssuer) -> dict[str, str]:
    return bearer(dev_issuer.workload_token(broker.config, "demo-pipeline"))


@pytest.fixture
def other_auth(broker: Broker, dev_issuer: DevIssuer) -> dict[str, str]:
    return bearer(dev_issuer.workload_token(broker.config, "other-pipeline"))


@pytest.fixture
def approver_auth(broker: Broker, dev_issuer: DevIssuer) -> dict[str, str]:
    return bearer(dev_issuer.human_token(broker.config, "alice"))


@pytest.fixture
def admin_auth(broker: Broker, dev_issuer: DevIssuer) -> dict[str, str]:
    return bearer(dev_issuer.human_token(broker.config, "root-admin"))

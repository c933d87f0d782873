"""Fixtures for the real stack: OpenBao dev server, Redis, PostgreSQL, a Celery worker and the
scheduler. One copy per pytest session, shared by tests/integration and tests/e2e."""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import uvicorn
from fastapi.testclient import TestClient
from pydantic import SecretStr

from jitbroker.app import create_app
from jitbroker.bootstrap import Broker, build_broker
from jitbroker.config import Settings, load_config
from jitbroker.dev.openbao import (
    DEMO_MONITOR_DSN_ENV,
    DEMO_REDIS_MONITOR_ENV,
    configure_demo_openbao,
    prepare_demo_database,
)
from jitbroker.dev.stack import bao_binary
from jitbroker.identity.dev_issuer import DevIssuer
from jitbroker.server import uvicorn_options
from jitbroker.vault import VaultClient
from jitbroker.vault_policy import render_policy
from jitbroker.worker import create_celery
from tests.integration.support import (
    FLAKY_WEBHOOK_PATH,
    POSTGRES_ADMIN,
    POSTGRES_FOR_OPENBAO,
    QUEUE_REDIS_URL,
    ROOT,
    ROOT_TOKEN,
    STATE_REDIS_URL,
    STEADY_WEBHOOK_PATH,
    WEBHOOK_SECRET,
    WEBHOOK_SECRET_ENV,
    WebhookReceiver,
    free_port,
    wait_for,
)


@pytest.fixture(scope="session")
def webhook_port() -> int:
    """Where the test webhook receiver listens; chosen before the worker reads its config."""
    return free_port()


@pytest.fixture(scope="session")
def config_dir(tmp_path_factory: pytest.TempPathFactory, webhook_port: int) -> Path:
    """The demo profiles and policy, test issuers with keys in the directory, test webhooks."""
    directory = tmp_path_factory.mktemp("config")
    for source in (ROOT / "tests/integration/config").glob("*.yaml"):
        shutil.copy(source, directory)
    (directory / "webhooks.yaml").write_text(
        f"""webhooks:
  - name: test-receiver
    url: http://127.0.0.1:{webhook_port}{STEADY_WEBHOOK_PATH}
    secret_env: {WEBHOOK_SECRET_ENV}
  - name: flaky-receiver
    url: http://127.0.0.1:{webhook_port}{FLAKY_WEBHOOK_PATH}
    secret_env: {WEBHOOK_SECRET_ENV}
    events: [break_glass.used]
"""
    )
    for name in ("profiles.yaml", "policy.yaml"):
        shutil.copy(ROOT / "examples/dev" / name, directory)
    issuer = DevIssuer(directory / "keys")
    for name in load_config(directory).issuers:
        issuer.ensure_keys(name)
    return directory


@pytest.fixture(scope="session")
def openbao_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def openbao_process(
    tmp_path_factory: pytest.TempPathFactory, openbao_port: int
) -> Iterator[subprocess.Popen[bytes]]:
    """This session's OpenBao dev server (tests that pause it signal this process only)."""
    log = (tmp_path_factory.mktemp("logs") / "openbao.log").open("wb")
    process = subprocess.Popen(
        [
            bao_binary(),
            "server",
            "-dev",
            f"-dev-root-token-id={ROOT_TOKEN}",
            f"-dev-listen-address=127.0.0.1:{openbao_port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    addr = f"http://127.0.0.1:{openbao_port}"
    wait_for(VaultClient(addr, ROOT_TOKEN).is_ready, timeout=30, what="OpenBao dev server")
    yield process
    process.send_signal(signal.SIGCONT)  # in case a test left it paused
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="session")
def openbao_addr(openbao_process: subprocess.Popen[bytes], openbao_port: int) -> str:
    return f"http://127.0.0.1:{openbao_port}"


@pytest.fixture(scope="session")
def audit_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The audit JSON-lines file every process of the stack appends to."""
    return tmp_path_factory.mktemp("audit") / "audit.jsonl"


@pytest.fixture(scope="session")
def settings(
    config_dir: Path, openbao_addr: str, audit_file: Path, broker_vault_token: str
) -> Settings:
    return Settings(
        config_dir=config_dir,
        redis_url=STATE_REDIS_URL,
        celery_broker_url=QUEUE_REDIS_URL,
        key_prefix="jbtest",
        vault_addr=openbao_addr,
        # The broker runs under the generated least-privilege policy; only the test's own set-up
        # and inspection use the root token.
        vault_token=SecretStr(broker_vault_token),
        # Short, so a paused OpenBao turns into a failed (and retried) attempt quickly.
        vault_timeout_seconds=3,
        sweep_interval_seconds=0.1,
        revocation_redelivery_seconds=5,
        complete_wait_seconds=20,
        # Frequent, so the governance tests see an overdue review acted on within a second.
        review_check_interval_seconds=0.5,
        audit_stdout=False,
        audit_file=audit_file,
        audit_checkpoint_every=5,
        signing_key_file=config_dir / "keys" / "broker-signing-key.pem",
    )


def process_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "JITBROKER_CONFIG_DIR": str(settings.config_dir),
        "JITBROKER_REDIS_URL": settings.redis_url,
        "JITBROKER_CELERY_BROKER_URL": settings.task_queue_url,
        "JITBROKER_KEY_PREFIX": settings.key_prefix,
        "JITBROKER_VAULT_ADDR": settings.vault_addr,
        "JITBROKER_VAULT_TOKEN": settings.vault_token.get_secret_value(),
        "JITBROKER_VAULT_TIMEOUT_SECONDS": str(settings.vault_timeout_seconds),
        "JITBROKER_SWEEP_INTERVAL_SECONDS": str(settings.sweep_interval_seconds),
        "JITBROKER_REVOCATION_REDELIVERY_SECONDS": str(settings.revocation_redelivery_seconds),
        "JITBROKER_REVIEW_CHECK_INTERVAL_SECONDS": str(settings.review_check_interval_seconds),
        WEBHOOK_SECRET_ENV: WEBHOOK_SECRET,
        "JITBROKER_SIGNING_KEY_FILE": str(settings.signing_key_file),
        "JITBROKER_AUDIT_FILE": str(settings.audit_file or ""),
        "JITBROKER_AUDIT_CHECKPOINT_EVERY": str(settings.audit_checkpoint_every),
        DEMO_MONITOR_DSN_ENV: POSTGRES_ADMIN,
        DEMO_REDIS_MONITOR_ENV: demo_redis_url(),
    }


@functools.cache
def demo_redis_url() -> str:
    """The admin URL of the session's ACL Redis (demo-redis); its port is chosen once."""
    return f"redis://default:demo-redis-admin@127.0.0.1:{free_port()}/0"


@pytest.fixture(scope="session")
def demo_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis of its own (not the shared 6379) whose ACL users the demo-redis profile issues."""
    admin = redis.Redis.from_url(demo_redis_url())
    options = admin.connection_pool.connection_kwargs
    log = (tmp_path_factory.mktemp("logs") / "acl-redis.log").open("wb")
    process = subprocess.Popen(
        [
            shutil.which("redis-server") or "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(options["port"]),
            "--requirepass",
            str(options["password"]),
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    wait_for(admin.ping, timeout=15, what="the ACL Redis")
    yield demo_redis_url()
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="session")
def demo_openbao(openbao_addr: str, config_dir: Path, demo_redis: str) -> Iterator[VaultClient]:
    """OpenBao configured with the demo database roles, token role and KV data (a root client).

    The dev server forgets its leases when it stops, and PostgreSQL would keep their users (each
    one a grantee in the demo table's ACL, which fills up): every lease is revoked first."""
    vault = VaultClient(openbao_addr, ROOT_TOKEN)
    prepare_demo_database(POSTGRES_ADMIN)
    configure_demo_openbao(
        vault,
        load_config(config_dir),
        postgres_url=POSTGRES_FOR_OPENBAO,
        redis_url=demo_redis,
    )
    redis.Redis.from_url(QUEUE_REDIS_URL).flushdb()
    yield vault
    for mount in ("database", "redis"):
        vault.write(f"sys/leases/revoke-prefix/{mount}", sync=True)


BROKER_POLICY = "jitbroker"


@pytest.fixture(scope="session")
def broker_vault_token(demo_openbao: VaultClient, config_dir: Path) -> str:
    """A renewable periodic token holding only the policy generated for the test profiles."""
    demo_openbao.write(
        f"sys/policies/acl/{BROKER_POLICY}", policy=render_policy(load_config(config_dir))
    )
    created = demo_openbao.write(
        "auth/token/create",
        policies=[BROKER_POLICY],
        no_default_policy=True,
        period="24h",
        renewable=True,
        display_name="jitbroker-under-test",
    )
    return str(created["auth"]["client_token"])


@pytest.fixture(scope="session")
def logs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("process-logs")


@pytest.fixture(scope="session")
def worker(settings: Settings, demo_openbao: VaultClient, logs_dir: Path) -> Iterator[None]:
    """A real Celery worker process consuming the revocation and notification queues."""
    log = (logs_dir / "worker.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "jitbroker", "worker", "--concurrency", "2"],
        env=process_env(settings),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    celery = create_celery(settings)
    wait_for(lambda: celery.control.ping(timeout=0.5), timeout=60, what="the Celery worker")
    yield
    process.terminate()
    process.wait(timeout=20)


@pytest.fixture(scope="session")
def scheduler(settings: Settings, demo_openbao: VaultClient, logs_dir: Path) -> Iterator[None]:
    """A real scheduler process sweeping the expiry ledger."""
    log = (logs_dir / "scheduler.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "jitbroker", "scheduler"],
        env=process_env(settings),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    yield
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture
def state_redis(settings: Settings) -> redis.Redis:
    client = redis.Redis.from_url(settings.redis_url)
    client.flushdb()
    if settings.audit_file is not None:
        # The chain restarts with the state, so the file starts over with it.
        settings.audit_file.unlink(missing_ok=True)
    return client


@pytest.fixture
def broker(settings: Settings, state_redis: redis.Redis, worker: None, scheduler: None) -> Broker:
    return build_broker(settings)


@pytest.fixture
def client(broker: Broker) -> Iterator[TestClient]:
    with TestClient(create_app(broker=broker)) as test_client:
        yield test_client


@pytest.fixture
def dev_issuer(config_dir: Path) -> DevIssuer:
    return DevIssuer(config_dir / "keys")


@pytest.fixture
def pipeline_auth(broker: Broker, dev_issuer: DevIssuer) -> dict[str, str]:
    token = dev_issuer.workload_token(broker.config, "demo-pipeline")
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def other_auth(broker: Broker, dev_issuer: DevIssuer) -> dict[str, str]:
    token = dev_issuer.workload_token(broker.config, "other-pipeline")
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="session")
def webhook_receiver(webhook_port: int) -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(webhook_port)
    thread = threading.Thread(target=receiver.serve_forever, daemon=True)
    thread.start()
    yield receiver
    receiver.shutdown()
    receiver.server_close()
    thread.join(timeout=5)


def in_thread_options(settings: Settings, port: int) -> dict[str, Any]:
    """`jitbroker serve`'s uvicorn options for one app object served in this process."""
    options = uvicorn_options(settings) | {"host": "127.0.0.1", "port": port}
    for process_option in ("factory", "workers"):
        options.pop(process_option)
    return options | {"log_level": "warning"}


@pytest.fixture
def live_url(broker: Broker) -> Iterator[str]:
    """The app behind a real uvicorn on a free loopback port, in a background thread."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(broker=broker), **in_thread_options(broker.settings, port))
    )
    thread = threading.Thread(target=server.run, name="uvicorn-live", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    wait_for(
        lambda: httpx.get(f"{url}/healthz", timeout=1).status_code == 200,
        timeout=20,
        what="uvicorn to answer /healthz",
    )
    yield url
    server.should_exit = True
    thread.join(timeout=10)

"""Wiring: build every client and repository once, from Settings, in one place."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import redis
from redis.asyncio import Redis as AsyncRedis

from jitbroker.audit.log import AuditLog, build_audit_log
from jitbroker.config import BrokerConfig, Settings, load_config
from jitbroker.engines.base import CredentialEngine
from jitbroker.engines.database import DatabaseEngine
from jitbroker.engines.pki import PkiEngine
from jitbroker.engines.redis_acl import RedisAclEngine
from jitbroker.engines.ssh import SshEngine
from jitbroker.engines.token import TokenEngine
from jitbroker.grants.repository import GrantRepository
from jitbroker.identity.verifier import TokenVerifier
from jitbroker.metrics import RevocationStats
from jitbroker.notifications.queue import CeleryNotificationQueue, NotificationQueue
from jitbroker.policy.engine import PolicyEngine
from jitbroker.redis_client import connect_async_redis, connect_redis
from jitbroker.revocation.ledger import ExpiryLedger
from jitbroker.revocation.queue import CeleryRevocationQueue, RevocationQueue
from jitbroker.revocation.repository import ReceiptRepository, RevocationBacklogRepository
from jitbroker.routes.repository import RouteRepository
from jitbroker.signing import BrokerSigningKey
from jitbroker.tasks.repository import TaskRepository
from jitbroker.vault import VaultClient
from jitbroker.worker import create_celery


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Broker:
    """Everything a service function needs, built once per process."""

    settings: Settings
    config: BrokerConfig
    redis: redis.Redis
    vault: VaultClient
    engines: dict[str, CredentialEngine]
    verifier: TokenVerifier
    policy: PolicyEngine
    audit: AuditLog
    tasks: TaskRepository
    grants: GrantRepository
    ledger: ExpiryLedger
    heartbeats: ExpiryLedger
    revocation_stats: RevocationStats
    signing_key: BrokerSigningKey
    routes: RouteRepository
    receipts: ReceiptRepository
    revocation_backlog: RevocationBacklogRepository
    revocations: RevocationQueue
    notifications: NotificationQueue
    clock: Callable[[], datetime] = field(default=utc_now)
    # The retiring signing key during a rotation: published, and its route fingerprints honoured.
    previous_signing_key: BrokerSigningKey | None = None
    # Opens an asyncio client on the same Redis (the API's lifespan, once per event loop); None
    # when the sync client was handed in, and then async callers fall back to the thread pool.
    open_async_redis: Callable[[], AsyncRedis] | None = None

    @property
    def signing_keys(self) -> list[BrokerSigningKey]:
        """The current signing key, then the retiring one (if a rotation is under way)."""
        previous = [self.previous_signing_key] if self.previous_signing_key else []
        return [self.signing_key, *previous]


def build_broker(
    settings: Settings,
    *,
    revocations: RevocationQueue | None = None,
    notifications: NotificationQueue | None = None,
    redis_client: redis.Redis | None = None,
    config: BrokerConfig | None = None,
) -> Broker:
    """Load the config directory and connect to Redis and OpenBao (lazily: no I/O here)."""
    config = config or load_config(settings.config_dir)
    redis_options = {"socket_timeout": 5, "socket_connect_timeout": 5, "health_check_interval": 30}
    client = redis_client or connect_redis(settings.redis_url, **redis_options)
    vault = VaultClient.from_settings(settings)
    prefix = settings.key_prefix
    ledger = ExpiryLedger(client, f"{prefix}:ledger")
    tasks = TaskRepository(client, prefix)
    backlog = RevocationBacklogRepository(client, prefix)
    signing_key = BrokerSigningKey.load_or_create(settings.signing_key_file)
    if revocations is None or notifications is None:
        celery = create_celery(settings)
        if revocations is None:
            revocations = CeleryRevocationQueue(celery)
        if notifications is None:
            notifications = CeleryNotificationQueue(celery)
    return Broker(
        settings=settings,
        config=config,
        redis=client,
        vault=vault,
        engines={
            "database": DatabaseEngine(vault),
            "token": TokenEngine(vault),
            "pki": PkiEngine(vault),
            "ssh": SshEngine(vault),
            "redis": RedisAclEngine(vault),
        },
        verifier=TokenVerifier(config),
        policy=PolicyEngine(config.rules),
        audit=build_audit_log(settings, client, signing_key=signing_key),
        tasks=tasks,
        grants=GrantRepository(client, prefix, tasks=tasks, ledger=ledger, backlog=backlog),
        ledger=ledger,
        heartbeats=ExpiryLedger(client, f"{prefix}:heartbeats"),
        revocation_stats=RevocationStats(client, f"{prefix}:stats:revocations"),
        signing_key=signing_key,
        routes=RouteRepository(client, prefix),
        receipts=ReceiptRepository(client, prefix),
        revocation_backlog=backlog,
        revocations=revocations,
        notifications=notifications,
        previous_signing_key=(
            BrokerSigningKey.load(settings.signing_previous_key_file)
            if settings.signing_previous_key_file is not None
            else None
        ),
        open_async_redis=(
            functools.partial(connect_async_redis, settings.redis_url, **redis_options)
            if redis_client is None
            else None
        ),
    )


@functools.cache
def worker_broker() -> Broker:
    """The worker process's Broker, built on first use (after fork, never at import)."""
    return build_broker(Settings())

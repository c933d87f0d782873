"""The expiry scheduler: one active sweeper (a Redis lock) drains the ledger."""

from __future__ import annotations

import logging
import secrets
import threading
import time

import redis

from jitbroker.bootstrap import Broker
from jitbroker.config_reload import watch_config
from jitbroker.errors import BrokerError
from jitbroker.inventory.schemas import ReviewEnforcement
from jitbroker.inventory.service import enforce_reviews
from jitbroker.revocation.reconciler import reconcile
from jitbroker.revocation.service import sweep_expired
from jitbroker.tasks.service import complete_silent_tasks
from jitbroker.workloads.service import revoke_grants_of_inactive_workloads

log = logging.getLogger(__name__)

# How often the active scheduler revokes grants of workloads removed from the config or suspended.
INACTIVE_WORKLOAD_CHECK_SECONDS = 60.0

# Extend the lock only if we still hold it.
RENEW_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


class SchedulerLock:
    """A Redis lock with a fencing token; held while renewed, lost if the holder stalls."""

    def __init__(self, client: redis.Redis, key: str, ttl_seconds: float) -> None:
        self._redis = client
        self.key = key
        self.ttl_ms = int(ttl_seconds * 1000)
        self.token = secrets.token_hex(16)
        self._renew = client.register_script(RENEW_LOCK)

    def hold(self) -> bool:
        """Acquire or renew; True while this process is the active scheduler."""
        if self._renew(keys=[self.key], args=[self.token, self.ttl_ms]) == 1:
            return True
        return bool(self._redis.set(self.key, self.token, nx=True, px=self.ttl_ms))

    def release(self) -> None:
        if self._redis.get(self.key) == self.token.encode():
            self._redis.delete(self.key)


def run_scheduler(broker: Broker, stop: threading.Event) -> None:
    """Sweep until `stop` is set; only the lock holder sweeps, others stand by."""
    prefix = broker.settings.key_prefix
    interval = broker.settings.sweep_interval_seconds
    lock = SchedulerLock(broker.redis, f"{prefix}:scheduler:lock", ttl_seconds=max(5 * interval, 2))
    active = False
    next_workload_check = 0.0
    next_review_check = 0.0
    next_reconcile = 0.0
    reconciling = threading.Thread()
    config_watch = threading.Thread(
        target=watch_config, args=(broker, stop), name="config-watch", daemon=True
    )
    config_watch.start()
    while not stop.is_set():
        try:
            holding = lock.hold()
            if holding != active:
                log.info("scheduler %s", "active" if holding else "standing by")
                active = holding
            if holding:
                claimed = sweep_expired(broker)
                if claimed:
                    log.info("enqueued revocation of %d due grant(s)", len(claimed))
                silent = complete_silent_tasks(broker)
                if silent:
                    log.warning("completed %d task(s) that missed a heartbeat", len(silent))
                if time.monotonic() >= next_workload_check:
                    next_workload_check = time.monotonic() + INACTIVE_WORKLOAD_CHECK_SECONDS
                    revoked = revoke_grants_of_inactive_workloads(broker)
                    if revoked.matched:
                        log.info("revoked %d grant(s) of inactive workloads", revoked.matched)
                if time.monotonic() >= next_review_check:
                    next_review_check = (
                        time.monotonic() + broker.settings.review_check_interval_seconds
                    )
                    _log_review_enforcement(enforce_reviews(broker))
                if time.monotonic() >= next_reconcile and not reconciling.is_alive():
                    # In its own thread: OpenBao lookups must not hold up expiry sweeps.
                    next_reconcile = time.monotonic() + broker.settings.reconcile_interval_seconds
                    reconciling = threading.Thread(
                        target=_reconcile_quietly, args=(broker,), name="reconciler", daemon=True
                    )
                    reconciling.start()
                broker.redis.set(f"{prefix}:scheduler:last_success", f"{time.time():.3f}")
        except (redis.RedisError, BrokerError) as exc:
            log.warning("sweep failed, retrying: %s", exc)
        stop.wait(interval)
    try:
        lock.release()
    except redis.RedisError:
        pass


def _log_review_enforcement(done: ReviewEnforcement) -> None:
    if done.suspended:
        log.warning("suspended %s: access review overdue", ", ".join(done.suspended))
    if done.retired:
        log.warning("retired %s: expires_on passed", ", ".join(done.retired))
    if done.reminded:
        log.info("access review due for %s; owners notified", ", ".join(done.reminded))


def _reconcile_quietly(broker: Broker) -> None:
    try:
        reconcile(broker)
    except Exception:  # noqa: BLE001 - the next round retries; the scheduler must keep running
        log.exception("reconciliation failed")

"""Prometheus metrics: per-process issuance metrics, cluster-wide revocation stats kept in Redis."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import redis
from prometheus_client import Counter, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from jitbroker.revocation.ledger import ExpiryLedger

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

AUTH_FAILURES = Counter("jitbroker_auth_failures_total", "Rejected bearer tokens")
GRANT_DECISIONS = Counter(
    "jitbroker_grant_decisions_total", "Policy decisions on grant requests", ["profile", "effect"]
)
GRANTS_ISSUED = Counter("jitbroker_grants_issued_total", "Credentials issued", ["profile"])
ISSUANCE_FAILURES = Counter(
    "jitbroker_issuance_failures_total", "Issuances that failed and were rolled back", ["profile"]
)
AUDIT_SINK_FAILURES = Counter(
    "jitbroker_audit_sink_failures_total",
    "Audit records a sink failed to take (redis: the record is outside the hash chain)",
    ["sink"],
)
ISSUANCE_SECONDS = Histogram(
    "jitbroker_issuance_seconds",
    "Time to issue and record a credential",
    ["profile"],
    buckets=LATENCY_BUCKETS,
)


class RevocationStats:
    """Revocation counters and latency buckets shared by every worker, kept in one Redis hash."""

    def __init__(self, client: redis.Redis, key: str) -> None:
        self._redis = client
        self.key = key

    def record_revoked(self, profile: str, outcome: str, seconds: float) -> None:
        pipe = self._redis.pipeline(transaction=False)
        pipe.hincrby(self.key, f"revoked|{profile}|{outcome}", 1)
        pipe.hincrbyfloat(self.key, f"sum|{profile}", seconds)
        pipe.hincrby(self.key, f"count|{profile}", 1)
        for bound in LATENCY_BUCKETS:
            if seconds <= bound:
                pipe.hincrby(self.key, f"bucket|{profile}|{bound}", 1)
        self._safe(pipe.execute)

    def record_failure(self, profile: str) -> None:
        self._safe(lambda: self._redis.hincrby(self.key, f"failed|{profile}", 1))

    def record_reconciled(self, profile: str, finding: str) -> None:
        """Count a reconciler finding: `orphan` (lease revoked) or `lost` (grant's lease gone)."""
        self._safe(lambda: self._redis.hincrby(self.key, f"{finding}|{profile}", 1))

    def snapshot(self) -> dict[str, float]:
        raw = self._redis.hgetall(self.key)
        return {_text(k): float(v) for k, v in raw.items()}

    @staticmethod
    def _safe(fn: Callable[[], object]) -> None:
        try:
            fn()
        except redis.RedisError:
            pass  # metrics never fail a revocation


class BrokerStateCollector(Collector):
    """Exposes the Redis-held revocation stats, the number of live grants and, per profile, the
    revocations that keep failing."""

    def __init__(
        self,
        stats: RevocationStats,
        ledger: ExpiryLedger,
        failing: Callable[[], dict[str, int]] = dict,
    ) -> None:
        self._stats = stats
        self._ledger = ledger
        self._failing = failing

    def collect(self) -> Iterator[Metric]:
        try:
            snapshot = self._stats.snapshot()
            live = self._ledger.size()
            failing_now = self._failing()
        except Exception:  # noqa: BLE001 - a scrape must not fail because Redis is down
            return
        revoked = CounterMetricFamily(
            "jitbroker_grants_revoked",
            "Grants revoked, cluster-wide",
            labels=["profile", "outcome"],
        )
        failed = CounterMetricFamily(
            "jitbroker_revocation_failures",
            "Failed revocation attempts, cluster-wide",
            labels=["profile"],
        )
        latency = HistogramMetricFamily(
            "jitbroker_revocation_seconds", "Revocation latency, cluster-wide", labels=["profile"]
        )
        orphans = CounterMetricFamily(
            "jitbroker_reconcile_orphans_revoked",
            "OpenBao leases no grant held, revoked by the reconciler",
            labels=["profile"],
        )
        lost = CounterMetricFamily(
            "jitbroker_reconcile_lost_leases",
            "Live grants whose lease OpenBao no longer knew, found by the reconciler",
            labels=["profile"],
        )
        failing = GaugeMetricFamily(
            "jitbroker_revocations_failing",
            "Revocations that failed at least once and are still being retried",
            labels=["profile"],
        )
        for profile_id, size in sorted(failing_now.items()):
            failing.add_metric([profile_id], size)
        profiles: set[str] = set()
        for field, value in snapshot.items():
            kind, _, rest = field.partition("|")
            if kind == "revoked":
                profile, _, outcome = rest.partition("|")
                revoked.add_metric([profile, outcome], value)
            elif kind == "failed":
                failed.add_metric([rest], value)
            elif kind == "orphan":
                orphans.add_metric([rest], value)
            elif kind == "lost":
                lost.add_metric([rest], value)
            elif kind == "count":
                profiles.add(rest)
        for profile in sorted(profiles):
            buckets = [
                (str(b), snapshot.get(f"bucket|{profile}|{b}", 0.0)) for b in LATENCY_BUCKETS
            ]
            count = snapshot[f"count|{profile}"]
            buckets.append(("+Inf", count))
            latency.add_metric([profile], buckets, snapshot.get(f"sum|{profile}", 0.0))
        yield revoked
        yield failed
        yield latency
        yield orphans
        yield lost
        yield failing
        yield GaugeMetricFamily(
            "jitbroker_live_grants", "Grants on the expiry ledger (not yet confirmed revoked)", live
        )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

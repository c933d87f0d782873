"""Per-workload request rate limit: one fixed one-minute window per workload id in Redis."""

from __future__ import annotations

import logging
import math

import redis

from jitbroker.bootstrap import Broker
from jitbroker.errors import RateLimited
from jitbroker.identity.schemas import Principal, WorkloadIdentity

log = logging.getLogger(__name__)
WINDOW_MS = 60_000

# Count this request in the current window; start the window on its first request.
# Returns {count, milliseconds until the window closes}.
_FIXED_WINDOW = """
local count = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {count, ttl}
"""


def rate_limit_key(prefix: str, workload_id: str) -> str:
    """The Redis key counting one workload's requests in the current window."""
    return f"{prefix}:ratelimit:{workload_id}"


def enforce_rate_limit(broker: Broker, principal: Principal) -> None:
    """Raise RateLimited (429 + Retry-After) once a workload exceeds its per-minute budget."""
    limit = broker.settings.rate_limit_per_minute
    if limit <= 0 or not isinstance(principal, WorkloadIdentity):
        return
    key = rate_limit_key(broker.settings.key_prefix, principal.workload_id)
    try:
        count, ttl_ms = broker.redis.eval(_FIXED_WINDOW, 1, key, WINDOW_MS)
    except redis.RedisError:
        # Availability guard, not an access control: without Redis the request fails later anyway.
        log.warning("rate limiter unavailable; request of %s not counted", principal.workload_id)
        return
    if int(count) > limit:
        retry_after = max(1, math.ceil(int(ttl_ms) / 1000))
        raise RateLimited(
            f"workload {principal.workload_id!r} exceeded {limit} requests per minute",
            retry_after=retry_after,
        )

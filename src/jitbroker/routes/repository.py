"""The only code that touches Redis for routes: a hash per open route, a fingerprint index."""

from __future__ import annotations

import redis
import redis.asyncio
import redis.client

from jitbroker.errors import StateUnavailable
from jitbroker.routes.schemas import Route

# The gateway check's read in one round trip: the first fingerprint (current signing key, then
# the retiring one) that names a grant, and that grant's route document (false if closed).
# KEYS: fingerprint keys; ARGV[1]: the route key prefix.
_HELD_ROUTE = """
for _, key in ipairs(KEYS) do
  local grant_id = redis.call('GET', key)
  if grant_id then
    return {grant_id, redis.call('HGET', ARGV[1] .. grant_id, 'doc')}
  end
end
return false
"""

HeldRoute = tuple[str, Route | None]


def route_key(prefix: str, grant_id: str) -> str:
    return f"{prefix}:route:{grant_id}"


def fingerprint_key(prefix: str, fingerprint: str) -> str:
    return f"{prefix}:route:fp:{fingerprint}"


class RouteRepository:
    """Both keys expire with the grant, so a route can never outlive it even if nobody closes it."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._redis = client
        self._prefix = prefix
        self._held_route = client.register_script(_HELD_ROUTE)

    def _route_key(self, grant_id: str) -> str:
        return route_key(self._prefix, grant_id)

    def _fingerprint_key(self, fingerprint: str) -> str:
        return fingerprint_key(self._prefix, fingerprint)

    def open(
        self, route: Route, fingerprint: str, *, pipe: redis.client.Pipeline | None = None
    ) -> None:
        """Open `route`; with `pipe`, only queue its writes there (the caller executes them,
        e.g. in the transaction that records the grant)."""
        if pipe is not None:
            self._queue_open(route, fingerprint, pipe)
            return
        try:
            own = self._redis.pipeline(transaction=True)
            self._queue_open(route, fingerprint, own)
            own.execute()
        except redis.RedisError as exc:
            raise StateUnavailable(f"cannot open route: {type(exc).__name__}") from None

    def _queue_open(self, route: Route, fingerprint: str, pipe: redis.client.Pipeline) -> None:
        expire_ms = int(route.expires_at.timestamp() * 1000)
        pipe.hset(
            self._route_key(route.grant_id),
            mapping={"doc": route.model_dump_json(), "fingerprint": fingerprint},
        )
        pipe.pexpireat(self._route_key(route.grant_id), expire_ms)
        pipe.set(self._fingerprint_key(fingerprint), route.grant_id, pxat=expire_ms)

    def close(self, grant_id: str) -> None:
        """Delete the route and its fingerprint index; closing a closed route is fine."""
        try:
            fingerprint = self._redis.hget(self._route_key(grant_id), "fingerprint")
            pipe = self._redis.pipeline(transaction=True)
            pipe.delete(self._route_key(grant_id))
            if fingerprint:
                pipe.delete(self._fingerprint_key(_text(fingerprint)))
            pipe.execute()
        except redis.RedisError as exc:
            raise StateUnavailable(f"cannot close route: {type(exc).__name__}") from None

    def get(self, grant_id: str) -> Route | None:
        try:
            doc = self._redis.hget(self._route_key(grant_id), "doc")
        except redis.RedisError as exc:
            raise StateUnavailable(f"cannot read route: {type(exc).__name__}") from None
        return Route.model_validate_json(doc) if doc else None

    def held_route(self, fingerprints: list[str]) -> HeldRoute | None:
        """The grant the first known fingerprint names and its route (None once closed), in one
        round trip; None if no fingerprint is known."""
        keys = [self._fingerprint_key(f) for f in fingerprints]
        try:
            found = self._held_route(keys=keys, args=[route_key(self._prefix, "")])
        except redis.RedisError as exc:
            raise StateUnavailable(f"cannot read route: {type(exc).__name__}") from None
        return _held(found)


class AsyncRouteReader:
    """The gateway check's reads of the same keys, on an asyncio client (no thread-pool hop)."""

    def __init__(self, client: redis.asyncio.Redis, prefix: str) -> None:
        self._redis = client
        self._prefix = prefix
        self._held_route = client.register_script(_HELD_ROUTE)

    async def get(self, grant_id: str) -> Route | None:
        try:
            doc = await self._redis.hget(route_key(self._prefix, grant_id), "doc")
        except redis.RedisError as exc:
            raise StateUnavailable(f"cannot read route: {type(exc).__name__}") from None
        return Route.model_validate_json(doc) if doc else None

    async def held_route(self, fingerprints: list[str]) -> HeldRoute | None:
        """`RouteRepository.held_route` on the asyncio client."""
        keys = [fingerprint_key(self._prefix, f) for f in fingerprints]
        try:
            found = await self._held_route(keys=keys, args=[route_key(self._prefix, "")])
        except redis.RedisError as exc:
            raise StateUnavailable(f"cannot read route: {type(exc).__name__}") from None
        return _held(found)

    async def close(self) -> None:
        await self._redis.aclose()


def _held(found: list[bytes | str | None] | None) -> HeldRoute | None:
    if not found or not found[0]:
        return None
    doc = found[1] if len(found) > 1 else None
    return _text(found[0]), Route.model_validate_json(doc) if doc else None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

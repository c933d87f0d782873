"""Optional single-use tokens: refuse a second use of a `jti` for issuers with `single_use_jti`."""

from __future__ import annotations

import hashlib
import time

import redis

from jitbroker.bootstrap import Broker
from jitbroker.errors import StateUnavailable, Unauthenticated
from jitbroker.identity.schemas import Principal


def jti_key(prefix: str, issuer: str, jti: str) -> str:
    """The Redis key marking a `jti` as used (hashed: a `jti` is caller-chosen and unbounded)."""
    digest = hashlib.sha256(jti.encode("utf-8", "replace")).hexdigest()
    return f"{prefix}:jti:{issuer}:{digest}"


def refuse_replayed_jti(broker: Broker, principal: Principal) -> None:
    """Record this token's `jti` until it expires; raise Unauthenticated if it was seen already."""
    issuer = broker.config.issuers.get(principal.issuer)
    if issuer is None or not issuer.single_use_jti:
        return
    if not principal.jti:
        raise Unauthenticated("this issuer requires single-use tokens with a 'jti' claim")
    now = int(time.time())
    # Remember it for as long as the verifier would still accept the token (exp + leeway).
    expires_at = (principal.expires_at or now) + issuer.leeway_seconds
    ttl = max(1, expires_at - now)
    key = jti_key(broker.settings.key_prefix, principal.issuer, principal.jti)
    try:
        first_use = broker.redis.set(key, "1", nx=True, ex=ttl)
    except redis.RedisError:
        # Fail closed: a single-use promise we cannot check is not kept by accepting the token.
        raise StateUnavailable("could not record the token's jti; try again") from None
    if not first_use:
        raise Unauthenticated("token has already been used (jti replay) and is single-use")

"""Open a route when a grant is issued, close it the moment revocation starts, answer gateways."""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import posixpath
import re

from jitbroker.bootstrap import Broker
from jitbroker.engines.base import IssuedCredential
from jitbroker.grants.schemas import GrantRecord, GrantState
from jitbroker.routes.repository import AsyncRouteReader, HeldRoute
from jitbroker.routes.schemas import AccessCheck, AccessDecision, Route
from jitbroker.signing import BrokerSigningKey


def credential_fingerprint(
    broker: Broker, secret: str, *, key: BrokerSigningKey | None = None
) -> str:
    """A keyed hash that finds a grant from a presented credential without storing the secret."""
    derived = (key or broker.signing_key).derive("route-fingerprint")
    return hmac.new(derived, secret.encode(), hashlib.sha256).hexdigest()


def route_of(
    broker: Broker, *, grant: GrantRecord, credential: IssuedCredential
) -> tuple[Route, str]:
    """The route an issued grant opens, and its credential's fingerprint."""
    assert grant.expires_at is not None
    profile = broker.config.profiles[grant.profile]
    route = Route(
        grant_id=grant.grant_id,
        workload=grant.workload,
        task_id=grant.task_id,
        profile=grant.profile,
        destinations=profile.route_patterns(),
        expires_at=grant.expires_at,
    )
    return route, credential_fingerprint(broker, credential.route_credential())


def open_route(broker: Broker, *, grant: GrantRecord, credential: IssuedCredential) -> None:
    """Let gateways admit this grant to its profile's destinations until it expires (for a grant
    already recorded; a new grant opens its route in the transaction that records it)."""
    route, fingerprint = route_of(broker, grant=grant, credential=credential)
    broker.routes.open(route, fingerprint)
    # A revocation that finished while the route was being opened must not leave it open.
    current = broker.grants.get(grant.grant_id)
    if current is None or current.state != GrantState.issued:
        broker.routes.close(route.grant_id)


def close_route(broker: Broker, *, grant_id: str) -> None:
    """Gateways deny this grant from now on (called before OpenBao is even asked to revoke)."""
    broker.routes.close(grant_id)


HOST_SHAPE = re.compile(r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?$")


def normalised_destination(scheme: str, host: str, raw_path: str) -> str | None:
    """`scheme://host/path` without query or fragment; None for paths a backend could reinterpret
    (dot segments, encoded slashes or dots, backslashes) or hosts that are not plain names."""
    path = raw_path.split("?", 1)[0].split("#", 1)[0] or "/"
    lowered = path.lower()
    if scheme not in ("http", "https") or not HOST_SHAPE.match(host):
        return None
    if any(bad in lowered for bad in ("%2f", "%2e", "%5c", "\\", "//")) or not path.startswith("/"):
        return None
    if posixpath.normpath(path) != path.rstrip("/") and path != "/":
        return None
    return f"{scheme}://{host.lower()}{path}"[:2048]


def check_access(broker: Broker, *, check: AccessCheck) -> AccessDecision:
    """Allow only a live grant with an open route whose destinations match; deny anything else."""
    if check.credential is not None:
        held = broker.routes.held_route(_fingerprints(broker, check.credential))
        return _decide_held(broker, check, held)
    assert check.grant_id is not None
    return _decide(broker, check.grant_id, broker.routes.get(check.grant_id), check.destination)


async def check_access_async(
    broker: Broker, *, check: AccessCheck, routes: AsyncRouteReader
) -> AccessDecision:
    """`check_access` with the route reads on an asyncio Redis client: same answers."""
    if check.credential is not None:
        held = await routes.held_route(_fingerprints(broker, check.credential))
        return _decide_held(broker, check, held)
    assert check.grant_id is not None
    return _decide(broker, check.grant_id, await routes.get(check.grant_id), check.destination)


def _fingerprints(broker: Broker, credential: str) -> list[str]:
    """The credential's fingerprint under the current key, then under the retiring one (routes
    opened before a signing-key rotation carry the retiring key's fingerprint)."""
    return [credential_fingerprint(broker, credential, key=key) for key in broker.signing_keys]


def _decide_held(broker: Broker, check: AccessCheck, held: HeldRoute | None) -> AccessDecision:
    holder, route = held if held is not None else (None, None)
    if (refusal := _refuse_holder(check, holder)) is not None:
        return refusal
    assert holder is not None
    return _decide(broker, holder, route, check.destination)


def _refuse_holder(check: AccessCheck, holder: str | None) -> AccessDecision | None:
    if holder is None:
        return AccessDecision(allow=False, reason="credential is not known or no longer live")
    if check.grant_id is not None and check.grant_id != holder:
        return AccessDecision(allow=False, reason="the credential belongs to another grant")
    return None


def _decide(broker: Broker, grant_id: str, route: Route | None, destination: str) -> AccessDecision:
    if route is None:
        return AccessDecision(allow=False, reason="no open route for this grant", grant_id=grant_id)
    now = broker.clock()
    if route.expires_at <= now:
        return AccessDecision(allow=False, reason="the grant has expired", grant_id=grant_id)
    if not any(fnmatch.fnmatchcase(destination, p) for p in route.destinations):
        return AccessDecision(
            allow=False, reason="the grant does not cover this destination", grant_id=grant_id
        )
    # The route is closed before a revocation starts, so an open route means a live grant.
    return AccessDecision(
        allow=True,
        reason="live grant with an open route",
        grant_id=grant_id,
        workload=route.workload,
        expires_in_seconds=int((route.expires_at - now).total_seconds()),
    )

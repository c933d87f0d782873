"""Token verification: exact issuer, pinned algorithms, JWKS keys, required claims, binding."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from jitbroker.config import BrokerConfig, IssuerConfig, WorkloadConfig
from jitbroker.errors import Unauthenticated
from jitbroker.identity.jwks import FileKeySet, KeySet, RemoteKeySet
from jitbroker.identity.schemas import HumanIdentity, Principal, WorkloadIdentity

MAX_TOKEN_BYTES = 8 * 1024
REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "sub"]
KEY_FAMILIES = {"RSA": ("RS", "PS"), "EC": ("ES",), "OKP": ("EdDSA",)}
# Workloads present the same token on every call of a run: remember what verified, bounded.
VERIFIED_CACHE_SIZE = 1024
VERIFIED_CACHE_SECONDS = 60.0

_REASONS: list[tuple[type[Exception], str]] = [
    (jwt.ExpiredSignatureError, "token has expired"),
    (jwt.ImmatureSignatureError, "token is not yet valid (nbf or iat is in the future)"),
    (jwt.InvalidAudienceError, "token audience is not accepted by this broker"),
    (jwt.InvalidIssuerError, "token issuer does not match"),
    (jwt.InvalidSignatureError, "token signature verification failed"),
    (jwt.InvalidAlgorithmError, "token algorithm is not allowed for this issuer"),
    (jwt.DecodeError, "token is malformed"),
]


@dataclass(frozen=True)
class _Verified:
    """A token that verified: its principal, the key that verified it, and until when."""

    principal: Principal
    key_set: str
    kid: str | None
    key: jwt.PyJWK
    verified_at: float
    valid_until: float


def _digest(token: str) -> bytes | None:
    """The SHA-256 the verifier remembers a token by (never the token), or None if oversized."""
    encoded = token.encode("utf-8", "replace")
    return None if len(encoded) > MAX_TOKEN_BYTES else hashlib.sha256(encoded).digest()


def key_set_for(issuer: IssuerConfig) -> KeySet:
    """The key source an issuer's configuration asks for."""
    if issuer.jwks_file is not None:
        return FileKeySet(issuer.jwks_file)
    assert issuer.jwks_url is not None
    return RemoteKeySet(
        issuer.jwks_url,
        cache_seconds=issuer.jwks_cache_seconds,
        min_refresh_seconds=issuer.jwks_min_refresh_seconds,
    )


class TokenVerifier:
    """Verifies bearer tokens of the configured issuers and binds them to a principal."""

    def __init__(self, config: BrokerConfig, key_sets: Mapping[str, KeySet] | None = None) -> None:
        self._issuers_by_iss = {i.issuer: i for i in config.issuers.values()}
        self._key_sets = dict(key_sets or {})
        for issuer in config.issuers.values():
            self._key_sets.setdefault(issuer.name, key_set_for(issuer))
        self._workloads: dict[tuple[str, str], list[WorkloadConfig]] = {}
        for workload in config.workloads.values():
            self._workloads.setdefault((workload.issuer, workload.subject), []).append(workload)
        # Keyed by the token's sha256, so the cache does not hold bearer tokens.
        self._verified: OrderedDict[bytes, _Verified] = OrderedDict()
        self._verified_lock = threading.Lock()

    def verify(self, token: str) -> Principal:
        """Verify `token`; raise Unauthenticated with a reason (never the token itself)."""
        digest = _digest(token)
        if digest is None:
            raise Unauthenticated(f"token is larger than {MAX_TOKEN_BYTES} bytes")
        remembered = self._recall(digest, without_io=False)
        if remembered is not None:
            return remembered
        issuer, header = self._issuer_and_header(token)
        key = self._signing_key(issuer, header)
        claims = self._verified_claims(token, issuer, header, key)
        principal = _human(issuer, claims) if issuer.human else self._bind_workload(issuer, claims)
        self._remember(digest, issuer, header, key, claims, principal)
        return principal

    def remembered(self, token: str) -> Principal | None:
        """The principal of `token` if `verify` would answer it from memory without any I/O or
        waiting on a lock (safe on an event loop), else None: then call `verify`."""
        digest = _digest(token)
        return None if digest is None else self._recall(digest, without_io=True)

    def _recall(self, digest: bytes, *, without_io: bool) -> Principal | None:
        """The principal of a token verified before, if nothing it relied on has changed: not
        expired (the same comparison as at verification), the same key object still in the key
        set (any refresh or rotation of the key set forces a full verification), and the clock has
        not gone back. `without_io` asks the key set only what it knows without I/O; its None
        may just mean "ask `verify`", so the entry is kept."""
        with self._verified_lock:
            entry = self._verified.get(digest)
        if entry is None:
            return None
        key_set = self._key_sets[entry.key_set]
        lookup = key_set.known_key if without_io else key_set.key
        if not entry.verified_at <= time.time() < entry.valid_until or (
            lookup(entry.kid) is not entry.key
        ):
            if not without_io:
                with self._verified_lock:
                    self._verified.pop(digest, None)
            return None
        with self._verified_lock:
            if digest in self._verified:
                self._verified.move_to_end(digest)
        return entry.principal

    def _remember(
        self,
        digest: bytes,
        issuer: IssuerConfig,
        header: dict[str, Any],
        key: jwt.PyJWK,
        claims: dict[str, Any],
        principal: Principal,
    ) -> None:
        now = time.time()
        # PyJWT refuses once exp <= now - leeway; remember it only while that is not so.
        valid_until = min(int(claims["exp"]) + issuer.leeway_seconds, now + VERIFIED_CACHE_SECONDS)
        entry = _Verified(principal, issuer.name, header.get("kid"), key, now, valid_until)
        with self._verified_lock:
            self._verified[digest] = entry
            self._verified.move_to_end(digest)
            while len(self._verified) > VERIFIED_CACHE_SIZE:
                self._verified.popitem(last=False)

    def _issuer_and_header(self, token: str) -> tuple[IssuerConfig, dict[str, Any]]:
        try:
            # One parse for both the header and the unverified claims.
            decoded = jwt.decode_complete(token, options={"verify_signature": False})
        except jwt.InvalidTokenError:
            raise Unauthenticated("token is malformed") from None
        header: dict[str, Any] = decoded["header"]
        unverified = decoded["payload"]
        iss = unverified.get("iss") if isinstance(unverified, dict) else None
        if not isinstance(iss, str):
            raise Unauthenticated("token has no 'iss' claim")
        issuer = self._issuers_by_iss.get(iss)
        if issuer is None:
            raise Unauthenticated("token issuer is not trusted")
        if "crit" in header:
            raise Unauthenticated(
                "token has a critical header extension this broker does not support"
            )
        alg = header.get("alg")
        if alg not in issuer.algorithms:
            raise Unauthenticated(
                f"token algorithm {str(alg)[:16]!r} is not allowed for this issuer"
            )
        return issuer, header

    def _signing_key(self, issuer: IssuerConfig, header: dict[str, Any]) -> jwt.PyJWK:
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise Unauthenticated("token 'kid' header must be a string")
        # jku/x5u/jwk/x5c headers are ignored on purpose: keys only come from the issuer's JWKS.
        key = self._key_sets[issuer.name].key(kid)
        if key is None or key.key_type is None:
            raise Unauthenticated("token signing key is not in the issuer's key set")
        alg = str(header["alg"])
        if not alg.startswith(KEY_FAMILIES.get(key.key_type, ())):
            raise Unauthenticated("token algorithm does not match the signing key type")
        jwk_alg = getattr(key, "_jwk_data", {}).get("alg")
        if jwk_alg is not None and jwk_alg != alg:
            raise Unauthenticated("token algorithm does not match the signing key")
        return key

    def _verified_claims(
        self, token: str, issuer: IssuerConfig, header: dict[str, Any], key: jwt.PyJWK
    ) -> dict[str, Any]:
        alg = str(header["alg"])
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=issuer.audiences,
                issuer=issuer.issuer,
                leeway=issuer.leeway_seconds,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthenticated(f"token is missing the required claim {exc.claim!r}") from None
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(_reason(exc)) from None
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise Unauthenticated("token 'sub' claim must be a non-empty string")
        lifetime = claims["exp"] - claims["iat"]
        if lifetime > issuer.max_token_lifetime_seconds:
            raise Unauthenticated(
                f"token lifetime exceeds {issuer.max_token_lifetime_seconds}s for this issuer"
            )
        return claims

    def _bind_workload(self, issuer: IssuerConfig, claims: dict[str, Any]) -> WorkloadIdentity:
        candidates = self._workloads.get((issuer.name, claims["sub"]), [])
        matches = [
            w
            for w in candidates
            if _claims_match(w.claims, claims) and _audience_matches(w.audience, claims["aud"])
        ]
        if not matches:
            raise Unauthenticated("token subject is not bound to a registered workload")
        if len(matches) > 1:
            raise Unauthenticated("token matches more than one registered workload")
        jti = claims.get("jti")
        return WorkloadIdentity(
            workload_id=matches[0].id,
            issuer=issuer.name,
            subject=claims["sub"],
            claims=claims,
            jti=str(jti) if jti is not None else None,
            expires_at=int(claims["exp"]),
        )


def _claims_match(expected: Mapping[str, Any], claims: Mapping[str, Any]) -> bool:
    """Exact JSON match: `true` is not `1`, `"1"` is not `1`."""
    return all(
        name in claims and type(claims[name]) is type(value) and claims[name] == value
        for name, value in expected.items()
    )


def _audience_matches(expected: str | None, aud: str | list[str]) -> bool:
    if expected is None:
        return True
    return expected == aud or (isinstance(aud, list) and expected in aud)


def _human(issuer: IssuerConfig, claims: dict[str, Any]) -> HumanIdentity:
    groups = claims.get(issuer.groups_claim, [])
    if not isinstance(groups, list):
        groups = []
    email = claims.get("email")
    jti = claims.get("jti")
    return HumanIdentity(
        subject=claims["sub"],
        issuer=issuer.name,
        email=email if isinstance(email, str) else None,
        groups=tuple(str(g) for g in groups),
        jti=str(jti) if jti is not None else None,
        expires_at=int(claims["exp"]),
    )


def _reason(exc: jwt.InvalidTokenError) -> str:
    for kind, reason in _REASONS:
        if isinstance(exc, kind):
            return reason
    return "token is invalid"

"""Token verification: exact issuer, pinned algorithms, JWKS keys, required claims, binding."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jwt

from jitbroker.config import BrokerConfig, IssuerConfig, WorkloadConfig
from jitbroker.errors import Unauthenticated
from jitbroker.identity.jwks import FileKeySet, KeySet, RemoteKeySet
from jitbroker.identity.schemas import HumanIdentity, Principal, WorkloadIdentity

MAX_TOKEN_BYTES = 8 * 1024
REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "sub"]
KEY_FAMILIES = {"RSA": ("RS", "PS"), "EC": ("ES",), "OKP": ("EdDSA",)}

_REASONS: list[tuple[type[Exception], str]] = [
    (jwt.ExpiredSignatureError, "token has expired"),
    (jwt.ImmatureSignatureError, "token is not yet valid (nbf or iat is in the future)"),
    (jwt.InvalidAudienceError, "token audience is not accepted by this broker"),
    (jwt.InvalidIssuerError, "token issuer does not match"),
    (jwt.InvalidSignatureError, "token signature verification failed"),
    (jwt.InvalidAlgorithmError, "token algorithm is not allowed for this issuer"),
    (jwt.DecodeError, "token is malformed"),
]


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

    def verify(self, token: str) -> Principal:
        """Verify `token`; raise Unauthenticated with a reason (never the token itself)."""
        if len(token.encode("utf-8", "replace")) > MAX_TOKEN_BYTES:
            raise Unauthenticated(f"token is larger than {MAX_TOKEN_BYTES} bytes")
        issuer, header = self._issuer_and_header(token)
        claims = self._verified_claims(token, issuer, header)
        if issuer.human:
            return _human(issuer, claims)
        return self._bind_workload(issuer, claims)

    def _issuer_and_header(self, token: str) -> tuple[IssuerConfig, dict[str, Any]]:
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.InvalidTokenError:
            raise Unauthenticated("token is malformed") from None
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

    def _verified_claims(
        self, token: str, issuer: IssuerConfig, header: dict[str, Any]
    ) -> dict[str, Any]:
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

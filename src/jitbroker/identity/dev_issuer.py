"""The development token issuer: one ES256 key per dev issuer, a JWKS, and signed test tokens."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from jitbroker.config import BrokerConfig, IssuerConfig


class DevIssuer:
    """Keys live in `directory/<issuer>.pem`; JWKS at `directory/<issuer>.jwks.json`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def key_path(self, issuer: str) -> Path:
        return self.directory / f"{issuer}.pem"

    def jwks_path(self, issuer: str) -> Path:
        return self.directory / f"{issuer}.jwks.json"

    def ensure_keys(self, issuer: str) -> None:
        """Create the issuer's signing key and JWKS on first use; keep them afterwards."""
        if self.key_path(issuer).exists() and self.jwks_path(issuer).exists():
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        private = ec.generate_private_key(ec.SECP256R1())
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        self.key_path(issuer).write_bytes(pem)
        self.key_path(issuer).chmod(0o600)
        public_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))
        public_jwk.update({"kid": _kid(issuer), "use": "sig", "alg": "ES256"})
        self.jwks_path(issuer).write_text(json.dumps({"keys": [public_jwk]}, indent=2))

    def jwks(self, issuer: str) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.jwks_path(issuer).read_text())
        return document

    def sign(
        self,
        issuer: IssuerConfig,
        subject: str,
        *,
        ttl_seconds: int = 900,
        extra_claims: dict[str, Any] | None = None,
    ) -> str:
        """A token for `subject`, signed by the dev key of `issuer`."""
        self.ensure_keys(issuer.name)
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": issuer.issuer,
            "sub": subject,
            "aud": issuer.audiences[0],
            "iat": now,
            "nbf": now,
            "exp": now + ttl_seconds,
            "jti": uuid.uuid4().hex,
        }
        claims.update(extra_claims or {})
        key = self.key_path(issuer.name).read_bytes()
        return jwt.encode(claims, key, algorithm="ES256", headers={"kid": _kid(issuer.name)})

    def workload_token(
        self,
        config: BrokerConfig,
        workload_id: str,
        ttl_seconds: int = 900,
        extra_claims: dict[str, Any] | None = None,
    ) -> str:
        """A token that binds to `workload_id`; `extra_claims` adds e.g. an `actor`."""
        workload = config.workloads[workload_id]
        claims: dict[str, Any] = {**workload.claims, **(extra_claims or {})}
        if workload.audience:
            claims["aud"] = workload.audience
        return self.sign(
            config.issuers[workload.issuer],
            workload.subject,
            ttl_seconds=ttl_seconds,
            extra_claims=claims,
        )

    def human_token(self, config: BrokerConfig, subject: str, ttl_seconds: int = 3600) -> str:
        human = config.dev_humans[subject]
        issuer = config.issuers[human.issuer]
        extra: dict[str, Any] = {issuer.groups_claim: human.groups}
        if human.email:
            extra["email"] = human.email
        return self.sign(issuer, subject, ttl_seconds=ttl_seconds, extra_claims=extra)


def _kid(issuer: str) -> str:
    return f"dev-{issuer}-1"

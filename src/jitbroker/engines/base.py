"""The engine interface and what an issuance returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from pydantic import SecretStr

from jitbroker.config import ProfileConfig, ScopeBinding


@dataclass(frozen=True)
class IssuedCredential:
    """A fresh credential: `secret` leaves once in the response; `lease_ref` is what we keep."""

    lease_ref: str
    lease_ttl_seconds: int
    principal: str
    secret: dict[str, SecretStr] = field(repr=False)
    public: dict[str, str] = field(default_factory=dict)
    # What a holder shows a gateway when the secret is not it (a certificate), or None.
    presented: str | None = field(default=None, repr=False)

    def reveal(self) -> dict[str, str]:
        """The credential fields for the one issuing response."""
        return {**self.public, **{k: v.get_secret_value() for k, v in self.secret.items()}}

    def route_credential(self) -> str:
        """What gateways are shown for this credential: `presented`, else the first secret."""
        if self.presented is not None:
            return self.presented
        return next(iter(self.secret.values())).get_secret_value()


class CredentialEngine(Protocol):
    """One OpenBao secrets engine. Every method is safe to call again with the same arguments."""

    kind: str

    def issue(
        self,
        profile: ProfileConfig,
        binding: ScopeBinding,
        *,
        ttl_seconds: int,
        grant_id: str,
        labels: dict[str, str],
        public_key: str | None = None,
    ) -> IssuedCredential:
        """Issue a credential for exactly `ttl_seconds` (ssh: certify the caller's `public_key`)."""

    def revoke(self, lease_ref: str) -> None:
        """Revoke the credential; revoking an already revoked or expired one succeeds."""

    def is_revoked(self, lease_ref: str) -> bool:
        """True when OpenBao no longer knows the lease."""

    def list_leases(self, profile: ProfileConfig) -> list[str] | None:
        """Every lease OpenBao holds for the profile's roles; None if it cannot list cheaply."""

    def lease_issued_at(self, lease_ref: str) -> datetime | None:
        """When OpenBao issued the lease; None when it no longer knows it."""

"""OpenBao database engine: dynamic database users, lease shortened to the grant TTL."""

from __future__ import annotations

import logging
from datetime import datetime

from pydantic import SecretStr

from jitbroker.config import ProfileConfig, ScopeBinding
from jitbroker.engines.base import IssuedCredential
from jitbroker.errors import BrokerError, VaultRejected
from jitbroker.vault import VaultClient

log = logging.getLogger(__name__)


class DatabaseEngine:
    """Reads `<mount>/creds/<role>` and renews the lease down to the grant TTL."""

    kind = "database"

    def __init__(self, vault: VaultClient) -> None:
        self.vault = vault

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
        del grant_id, labels, public_key  # no metadata on these leases, no key to sign
        response = self.vault.read(f"{profile.mount}/creds/{binding.role}")
        lease_id = str(response.get("lease_id") or "")
        data = response.get("data") or {}
        if not lease_id or "username" not in data or "password" not in data:
            if lease_id:
                self._revoke_quietly(lease_id)
            raise VaultRejected(
                f"OpenBao returned no database credential for role {binding.role!r}"
            )
        try:
            # Renewing with an increment sets the lease (and the user's VALID UNTIL) to exactly
            # the grant TTL from now; the role's max TTL (the profile cap) bounds it.
            renewed = self.vault.renew_lease(lease_id, ttl_seconds)
            lease_ttl = int(renewed.get("lease_duration", 0))
            if lease_ttl <= 0 or lease_ttl > ttl_seconds:
                raise VaultRejected(
                    f"OpenBao set a {lease_ttl}s lease for role {binding.role!r}, "
                    f"expected at most {ttl_seconds}s"
                )
        except BrokerError:
            self._revoke_quietly(lease_id)
            raise
        return IssuedCredential(
            lease_ref=lease_id,
            lease_ttl_seconds=lease_ttl,
            principal=str(data["username"]),
            secret={"password": SecretStr(str(data["password"]))},
            public={"username": str(data["username"])},
        )

    def _revoke_quietly(self, lease_id: str) -> None:
        try:
            self.vault.revoke_lease(lease_id)
        except BrokerError as exc:
            # Keep the original error; the role's short initial TTL bounds this lease.
            log.error("could not revoke half-issued lease %s: %s", lease_id, exc.detail)

    def revoke(self, lease_ref: str) -> None:
        self.vault.revoke_lease(lease_ref)

    def is_revoked(self, lease_ref: str) -> bool:
        return not self.vault.lease_exists(lease_ref)

    def list_leases(self, profile: ProfileConfig) -> list[str]:
        roles = dict.fromkeys(scope.role for scope in profile.scopes)
        return [
            lease
            for role in roles
            for lease in self.vault.list_leases(f"{profile.mount}/creds/{role}")
        ]

    def lease_issued_at(self, lease_ref: str) -> datetime | None:
        return self.vault.lease_issued_at(lease_ref)

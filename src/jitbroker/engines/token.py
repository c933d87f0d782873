"""OpenBao token engine: tokens from a token role, TTL and explicit max TTL equal to the grant."""

from __future__ import annotations

from datetime import datetime

from pydantic import SecretStr

from jitbroker.config import ProfileConfig, ScopeBinding
from jitbroker.engines.base import IssuedCredential
from jitbroker.errors import VaultRejected
from jitbroker.vault import VaultClient


class TokenEngine:
    """Creates tokens with `auth/token/create/<role>`; the accessor is the lease reference."""

    kind = "token"

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
        del public_key  # a token certifies no key of the caller
        response = self.vault.write(
            f"{profile.mount}/create/{binding.role}",
            ttl=f"{ttl_seconds}s",
            explicit_max_ttl=f"{ttl_seconds}s",
            renewable=False,
            display_name=f"jitbroker-{grant_id[:12]}",
            meta={"grant_id": grant_id, **labels},
        )
        auth = response.get("auth") or {}
        token, accessor = auth.get("client_token"), auth.get("accessor")
        if not token or not accessor:
            raise VaultRejected(f"OpenBao returned no token for role {binding.role!r}")
        lease_ttl = int(auth.get("lease_duration", 0))
        if lease_ttl <= 0 or lease_ttl > ttl_seconds:
            self.vault.revoke_token_accessor(str(accessor))
            raise VaultRejected(
                f"OpenBao set a {lease_ttl}s token TTL for role {binding.role!r}, "
                f"expected at most {ttl_seconds}s"
            )
        return IssuedCredential(
            lease_ref=str(accessor),
            lease_ttl_seconds=lease_ttl,
            principal=str(accessor),
            secret={"token": SecretStr(str(token))},
            public={"accessor": str(accessor), "policies": ",".join(auth.get("policies") or [])},
        )

    def revoke(self, lease_ref: str) -> None:
        self.vault.revoke_token_accessor(lease_ref)

    def is_revoked(self, lease_ref: str) -> bool:
        return not self.vault.token_accessor_exists(lease_ref)

    def list_leases(self, profile: ProfileConfig) -> None:
        # `auth/token/accessors` lists every token in OpenBao, and telling ours apart takes one
        # lookup each: not cheap. A token issued behind the broker's back dies at its TTL.
        del profile
        return None

    def lease_issued_at(self, lease_ref: str) -> datetime | None:
        return self.vault.token_created_at(lease_ref)

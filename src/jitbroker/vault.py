"""The one OpenBao/Vault client: hvac behind typed errors (VaultUnavailable vs VaultRejected)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import hvac
import hvac.exceptions
import requests

from jitbroker.errors import VaultLeaseGone, VaultRejected, VaultUnavailable

T = TypeVar("T")
log = logging.getLogger(__name__)

RETRYABLE = (
    hvac.exceptions.VaultDown,
    hvac.exceptions.InternalServerError,
    hvac.exceptions.BadGateway,
    hvac.exceptions.RateLimitExceeded,
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
)
GONE_MARKERS = ("invalid lease", "lease not found", "invalid accessor", "bad token")


class VaultClient:
    """A thin, typed wrapper over the hvac calls jitbroker makes."""

    def __init__(self, addr: str, token: str, *, timeout: float = 5.0) -> None:
        self.addr = addr
        self._client = hvac.Client(url=addr, token=token, timeout=int(timeout))

    def _call(self, operation: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except RETRYABLE as exc:
            log.warning("OpenBao unavailable during %s: %s", operation, type(exc).__name__)
            raise VaultUnavailable(f"OpenBao is unavailable ({type(exc).__name__})") from None
        except hvac.exceptions.VaultError as exc:
            reasons = "; ".join(str(e) for e in (exc.errors or [])) or type(exc).__name__
            # Backend messages name mounts, roles and policies: they go to the log, not to
            # callers, who see only the kind of refusal.
            log.warning("OpenBao refused %s: %s", operation, reasons.strip())
            if any(marker in reasons for marker in GONE_MARKERS):
                raise VaultLeaseGone("OpenBao no longer knows this lease") from None
            raise VaultRejected("OpenBao refused the request", retry_after=30) from None

    def is_ready(self) -> bool:
        """True when OpenBao answers, is unsealed and our token is valid."""
        try:
            sealed = self._call("seal status", self._client.sys.is_sealed)
            self._call("token lookup", self._client.auth.token.lookup_self)
            return not sealed
        except (VaultUnavailable, VaultRejected):
            return False

    def read(self, path: str) -> dict[str, Any]:
        result = self._call(f"read {path}", lambda: self._client.read(path))
        if not isinstance(result, dict):
            raise VaultRejected(f"OpenBao returned nothing for {path}")
        return result

    def write(self, path: str, **data: Any) -> dict[str, Any]:
        result = self._call(f"write {path}", lambda: self._client.write_data(path, data=data))
        return result if isinstance(result, dict) else {}

    def renew_lease(self, lease_id: str, increment_seconds: int) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "lease renew",
            lambda: self._client.sys.renew_lease(  # type: ignore[no-untyped-call]
                lease_id=lease_id, increment=increment_seconds
            ),
        )
        return result

    def revoke_lease(self, lease_id: str) -> None:
        """Revoke a lease synchronously; revoking an unknown or expired lease succeeds."""
        self._call(
            "lease revoke",
            lambda: self._client.adapter.put(
                "/v1/sys/leases/revoke", json={"lease_id": lease_id, "sync": True}
            ),
        )

    def lease_exists(self, lease_id: str) -> bool:
        return self._exists("lease lookup", lambda: self._client.sys.read_lease(lease_id))  # type: ignore[no-untyped-call]

    def lease_issued_at(self, lease_id: str) -> datetime | None:
        """When OpenBao issued the lease, or None when it no longer knows it."""
        try:
            result = self._call(
                "lease lookup",
                lambda: self._client.sys.read_lease(lease_id),  # type: ignore[no-untyped-call]
            )
        except VaultLeaseGone:
            return None
        issued = (result.get("data") or {}).get("issue_time")
        if not issued:
            raise VaultRejected(f"OpenBao gave no issue time for lease {lease_id}")
        return datetime.fromisoformat(str(issued))

    def revoke_token_accessor(self, accessor: str) -> None:
        self._call("token revoke", lambda: self._client.auth.token.revoke_accessor(accessor))

    def token_accessor_exists(self, accessor: str) -> bool:
        return self._exists(
            "token lookup", lambda: self._client.auth.token.lookup_accessor(accessor)
        )

    def token_created_at(self, accessor: str) -> datetime | None:
        """When the token behind `accessor` was created, or None when OpenBao no longer knows it."""
        try:
            result = self._call(
                "token lookup", lambda: self._client.auth.token.lookup_accessor(accessor)
            )
        except VaultLeaseGone:
            return None
        return datetime.fromtimestamp(int((result.get("data") or {})["creation_time"]), UTC)

    def list_leases(self, prefix: str) -> list[str]:
        """Full lease ids under a prefix (empty list when there are none)."""
        prefix = prefix.rstrip("/") + "/"

        def keys() -> dict[str, Any]:
            try:
                listed: dict[str, Any] = self._client.sys.list_leases(prefix=prefix)  # type: ignore[no-untyped-call]
            except hvac.exceptions.InvalidPath:
                return {}  # OpenBao answers 404 for a prefix without leases
            return listed

        result = self._call(f"lease list {prefix}", keys)
        return [prefix + key for key in result.get("data", {}).get("keys", [])]

    def _exists(self, operation: str, fn: Callable[[], Any]) -> bool:
        try:
            self._call(operation, fn)
        except VaultLeaseGone:
            return False
        return True

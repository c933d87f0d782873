"""The one OpenBao/Vault client: hvac behind typed errors (VaultUnavailable vs VaultRejected)."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import hvac
import hvac.exceptions
import requests
import requests.adapters
import requests.utils

from jitbroker.errors import VaultLeaseGone, VaultRejected, VaultUnavailable

if TYPE_CHECKING:
    from jitbroker.config import Settings

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
SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
# Connections kept per client: the API's thread pool (anyio's default, 40 threads) can have
# every thread in an OpenBao call at once; a smaller pool would open and discard connections.
CONNECTION_POOL_SIZE = 40


def session_for(addr: str, *, ca_cert: Path | None = None) -> requests.Session:
    """A pooled session for `addr` with the environment's proxy, CA bundle and netrc settings
    resolved once, as requests would resolve them on every call (the explicit `ca_cert` wins
    over REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE); reading them per call was a third of a call's CPU."""
    session = requests.Session()
    session.trust_env = False
    session.proxies = dict(requests.utils.get_environ_proxies(addr))
    session.verify = (
        str(ca_cert)
        if ca_cert is not None
        else os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    )
    session.auth = requests.utils.get_netrc_auth(addr)
    adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=CONNECTION_POOL_SIZE)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


@dataclass(frozen=True)
class VaultAuth:
    """How the client gets its OpenBao token: given, or a Kubernetes service-account login."""

    method: Literal["token", "kubernetes"] = "token"
    token: str = ""
    kubernetes_role: str = ""
    kubernetes_mount: str = "kubernetes"
    kubernetes_token_path: Path = SERVICE_ACCOUNT_TOKEN


@dataclass(frozen=True)
class TokenLease:
    """A token and how long OpenBao said it lives (0: it does not expire)."""

    token: str
    ttl_seconds: int
    renewable: bool


class TokenKeeper:
    """Keeps a token valid: logs in when there is none, renews it once two thirds of its TTL
    have passed, and logs in again when renewal no longer extends it (its max TTL is near)."""

    RENEW_AFTER = 2 / 3
    RETRY_SECONDS = 5.0

    def __init__(
        self,
        *,
        login: Callable[[], TokenLease],
        renew: Callable[[], TokenLease],
        can_log_in_again: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._login = login
        self._renew = renew
        self._can_log_in_again = can_log_in_again
        self._clock = clock
        self._lock = threading.Lock()
        self._lease: TokenLease | None = None
        self._expires_at = 0.0
        self._refresh_at = 0.0

    def token(self) -> str:
        """The token to use now, logging in or renewing first when it is time."""
        with self._lock:
            now = self._clock()
            if self._lease is None:
                self._adopt(self._login(), now)
            elif self._lease.ttl_seconds and now >= self._refresh_at:
                self._refresh(now)
            assert self._lease is not None
            return self._lease.token

    def _adopt(self, lease: TokenLease, now: float) -> None:
        self._lease = lease
        self._expires_at = now + lease.ttl_seconds
        self._refresh_at = now + lease.ttl_seconds * self.RENEW_AFTER

    def _refresh(self, now: float) -> None:
        assert self._lease is not None
        current = self._lease
        if current.renewable:
            try:
                renewed = self._renew()
            except (VaultUnavailable, VaultRejected) as exc:
                log.warning("could not renew the OpenBao token: %s", exc.detail)
            else:
                # A renewal capped by the token's max TTL buys less than half a term: log in
                # again instead, while the current token still works.
                if renewed.ttl_seconds * 2 >= current.ttl_seconds or not self._can_log_in_again:
                    self._adopt(TokenLease(current.token, renewed.ttl_seconds, True), now)
                    return
        if self._can_log_in_again:
            try:
                self._adopt(self._login(), now)
                return
            except (VaultUnavailable, VaultRejected):
                if now >= self._expires_at:
                    raise
                log.warning("could not log in to OpenBao again; keeping the current token")
        elif not current.renewable:
            log.warning(
                "the OpenBao token cannot be renewed; it expires in %.0fs",
                max(self._expires_at - now, 0),
            )
        # The current token may still work: try again shortly.
        self._refresh_at = now + self.RETRY_SECONDS


class VaultClient:
    """A thin, typed wrapper over the hvac calls jitbroker makes."""

    def __init__(
        self,
        addr: str,
        token: str = "",
        *,
        timeout: float = 5.0,
        auth: VaultAuth | None = None,
        ca_cert: Path | None = None,
    ) -> None:
        self.addr = addr
        self.auth = auth or VaultAuth(token=token)
        self._timeout = timeout
        self._session = session_for(addr, ca_cert=ca_cert)
        self._verify: str | bool = self._session.verify
        self._client = hvac.Client(
            url=addr,
            token=self.auth.token or None,
            timeout=int(timeout),
            verify=self._verify,
            proxies=self._session.proxies,
            session=self._session,
        )
        self._keeper = TokenKeeper(
            login=self._login,
            renew=self._renew_self,
            can_log_in_again=self.auth.method == "kubernetes",
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> VaultClient:
        """The client for a process, authenticated as `settings` say."""
        return cls(
            settings.vault_addr,
            timeout=settings.vault_timeout_seconds,
            ca_cert=settings.vault_ca_cert,
            auth=VaultAuth(
                method=settings.vault_auth_method,
                token=settings.vault_token.get_secret_value(),
                kubernetes_role=settings.vault_kubernetes_role,
                kubernetes_mount=settings.vault_kubernetes_mount,
                kubernetes_token_path=settings.vault_kubernetes_token_path,
            ),
        )

    def _login(self) -> TokenLease:
        if self.auth.method == "kubernetes":
            # Projected service-account tokens rotate: read the file at every login.
            try:
                jwt = self.auth.kubernetes_token_path.read_text().strip()
            except OSError as exc:
                raise VaultRejected(
                    f"cannot read the service-account token at {self.auth.kubernetes_token_path}: "
                    f"{exc.strerror}"
                ) from None
            response = self._translate(
                "kubernetes login",
                lambda: self._client.auth.kubernetes.login(
                    role=self.auth.kubernetes_role,
                    jwt=jwt,
                    use_token=False,
                    mount_point=self.auth.kubernetes_mount,
                ),
            )
            auth = response.get("auth") or {}
            if not auth.get("client_token"):
                raise VaultRejected("OpenBao returned no token for the Kubernetes login")
            lease = TokenLease(
                str(auth["client_token"]),
                int(auth.get("lease_duration") or 0),
                bool(auth.get("renewable")),
            )
            self._client.token = lease.token
            log.info("logged in to OpenBao with Kubernetes role %s", self.auth.kubernetes_role)
            return lease
        try:
            data = self._translate("token lookup", self._client.auth.token.lookup_self)
        except VaultRejected:
            # A token that may not look itself up still works for what its policy allows.
            return TokenLease(self.auth.token, 0, False)
        info = data.get("data") or {}
        return TokenLease(self.auth.token, int(info.get("ttl") or 0), bool(info.get("renewable")))

    def _renew_self(self) -> TokenLease:
        response = self._translate("token renew", self._client.auth.token.renew_self)
        auth = response.get("auth") or {}
        return TokenLease(
            str(self._client.token),
            int(auth.get("lease_duration") or 0),
            bool(auth.get("renewable")),
        )

    def _call(self, operation: str, fn: Callable[[], T]) -> T:
        self._client.token = self._keeper.token()
        return self._translate(operation, fn)

    def _translate(self, operation: str, fn: Callable[[], T]) -> T:
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
        # The lease id goes in the path (not the body) so a policy can scope renewals to the
        # broker's own mounts: sys/leases/renew/<mount>/…
        result = self._call(
            "lease renew",
            lambda: self._client.adapter.put(
                f"/v1/sys/leases/renew/{lease_id}", json={"increment": increment_seconds}
            ),
        )
        return result if isinstance(result, dict) else {}

    def revoke_lease(self, lease_id: str) -> None:
        """Revoke a lease synchronously; revoking an unknown or expired lease succeeds."""
        self._call(
            "lease revoke",
            lambda: self._client.adapter.put(
                f"/v1/sys/leases/revoke/{lease_id}", json={"sync": True}
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

    def read_optional(self, path: str) -> dict[str, Any] | None:
        """The data at `path`, or None when OpenBao has nothing there."""
        result = self._call(f"read {path}", lambda: self._client.read(path))
        return result if isinstance(result, dict) else None

    def lookup_self(self) -> dict[str, Any]:
        """What OpenBao knows of the broker's own token (policies, TTL)."""
        result: dict[str, Any] = self._call("token lookup", self._client.auth.token.lookup_self)
        return dict(result.get("data") or {})

    def capabilities_self(self, paths: list[str]) -> dict[str, list[str]]:
        """The broker token's capabilities on each path (sys/capabilities-self)."""
        result = self._call(
            "capabilities lookup",
            lambda: self._client.adapter.post("/v1/sys/capabilities-self", json={"paths": paths}),
        )
        data = result.get("data", result) if isinstance(result, dict) else {}
        return {path: [str(c) for c in data.get(path, [])] for path in paths}

    def server_time(self) -> datetime:
        """OpenBao's clock, from the Date header of an unauthenticated health request."""

        def health() -> requests.Response:
            return self._session.get(
                f"{self.addr.rstrip('/')}/v1/sys/health", timeout=self._timeout, verify=self._verify
            )

        date = self._translate("health", health).headers.get("Date")
        if not date:
            raise VaultRejected("OpenBao's answer carried no Date header")
        return parsedate_to_datetime(date)

    def _exists(self, operation: str, fn: Callable[[], Any]) -> bool:
        try:
            self._call(operation, fn)
        except VaultLeaseGone:
            return False
        return True

    def revoke_certificate(self, mount: str, serial: str) -> None:
        """Put a PKI certificate on its CRL; an expired or tidied-away one succeeds."""

        def revoke() -> None:
            try:
                self._client.write_data(f"{mount}/revoke", data={"serial_number": serial})
            except hvac.exceptions.InvalidRequest as exc:
                # Tidied after it expired: there is nothing left that could be revoked.
                if not any("not found" in str(error) for error in exc.errors or []):
                    raise

        self._call("certificate revoke", revoke)

    def certificate_record(self, mount: str, serial: str) -> dict[str, Any] | None:
        """A PKI mount's record of a certificate (PEM, revocation time); None if it has none."""
        result = self._call(
            "certificate lookup", lambda: self._client.read(f"{mount}/cert/{serial}")
        )
        data = result.get("data") if isinstance(result, dict) else None
        return dict(data) if isinstance(data, dict) and data.get("certificate") else None

    def certificate_revocation_list(self, mount: str) -> str:
        """A PKI mount's current CRL, PEM-encoded."""
        crl = str((self.read(f"{mount}/cert/crl").get("data") or {}).get("certificate") or "")
        if not crl:
            raise VaultRejected(f"OpenBao returned no CRL for {mount}")
        return crl

"""OpenBao PKI engine: short-lived X.509 client certificates for mTLS, revoked onto the CRL.

A certificate's serial is its lease: OpenBao keeps no lease for it, so revoking it means
`<mount>/revoke`, which lists the serial on the mount's CRL, and the certificate's own
not-after (the grant TTL) bounds it for servers that do not check the CRL.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from pydantic import SecretStr

from jitbroker.config import ProfileConfig, ScopeBinding
from jitbroker.engines.base import IssuedCredential
from jitbroker.errors import BrokerError, VaultRejected
from jitbroker.vault import VaultClient

log = logging.getLogger(__name__)
CERT_SEGMENT = "/cert/"
# OpenBao and the broker may read different clocks: a not-after up to this far past the grant TTL
# is accepted (the grant keeps its TTL; revoking at its end lists the serial on the CRL).
CLOCK_SKEW_SECONDS = 5


@dataclass(frozen=True)
class CrlStatus:
    """Whether the mount's CRL lists a serial, and when the certificate expires (if known)."""

    listed: bool
    not_after: datetime | None


def split_lease_ref(lease_ref: str) -> tuple[str, str]:
    """`<mount>/cert/<serial>` → (mount, serial)."""
    mount, found, serial = lease_ref.rpartition(CERT_SEGMENT)
    if not found or not mount or not serial:
        raise VaultRejected(f"{lease_ref!r} is not a PKI certificate reference")
    return mount, serial


def serial_number(serial: str) -> int:
    """OpenBao's `2f:1a:…` serial as the integer X.509 uses."""
    return int(serial.replace(":", "").replace("-", ""), 16)


def not_after(pem: str) -> datetime:
    """When a PEM certificate expires."""
    return x509.load_pem_x509_certificate(pem.encode()).not_valid_after_utc


class PkiEngine:
    """Issues with `<mount>/issue/<role>`; the lease reference is `<mount>/cert/<serial>`."""

    kind = "pki"

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
        del grant_id, public_key  # OpenBao generates the key pair; the serial names the grant
        # Downstream services authorise the workload, so the certificate names it.
        common_name = labels["workload"]
        response = self.vault.write(
            f"{profile.mount}/issue/{binding.role}",
            common_name=common_name,
            ttl=f"{ttl_seconds}s",
            format="pem",
            private_key_format="pkcs8",
            exclude_cn_from_sans=True,
        )
        data = response.get("data") or {}
        serial = str(data.get("serial_number") or "")
        if not serial or not data.get("certificate") or not data.get("private_key"):
            if serial:
                self._revoke_quietly(profile.mount, serial)
            raise VaultRejected(f"OpenBao returned no certificate for role {binding.role!r}")
        lifetime = int(data.get("expiration") or 0) - int(time.time())
        if lifetime <= 0 or lifetime > ttl_seconds + CLOCK_SKEW_SECONDS:
            self._revoke_quietly(profile.mount, serial)
            raise VaultRejected(
                f"OpenBao issued a certificate living {lifetime}s for role {binding.role!r}, "
                f"expected at most {ttl_seconds}s"
            )
        # Exactly as returned, so a gateway shown the `certificate` field finds the grant.
        certificate = str(data["certificate"]).strip() + "\n"
        chain = data.get("ca_chain") or [data.get("issuing_ca") or ""]
        return IssuedCredential(
            lease_ref=f"{profile.mount}{CERT_SEGMENT}{serial}",
            lease_ttl_seconds=min(lifetime, ttl_seconds),
            principal=common_name,
            secret={"private_key": SecretStr(str(data["private_key"]).strip() + "\n")},
            public={
                "certificate": certificate,
                "ca_chain": "\n".join(str(pem).strip() for pem in chain if pem) + "\n",
                "serial": serial,
                "not_after": datetime.fromtimestamp(int(data["expiration"]), UTC).isoformat(),
            },
            presented=certificate,
        )

    def _revoke_quietly(self, mount: str, serial: str) -> None:
        try:
            self.vault.revoke_certificate(mount, serial)
        except BrokerError as exc:
            # Keep the original error; the certificate's not-after bounds it.
            log.error("could not revoke half-issued certificate %s: %s", serial, exc.detail)

    def revoke(self, lease_ref: str) -> None:
        self.vault.revoke_certificate(*split_lease_ref(lease_ref))

    def is_revoked(self, lease_ref: str) -> bool:
        """True when OpenBao records the certificate revoked, or it expired or was tidied."""
        record = self.vault.certificate_record(*split_lease_ref(lease_ref))
        if record is None or int(record.get("revocation_time") or 0) > 0:
            return True
        return not_after(str(record["certificate"])) <= datetime.now(UTC)

    def crl_status(self, lease_ref: str) -> CrlStatus:
        """Whether the mount's current CRL lists the certificate, and when it expires."""
        mount, serial = split_lease_ref(lease_ref)
        crl = x509.load_pem_x509_crl(self.vault.certificate_revocation_list(mount).encode())
        listed = crl.get_revoked_certificate_by_serial_number(serial_number(serial)) is not None
        record = self.vault.certificate_record(mount, serial)
        expires = not_after(str(record["certificate"])) if record else None
        return CrlStatus(listed=listed, not_after=expires)

    def list_leases(self, profile: ProfileConfig) -> None:
        # `<mount>/certs` lists every serial of the mount, whoever issued it, and telling ours
        # apart takes one lookup each: not cheap. An unrecorded certificate dies at its TTL.
        del profile
        return None

    def lease_issued_at(self, lease_ref: str) -> datetime | None:
        record = self.vault.certificate_record(*split_lease_ref(lease_ref))
        if record is None:
            return None
        pem = str(record["certificate"]).encode()
        return x509.load_pem_x509_certificate(pem).not_valid_before_utc

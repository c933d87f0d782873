"""OpenBao SSH engine: a user certificate for the workload's own public key, valid for the grant.

The workload sends its public key and keeps the private key, so the broker never holds one.
OpenBao cannot revoke an SSH certificate: a host accepts it until its valid-before unless the
host's `RevokedKeys` KRL lists its serial. Revoking a grant closes its route and records the
revocation; the short grant TTL bounds the certificate, and the receipt says until when.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    SSHCertificate,
    SSHCertificateType,
    load_ssh_public_identity,
)

from jitbroker.config import ProfileConfig, ScopeBinding
from jitbroker.engines.base import IssuedCredential
from jitbroker.errors import InvalidRequest, VaultRejected
from jitbroker.vault import VaultClient

log = logging.getLogger(__name__)

MIN_RSA_BITS = 3072
# OpenBao and the broker may read different clocks: a valid-before up to this far past the grant
# TTL is accepted, and the grant then lasts as long as the certificate.
CLOCK_SKEW_SECONDS = 5


@dataclass(frozen=True)
class SshCertificate:
    """The fields of an OpenSSH certificate that a grant decides."""

    serial: int
    key_id: str
    principals: list[str]
    valid_after: datetime
    valid_before: datetime
    public_key: str
    user_certificate: bool


def normalised_public_key(text: str) -> str:
    """One OpenSSH public key line as `type base64` (comment dropped); ValueError if unfit."""
    line = text.strip()
    if not line or "\n" in line:
        raise ValueError("give exactly one OpenSSH public key line")
    try:
        identity = load_ssh_public_identity(line.encode())
    except (ValueError, UnsupportedAlgorithm):
        raise ValueError("not an OpenSSH public key line (e.g. `ssh-ed25519 AAAA…`)") from None
    if isinstance(identity, SSHCertificate):
        raise ValueError("give the public key, not a certificate")
    if isinstance(identity, rsa.RSAPublicKey) and identity.key_size < MIN_RSA_BITS:
        raise ValueError(f"RSA keys need at least {MIN_RSA_BITS} bits; ed25519 is preferred")
    if not isinstance(
        identity, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey
    ):
        raise ValueError("use an ed25519, ECDSA or RSA key")
    return identity.public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()


def read_certificate(line: str) -> SshCertificate:
    """Parse an OpenSSH certificate line and check its CA signature; ValueError if it is none."""
    try:
        certificate = load_ssh_public_identity(line.strip().encode())
    except (ValueError, UnsupportedAlgorithm):
        raise ValueError("not an OpenSSH certificate") from None
    if not isinstance(certificate, SSHCertificate):
        raise ValueError("a public key, not a certificate")
    try:
        certificate.verify_cert_signature()
    except InvalidSignature:
        raise ValueError("the certificate's signature does not verify") from None
    key = certificate.public_key()
    return SshCertificate(
        serial=certificate.serial,
        key_id=certificate.key_id.decode(),
        principals=[p.decode() for p in certificate.valid_principals],
        valid_after=datetime.fromtimestamp(certificate.valid_after, UTC),
        valid_before=datetime.fromtimestamp(certificate.valid_before, UTC),
        public_key=key.public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode(),
        user_certificate=certificate.type == SSHCertificateType.USER,
    )


def serial_of(lease_ref: str) -> int:
    """The certificate serial at the end of an ssh lease reference."""
    return int(lease_ref.rsplit("/", 1)[-1])


class SshEngine:
    """Signs with `<mount>/sign/<role>`; the lease reference is `<mount>/sign/<role>/<serial>`."""

    kind = "ssh"

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
        if public_key is None:
            raise InvalidRequest(f"profile {profile.id!r} needs the workload's `public_key`")
        principals = binding.principals or [labels["workload"]]
        # The key id is what sshd logs for every login with the certificate: the grant.
        key_id = f"jitbroker:{grant_id}"
        response = self.vault.write(
            f"{profile.mount}/sign/{binding.role}",
            public_key=public_key,
            valid_principals=",".join(principals),
            ttl=f"{ttl_seconds}s",
            cert_type="user",
            key_id=key_id,
        )
        signed = str((response.get("data") or {}).get("signed_key") or "").strip()
        try:
            certificate = read_certificate(signed)
        except ValueError as exc:
            raise VaultRejected(
                f"OpenBao returned no usable SSH certificate for role {binding.role!r} ({exc})"
            ) from None
        # Checked, not trusted: a role that rewrites principals or key ids must not go unnoticed.
        lifetime = certificate.valid_before.timestamp() - time.time()
        wrong = [
            what
            for what, bad in (
                ("public key", certificate.public_key != public_key),
                ("principals", sorted(certificate.principals) != sorted(principals)),
                ("key id", certificate.key_id != key_id),
                ("certificate type", not certificate.user_certificate),
                ("validity", lifetime <= 0 or lifetime > ttl_seconds + CLOCK_SKEW_SECONDS),
            )
            if bad
        ]
        if wrong:
            # Never handed out, so nobody holds it; OpenBao has nothing to revoke.
            raise VaultRejected(
                f"OpenBao signed an SSH certificate for role {binding.role!r} with the wrong "
                f"{', '.join(wrong)}"
            )
        return IssuedCredential(
            lease_ref=f"{profile.mount}/sign/{binding.role}/{certificate.serial}",
            # Rounded up, so the grant never expires before the certificate does: receipts
            # report the grant's expiry as the certificate's valid-before.
            lease_ttl_seconds=math.ceil(lifetime),
            principal=",".join(certificate.principals),
            secret={},
            public={
                "certificate": signed,
                "serial": str(certificate.serial),
                "key_id": certificate.key_id,
                "principals": ",".join(certificate.principals),
                "valid_before": certificate.valid_before.isoformat(),
            },
            presented=signed,
        )

    def revoke(self, lease_ref: str) -> None:
        # OpenBao keeps no record of signed certificates and has no way to revoke one: the
        # broker's revocation (route closed, receipt, audit) is the record, the TTL the bound.
        log.info(
            "SSH certificate serial %d stays valid until its valid-before; list it in the "
            "hosts' RevokedKeys KRL to cut it earlier",
            serial_of(lease_ref),
        )

    def is_revoked(self, lease_ref: str) -> bool:
        # Nothing in OpenBao can say a certificate is gone, so never claim it: the reconciler
        # must not take a live certificate for a lost lease.
        del lease_ref
        return False

    def list_leases(self, profile: ProfileConfig) -> None:
        del profile  # OpenBao keeps no list of the certificates it signed
        return None

    def lease_issued_at(self, lease_ref: str) -> datetime | None:
        del lease_ref
        return None

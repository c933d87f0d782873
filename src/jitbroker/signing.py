"""The broker's Ed25519 key: signs revocation receipts, publishes its public half as a JWK."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

log = logging.getLogger(__name__)


class BrokerSigningKey:
    """An Ed25519 private key loaded from (or, on first use, created at) a PEM file."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private = private_key
        raw = self.public_key.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.public_raw = raw
        self.key_id = hashlib.sha256(raw).hexdigest()[:16]
        # derive() runs on every gateway check; the key never changes, so neither do its answers.
        self._derived: dict[str, bytes] = {}

    @classmethod
    def load(cls, path: Path) -> BrokerSigningKey:
        """The key in a PEM file, which must exist."""
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path} does not hold an Ed25519 private key")
        return cls(key)

    @classmethod
    def load_or_create(cls, path: Path) -> BrokerSigningKey:
        if path.exists():
            return cls.load(path)
        log.warning("no signing key at %s: creating one (production deployments mount it)", path)
        key = Ed25519PrivateKey.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        path.chmod(0o600)
        return cls(key)

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._private.public_key()

    def sign(self, message: bytes) -> str:
        """Base64url signature of `message`."""
        return _b64(self._private.sign(message))

    def derive(self, purpose: str) -> bytes:
        """A 32-byte secret for `purpose`, derived from this key (e.g. route fingerprints)."""
        derived = self._derived.get(purpose)
        if derived is None:
            derived = self._derived[purpose] = self._derive(purpose)
        return derived

    def _derive(self, purpose: str) -> bytes:
        seed = self._private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return hmac.new(seed, purpose.encode(), hashlib.sha256).digest()

    def public_jwk(self) -> dict[str, str]:
        return {
            "kty": "OKP",
            "crv": "Ed25519",
            "alg": "EdDSA",
            "use": "sig",
            "kid": self.key_id,
            "x": _b64(self.public_raw),
        }


def verify_signature(public_jwk: dict[str, str], message: bytes, signature: str) -> bool:
    """Check a base64url Ed25519 signature against a JWK's public key."""
    try:
        raw = base64.urlsafe_b64decode(public_jwk["x"] + "==")
        key = Ed25519PublicKey.from_public_bytes(raw)
        key.verify(base64.urlsafe_b64decode(signature + "=="), message)
    except (InvalidSignature, KeyError, ValueError):
        return False
    return True


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

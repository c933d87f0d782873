"""Webhook signatures: HMAC-SHA256 over the timestamp and the raw body.

Every delivery carries the header

    X-Jitbroker-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>

where the HMAC key is the webhook's shared secret (the environment variable named by the
webhook's `secret_env` on the broker side) and the signed message is the ASCII timestamp, a
full stop, then the request body exactly as received:

    v1 = hex(HMAC_SHA256(secret, f"{t}.".encode() + raw_body))

To verify, a receiver:

1. reads the raw body bytes before parsing any JSON (re-serialising changes the bytes);
2. splits the header on "," into key=value pairs, takes `t` and every `v1`;
3. rejects the request if `t` is more than five minutes away from its own clock (replays);
4. computes the HMAC above and compares it to each `v1` in constant time; one match passes.

Deliveries are at least once: a retried delivery is signed again with a fresh timestamp but
keeps the same `X-Jitbroker-Delivery` id, so receivers should ignore ids they have seen.
`verify()` below is a reference implementation a Python receiver can copy as is.
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Jitbroker-Signature"
SCHEME = "v1"
DEFAULT_TOLERANCE_SECONDS = 300


def _digest(secret: bytes, timestamp: int, body: bytes) -> str:
    return hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The signature header value for `body` sent at `timestamp` (unix seconds)."""
    return f"t={timestamp},{SCHEME}={_digest(secret, timestamp, body)}"


def verify(
    secret: bytes,
    header: str,
    body: bytes,
    *,
    now: float,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
) -> bool:
    """Whether `header` is a fresh, valid signature of `body` under `secret`; never raises."""
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            return False
        if key == "t":
            if not value.isascii() or not value.isdigit():
                return False
            timestamp = int(value)
        elif key == SCHEME:
            candidates.append(value)
    if timestamp is None or not candidates:
        return False
    if abs(now - timestamp) > tolerance_seconds:
        return False
    expected = _digest(secret, timestamp, body).encode()
    # Check every candidate so the time taken does not reveal which one matched.
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(expected, candidate.encode())
    return matched

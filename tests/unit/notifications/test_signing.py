"""The webhook signature scheme: sign() and the receivers' reference verify()."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from jitbroker.notifications.signing import sign, verify

SECRET = b"shared-webhook-secret"
BODY = b'{"text":"grant waits for approval","event":"approval.pending"}'
SENT_AT = 1_700_000_000


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    expected = hmac.new(SECRET, f"{SENT_AT}.".encode() + BODY, hashlib.sha256).hexdigest()

    assert sign(SECRET, SENT_AT, BODY) == f"t={SENT_AT},v1={expected}"


def test_fresh_signature_verifies() -> None:
    header = sign(SECRET, SENT_AT, BODY)

    assert verify(SECRET, header, BODY, now=SENT_AT + 5)


def test_tampered_body_does_not_verify() -> None:
    header = sign(SECRET, SENT_AT, BODY)

    assert not verify(SECRET, header, BODY.replace(b"pending", b"approved"), now=SENT_AT)


def test_signature_under_another_secret_does_not_verify() -> None:
    header = sign(b"someone-else's-secret", SENT_AT, BODY)

    assert not verify(SECRET, header, BODY, now=SENT_AT)


def test_signature_moved_to_a_later_timestamp_does_not_verify() -> None:
    header = sign(SECRET, SENT_AT, BODY).replace(f"t={SENT_AT}", f"t={SENT_AT + 60}")

    assert not verify(SECRET, header, BODY, now=SENT_AT + 60)


@pytest.mark.parametrize("age", [301, -301, 86400])
def test_signature_outside_the_tolerance_is_stale(age: int) -> None:
    header = sign(SECRET, SENT_AT, BODY)

    assert not verify(SECRET, header, BODY, now=SENT_AT + age)


def test_tolerance_can_be_widened() -> None:
    header = sign(SECRET, SENT_AT, BODY)

    assert verify(SECRET, header, BODY, now=SENT_AT + 600, tolerance_seconds=900)


def test_any_matching_v1_verifies_so_secrets_can_rotate() -> None:
    old = sign(b"previous-secret", SENT_AT, BODY).split(",")[1]
    header = f"{sign(SECRET, SENT_AT, BODY)},{old}"

    assert verify(SECRET, header, BODY, now=SENT_AT)


@pytest.mark.parametrize(
    "header",
    [
        "",
        "garbage",
        "t=,v1=00",
        "t=abc,v1=00",
        "t=１７００００００００,v1=00",
        f"t={SENT_AT}",
        "v1=" + "0" * 64,
        f"t={SENT_AT},v1",
        f"t={SENT_AT},v0=" + "0" * 64,
        f"t={SENT_AT},v1=ü",
    ],
)
def test_malformed_header_does_not_verify(header: str) -> None:
    assert not verify(SECRET, header, BODY, now=SENT_AT)

"""TokenVerifier remembers tokens that verified, and never longer than a fresh check would pass."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest

from jitbroker.config import BrokerConfig
from jitbroker.errors import Unauthenticated
from jitbroker.identity import verifier as verifier_module
from jitbroker.identity.dev_issuer import DevIssuer
from jitbroker.identity.verifier import TokenVerifier

ISS = "https://ci.example.test"
SUBJECT = "repo:org/repo"


@pytest.fixture
def keys(tmp_path: Path) -> DevIssuer:
    issuer = DevIssuer(tmp_path / "keys")
    issuer.ensure_keys("ci")
    return issuer


@pytest.fixture
def verifier(
    make_config: Callable[[dict[str, Any]], BrokerConfig], keys: DevIssuer
) -> TokenVerifier:
    config = make_config(
        {
            "issuers.yaml": {
                "issuers": [
                    {
                        "name": "ci",
                        "issuer": ISS,
                        "audiences": ["jitbroker"],
                        "algorithms": ["ES256"],
                        "jwks_file": str(keys.jwks_path("ci")),
                        "leeway_seconds": 0,
                    }
                ]
            },
            "workloads.yaml": {
                "workloads": [{"id": "deployer", "issuer": "ci", "subject": SUBJECT}]
            },
        }
    )
    return TokenVerifier(config)


def token(keys: DevIssuer, *, exp_in: int = 600) -> str:
    now = int(time.time())
    claims = {"iss": ISS, "sub": SUBJECT, "aud": "jitbroker", "iat": now, "exp": now + exp_in}
    kid = keys.jwks("ci")["keys"][0]["kid"]
    return jwt.encode(
        claims, keys.key_path("ci").read_bytes(), algorithm="ES256", headers={"kid": kid}
    )


def test_token_presented_again_is_not_decoded_again(
    verifier: TokenVerifier, keys: DevIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    presented = token(keys)
    first = verifier.verify(presented)
    decodes: list[str] = []
    monkeypatch.setattr(jwt, "decode", lambda jwt_, *_, **__: decodes.append(jwt_))

    again = verifier.verify(presented)

    assert again == first
    assert decodes == []


def test_remembered_token_past_its_exp_is_verified_afresh(
    verifier: TokenVerifier, keys: DevIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    presented = token(keys, exp_in=5)
    verifier.verify(presented)
    later = time.time() + 10
    monkeypatch.setattr(verifier_module.time, "time", lambda: later)

    def expired(*_: Any, **__: Any) -> None:
        raise jwt.ExpiredSignatureError("Signature has expired")

    # What PyJWT answers at `later`; the remembered verification must not answer instead.
    monkeypatch.setattr(jwt, "decode", expired)

    with pytest.raises(Unauthenticated, match="token has expired"):
        verifier.verify(presented)


def test_remembered_token_is_refused_once_its_kid_names_another_key(
    verifier: TokenVerifier, keys: DevIssuer, tmp_path: Path
) -> None:
    presented = token(keys)
    verifier.verify(presented)
    jwks = keys.jwks_path("ci")
    replacement = DevIssuer(tmp_path / "rotated")
    replacement.ensure_keys("ci")
    jwks.write_text(replacement.jwks_path("ci").read_text())
    modified = jwks.stat().st_mtime + 10
    os.utime(jwks, (modified, modified))

    with pytest.raises(Unauthenticated, match="signature verification failed"):
        verifier.verify(presented)


def test_tampered_copy_of_a_remembered_token_is_still_rejected(
    verifier: TokenVerifier, keys: DevIssuer
) -> None:
    presented = token(keys)
    verifier.verify(presented)
    header, payload, signature = presented.split(".")
    tampered = f"{header}.{payload}.{signature[:-4]}AAAA"

    with pytest.raises(Unauthenticated):
        verifier.verify(tampered)


def test_remembered_is_none_for_a_token_never_verified(
    verifier: TokenVerifier, keys: DevIssuer
) -> None:
    assert verifier.remembered(token(keys)) is None


def test_remembered_answers_what_verify_answered(verifier: TokenVerifier, keys: DevIssuer) -> None:
    presented = token(keys)
    principal = verifier.verify(presented)

    assert verifier.remembered(presented) == principal


def test_remembered_is_none_past_the_tokens_exp(
    verifier: TokenVerifier, keys: DevIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    presented = token(keys, exp_in=5)
    verifier.verify(presented)
    later = time.time() + 10
    monkeypatch.setattr(verifier_module.time, "time", lambda: later)

    assert verifier.remembered(presented) is None


def test_remembered_leaves_a_rewritten_key_file_to_verify(
    verifier: TokenVerifier, keys: DevIssuer, tmp_path: Path
) -> None:
    presented = token(keys)
    verifier.verify(presented)
    jwks = keys.jwks_path("ci")
    replacement = DevIssuer(tmp_path / "rotated")
    replacement.ensure_keys("ci")
    jwks.write_text(replacement.jwks_path("ci").read_text())
    modified = jwks.stat().st_mtime + 10
    os.utime(jwks, (modified, modified))

    assert verifier.remembered(presented) is None
    with pytest.raises(Unauthenticated, match="signature verification failed"):
        verifier.verify(presented)

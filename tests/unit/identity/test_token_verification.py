"""TokenVerifier: what it accepts, what it rejects, and that rejections never echo the token."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from jitbroker.config import BrokerConfig
from jitbroker.errors import Unauthenticated
from jitbroker.identity.dev_issuer import DevIssuer
from jitbroker.identity.schemas import HumanIdentity, WorkloadIdentity
from jitbroker.identity.verifier import TokenVerifier

CI_ISS = "https://ci.example.test"
OTHER_ISS = "https://other-ci.example.test"
RSA_ISS = "https://rsa-ci.example.test"
PEOPLE_ISS = "https://sso.example.test"
AUDIENCE = "jitbroker"
SUBJECT = "repo:org/repo:ref:refs/heads/main"
REPOSITORY = "org/repo"
RSA_KID = "rsa-ci-1"
EC_KEY_NAMES = ("ci", "other-ci", "people", "attacker")

Signer = Callable[..., str]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_json(value: dict[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode("utf-8"))


def claims_for(iss: str = CI_ISS, **overrides: Any) -> dict[str, Any]:
    """Valid claims for a token of `iss`; an override of None removes the claim."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": iss,
        "sub": SUBJECT,
        "aud": AUDIENCE,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": "jti-1",
        "repository": REPOSITORY,
    }
    claims.update(overrides)
    return {name: value for name, value in claims.items() if value is not None}


def rejection(verifier: TokenVerifier, token: str) -> Unauthenticated:
    """The Unauthenticated error `token` is rejected with (checked for status and no echo)."""
    with pytest.raises(Unauthenticated) as caught:
        verifier.verify(token)
    error = caught.value
    assert error.status == 401
    assert token not in error.detail
    return error


@pytest.fixture(scope="module")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ES256 keys (via DevIssuer) for several issuers plus an RSA key for the RS256 issuer."""
    directory = tmp_path_factory.mktemp("issuer-keys")
    dev = DevIssuer(directory)
    for name in EC_KEY_NAMES:
        dev.ensure_keys(name)
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (directory / "rsa-ci.pem").write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public_jwk = jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
    public_jwk.update({"kid": RSA_KID, "use": "sig", "alg": "RS256"})
    (directory / "rsa-ci.jwks.json").write_text(json.dumps({"keys": [public_jwk]}))
    return directory


@pytest.fixture(scope="module")
def kids(keys_dir: Path) -> dict[str, str]:
    """The kid of every key, by key name."""
    dev = DevIssuer(keys_dir)
    result = {name: dev.jwks(name)["keys"][0]["kid"] for name in EC_KEY_NAMES}
    result["rsa-ci"] = RSA_KID
    return result


@pytest.fixture
def config(make_config: Callable[[dict[str, Any]], BrokerConfig], keys_dir: Path) -> BrokerConfig:
    def issuer(name: str, iss: str, algorithms: list[str], **extra: Any) -> dict[str, Any]:
        return {
            "name": name,
            "issuer": iss,
            "audiences": [AUDIENCE],
            "algorithms": algorithms,
            "jwks_file": str(keys_dir / f"{name}.jwks.json"),
            **extra,
        }

    return make_config(
        {
            "issuers.yaml": {
                "issuers": [
                    issuer("ci", CI_ISS, ["ES256"], max_token_lifetime_seconds=3600),
                    issuer("other-ci", OTHER_ISS, ["ES256"]),
                    issuer("rsa-ci", RSA_ISS, ["RS256"]),
                    issuer("people", PEOPLE_ISS, ["ES256"], human=True, groups_claim="teams"),
                ]
            },
            "workloads.yaml": {
                "workloads": [
                    {
                        "id": "deployer",
                        "issuer": "ci",
                        "subject": SUBJECT,
                        "claims": {"repository": REPOSITORY},
                    },
                    {"id": "other-deployer", "issuer": "other-ci", "subject": SUBJECT},
                    {
                        "id": "protected-deployer",
                        "issuer": "ci",
                        "subject": "repo:org/protected",
                        "claims": {"ref_protected": True},
                    },
                    {"id": "rsa-deployer", "issuer": "rsa-ci", "subject": SUBJECT},
                    {
                        "id": "staging-deployer",
                        "issuer": "ci",
                        "subject": "repo:org/staging",
                        "audience": "jitbroker-staging",
                    },
                ]
            },
        }
    )


@pytest.fixture
def verifier(config: BrokerConfig) -> TokenVerifier:
    return TokenVerifier(config)


@pytest.fixture
def sign(keys_dir: Path, kids: dict[str, str]) -> Signer:
    """sign(claims, key="ci", alg="ES256", **headers): a token signed with that key's PEM.

    The header carries the key's own kid unless `kid` is given (kid=None leaves it out).
    """

    def signer(claims: dict[str, Any], key: str = "ci", alg: str = "ES256", **headers: Any) -> str:
        headers.setdefault("kid", kids[key])
        if headers["kid"] is None:
            del headers["kid"]
        pem = (keys_dir / f"{key}.pem").read_bytes()
        return jwt.encode(claims, pem, algorithm=alg, headers=headers)

    return signer


# --- accepted tokens -----------------------------------------------------------------------


def test_valid_es256_token_binds_to_the_registered_workload(
    verifier: TokenVerifier, sign: Signer
) -> None:
    identity = verifier.verify(sign(claims_for()))

    assert identity == WorkloadIdentity(
        workload_id="deployer", issuer="ci", subject=SUBJECT, jti="jti-1"
    )


def test_token_expired_by_less_than_the_leeway_is_accepted(
    verifier: TokenVerifier, sign: Signer
) -> None:
    now = int(time.time())
    token = sign(claims_for(iat=now - 600, nbf=now - 600, exp=now - 10))

    identity = verifier.verify(token)

    assert isinstance(identity, WorkloadIdentity)
    assert identity.workload_id == "deployer"


def test_valid_rs256_token_is_accepted_for_an_rs256_issuer(
    verifier: TokenVerifier, sign: Signer
) -> None:
    token = sign(claims_for(RSA_ISS), key="rsa-ci", alg="RS256")

    identity = verifier.verify(token)

    assert isinstance(identity, WorkloadIdentity)
    assert identity.workload_id == "rsa-deployer"
    assert identity.issuer == "rsa-ci"


def test_token_of_a_human_issuer_yields_a_human_identity_with_groups_from_configured_claim(
    verifier: TokenVerifier, sign: Signer
) -> None:
    claims = claims_for(
        PEOPLE_ISS,
        sub="alice",
        email="alice@example.com",
        teams=["dba", "oncall"],
        groups=["not-the-configured-claim"],
        repository=None,
    )

    identity = verifier.verify(sign(claims, key="people"))

    assert identity == HumanIdentity(
        subject="alice",
        issuer="people",
        email="alice@example.com",
        groups=("dba", "oncall"),
        jti="jti-1",
    )


# --- algorithm attacks ---------------------------------------------------------------------


def test_unsigned_token_with_alg_none_is_rejected(
    verifier: TokenVerifier, kids: dict[str, str]
) -> None:
    header = {"alg": "none", "typ": "JWT", "kid": kids["ci"]}
    token = f"{b64url_json(header)}.{b64url_json(claims_for())}."

    error = rejection(verifier, token)

    assert "algorithm 'none' is not allowed" in error.detail


def test_token_signed_with_hs256_using_the_issuer_public_key_is_rejected(
    verifier: TokenVerifier, keys_dir: Path, kids: dict[str, str]
) -> None:
    public_jwk = DevIssuer(keys_dir).jwks("ci")["keys"][0]
    public_pem = jwt.algorithms.ECAlgorithm.from_jwk(public_jwk).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = (
        f"{b64url_json({'alg': 'HS256', 'typ': 'JWT', 'kid': kids['ci']})}."
        f"{b64url_json(claims_for())}"
    )
    mac = hmac.new(public_pem, signing_input.encode("ascii"), hashlib.sha256).digest()
    token = f"{signing_input}.{b64url(mac)}"

    error = rejection(verifier, token)

    assert "algorithm 'HS256' is not allowed" in error.detail


def test_es256_token_for_an_issuer_that_only_allows_rs256_is_rejected(
    verifier: TokenVerifier, sign: Signer
) -> None:
    token = sign(claims_for(RSA_ISS), key="ci", alg="ES256", kid=RSA_KID)

    error = rejection(verifier, token)

    assert "algorithm 'ES256' is not allowed" in error.detail


# --- signature and key attacks -------------------------------------------------------------


def test_token_whose_payload_was_changed_after_signing_is_rejected(
    verifier: TokenVerifier, sign: Signer
) -> None:
    header, _, signature = sign(claims_for()).split(".")
    forged_payload = b64url_json(claims_for(repository="org/evil", sub="repo:org/evil"))
    token = f"{header}.{forged_payload}.{signature}"

    error = rejection(verifier, token)

    assert "signature verification failed" in error.detail


def test_token_claiming_issuer_a_but_signed_with_issuer_b_key_is_rejected(
    verifier: TokenVerifier, sign: Signer
) -> None:
    token = sign(claims_for(CI_ISS), key="other-ci")

    error = rejection(verifier, token)

    assert "signing key is not in the issuer's key set" in error.detail


def test_token_signed_by_another_key_reusing_the_issuer_kid_is_rejected(
    verifier: TokenVerifier, sign: Signer, kids: dict[str, str]
) -> None:
    token = sign(claims_for(), key="attacker", kid=kids["ci"])

    error = rejection(verifier, token)

    assert "signature verification failed" in error.detail


def test_token_with_an_unknown_kid_is_rejected(verifier: TokenVerifier, sign: Signer) -> None:
    token = sign(claims_for(), key="ci", kid="ci-key-that-was-rotated-away")

    error = rejection(verifier, token)

    assert "signing key is not in the issuer's key set" in error.detail


def test_token_with_jku_header_pointing_to_attacker_keys_is_rejected(
    verifier: TokenVerifier, sign: Signer, kids: dict[str, str]
) -> None:
    token = sign(
        claims_for(),
        key="attacker",
        kid=kids["attacker"],
        jku="https://attacker.example.test/jwks.json",
    )

    error = rejection(verifier, token)

    assert "signing key is not in the issuer's key set" in error.detail


def test_token_with_an_unsupported_critical_header_extension_is_rejected(
    verifier: TokenVerifier, sign: Signer
) -> None:
    token = sign(claims_for(), crit=["https://example.test/must-understand"])

    error = rejection(verifier, token)

    assert "malformed" in error.detail


def test_token_with_a_crit_header_the_jwt_library_understands_is_still_rejected(
    verifier: TokenVerifier, keys_dir: Path, kids: dict[str, str]
) -> None:
    # pyjwt drops "b64": true when encoding, so build and sign the token by hand.
    header = {"alg": "ES256", "typ": "JWT", "kid": kids["ci"], "crit": ["b64"], "b64": True}
    signing_input = f"{b64url_json(header)}.{b64url_json(claims_for())}"
    es256 = jwt.get_algorithm_by_name("ES256")
    private_key = es256.prepare_key((keys_dir / "ci.pem").read_bytes())
    token = f"{signing_input}.{b64url(es256.sign(signing_input.encode('ascii'), private_key))}"

    error = rejection(verifier, token)

    assert "critical header extension" in error.detail


# --- claims --------------------------------------------------------------------------------


def test_token_from_an_issuer_that_is_not_configured_is_rejected(
    verifier: TokenVerifier, sign: Signer
) -> None:
    token = sign(claims_for("https://untrusted.example.test"))

    error = rejection(verifier, token)

    assert "issuer is not trusted" in error.detail


def test_token_for_another_audience_is_rejected(verifier: TokenVerifier, sign: Signer) -> None:
    token = sign(claims_for(aud="some-other-service"))

    error = rejection(verifier, token)

    assert "audience" in error.detail


def test_token_expired_beyond_the_leeway_is_rejected(verifier: TokenVerifier, sign: Signer) -> None:
    now = int(time.time())
    token = sign(claims_for(iat=now - 900, nbf=now - 900, exp=now - 120))

    error = rejection(verifier, token)

    assert "expired" in error.detail


def test_token_whose_nbf_is_in_the_future_beyond_the_leeway_is_rejected(
    verifier: TokenVerifier, sign: Signer
) -> None:
    token = sign(claims_for(nbf=int(time.time()) + 120))

    error = rejection(verifier, token)

    assert "not yet valid" in error.detail


def test_token_whose_iat_is_in_the_future_beyond_the_leeway_is_rejected(
    verifier: TokenVerifier, sign: Signer
) -> None:
    token = sign(claims_for(iat=int(time.time()) + 120, nbf=None))

    error = rejection(verifier, token)

    assert "not yet valid" in error.detail


@pytest.mark.parametrize("claim", ["exp", "iat"])
def test_token_missing_a_required_time_claim_is_rejected_naming_the_claim(
    verifier: TokenVerifier, sign: Signer, claim: str
) -> None:
    token = sign(claims_for(**{claim: None}))

    error = rejection(verifier, token)

    assert f"missing the required claim '{claim}'" in error.detail


def test_token_of_a_trusted_issuer_for_an_unregistered_subject_is_rejected(
    verifier: TokenVerifier, sign: Signer
) -> None:
    token = sign(claims_for(sub="repo:org/unknown:ref:refs/heads/main"))

    error = rejection(verifier, token)

    assert "not bound to a registered workload" in error.detail


def test_token_whose_claims_do_not_match_the_workload_constraints_is_rejected(
    verifier: TokenVerifier, sign: Signer
) -> None:
    token = sign(claims_for(repository="org/another-repo"))

    error = rejection(verifier, token)

    assert "not bound to a registered workload" in error.detail


def test_token_whose_claim_has_a_different_json_type_than_the_constraint_is_rejected(
    verifier: TokenVerifier, sign: Signer
) -> None:
    token = sign(claims_for(sub="repo:org/protected", ref_protected=1))

    error = rejection(verifier, token)

    assert "not bound to a registered workload" in error.detail


# --- shape ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "token",
    [
        "not.a.jwt",
        "random text that is not a token",
        "a.b",
        "eyJhbGciOiJFUzI1NiJ9.bm90IGpzb24.c2ln",
    ],
    ids=["three-segments-not-base64-json", "random-text", "two-segments", "payload-not-json"],
)
def test_malformed_token_is_rejected(verifier: TokenVerifier, token: str) -> None:
    error = rejection(verifier, token)

    assert "malformed" in error.detail


def test_token_larger_than_8_kib_is_rejected_before_it_is_parsed(
    verifier: TokenVerifier, sign: Signer
) -> None:
    token = sign(claims_for(padding="x" * 8192))

    error = rejection(verifier, token)

    assert "larger than 8192 bytes" in error.detail


def test_token_living_longer_than_the_issuer_allows_is_rejected(
    verifier: TokenVerifier, sign: Signer
) -> None:
    now = int(time.time())
    token = sign(claims_for(iat=now, exp=now + 2 * 3600))

    error = rejection(verifier, token)

    assert "lifetime exceeds 3600s" in error.detail


def test_workload_bound_to_an_audience_rejects_a_token_for_another_audience(
    verifier: TokenVerifier, sign: Signer
) -> None:
    token = sign(claims_for(sub="repo:org/staging", aud=AUDIENCE))

    error = rejection(verifier, token)

    assert "not bound to a registered workload" in error.detail

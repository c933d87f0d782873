"""The SSH engine: which public keys it accepts, and that it hands out only what it asked for."""

from __future__ import annotations

import time
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    SSHCertificateBuilder,
    SSHCertificateType,
    load_ssh_public_key,
)

from jitbroker.config import ProfileConfig
from jitbroker.engines.ssh import SshEngine, normalised_public_key
from jitbroker.errors import VaultRejected

PROFILE = ProfileConfig.model_validate(
    {
        "id": "demo-ssh",
        "engine": "ssh",
        "mount": "ssh",
        "destination": "ssh://bastion.internal",
        "max_ttl_seconds": 3600,
        "scopes": [
            {"name": "read", "role": "self"},
            {"name": "write", "role": "deploy", "principals": ["deploy"]},
        ],
    }
)


def openssh_line(key: Any) -> str:
    return str(key.public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode())


class SigningVault:
    """Signs like OpenBao's `<mount>/sign/<role>`, optionally getting the principals wrong."""

    def __init__(self, *, principals: list[str] | None = None) -> None:
        self.ca = ed25519.Ed25519PrivateKey.generate()
        self.principals = principals
        self.requests: list[dict[str, Any]] = []

    def write(self, path: str, **data: Any) -> dict[str, Any]:
        self.requests.append({"path": path, **data})
        now = int(time.time())
        principals = self.principals or data["valid_principals"].split(",")
        certificate = (
            SSHCertificateBuilder()
            .public_key(load_ssh_public_key(data["public_key"].encode()))  # type: ignore[arg-type]
            .serial(4242)
            .type(SSHCertificateType.USER)
            .key_id(data["key_id"].encode())
            .valid_principals([p.encode() for p in principals])
            .valid_after(now - 30)
            .valid_before(now + int(data["ttl"].removesuffix("s")))
            .sign(self.ca)
        )
        signed = certificate.public_bytes().decode()
        return {"data": {"serial_number": "1092", "signed_key": signed}}


@pytest.fixture
def workload_key() -> str:
    return openssh_line(ed25519.Ed25519PrivateKey.generate().public_key())


def test_public_key_line_is_kept_without_its_comment(workload_key: str) -> None:
    assert normalised_public_key(f"  {workload_key} ci@runner-42\n") == workload_key


def test_certificate_is_refused_where_a_public_key_belongs(workload_key: str) -> None:
    signed = SigningVault().write(
        "ssh/sign/self", public_key=workload_key, valid_principals="x", key_id="k", ttl="60s"
    )

    with pytest.raises(ValueError, match="not a certificate"):
        normalised_public_key(signed["data"]["signed_key"])


def test_short_rsa_key_is_refused() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    with pytest.raises(ValueError, match="at least 3072 bits"):
        normalised_public_key(openssh_line(key.public_key()))


@pytest.mark.parametrize("text", ["", "hello", "ssh-ed25519 bm90IGEga2V5", "a\nb"])
def test_text_that_is_no_public_key_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="OpenSSH public key line"):
        normalised_public_key(text)


def test_certificate_names_the_workload_when_the_scope_names_no_principals(
    workload_key: str,
) -> None:
    vault = SigningVault()

    issued = SshEngine(vault).issue(  # type: ignore[arg-type]
        PROFILE,
        PROFILE.scopes[0],
        ttl_seconds=300,
        grant_id="grt_1",
        labels={"workload": "demo-pipeline", "task_id": "tsk_1"},
        public_key=workload_key,
    )

    assert vault.requests[0]["valid_principals"] == "demo-pipeline"
    assert vault.requests[0]["ttl"] == "300s"
    assert issued.lease_ref == "ssh/sign/self/4242"
    assert issued.principal == "demo-pipeline"
    assert 299 <= issued.lease_ttl_seconds <= 300
    assert issued.secret == {}
    assert issued.route_credential() == issued.public["certificate"]


def test_certificate_with_other_principals_than_asked_is_not_handed_out(
    workload_key: str,
) -> None:
    engine = SshEngine(SigningVault(principals=["root"]))  # type: ignore[arg-type]

    with pytest.raises(VaultRejected, match="wrong principals"):
        engine.issue(
            PROFILE,
            PROFILE.scopes[1],
            ttl_seconds=300,
            grant_id="grt_1",
            labels={"workload": "demo-pipeline", "task_id": "tsk_1"},
            public_key=workload_key,
        )


def test_ssh_certificate_is_never_reported_gone_by_openbao() -> None:
    engine = SshEngine(SigningVault())  # type: ignore[arg-type]

    engine.revoke("ssh/sign/self/4242")

    assert engine.is_revoked("ssh/sign/self/4242") is False
    assert engine.list_leases(PROFILE) is None

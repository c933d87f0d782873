"""What a receipt says of an SSH certificate, which OpenBao cannot revoke: until when it lives."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from tests.unit.fakes import PIPELINE

from jitbroker.audit.events import RequestContext
from jitbroker.bootstrap import Broker
from jitbroker.grants import service as grants
from jitbroker.grants.schemas import GrantRecord, GrantRequest
from jitbroker.revocation.receipts import ReceiptCheck
from jitbroker.revocation.verification import verify_revoked


@pytest.fixture
def ssh_grant(broker: Broker, open_task_id: str) -> GrantRecord:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    request = GrantRequest(
        profile="demo-ssh",
        scopes=["read"],
        ttl_seconds=120,
        justification="deploy",
        public_key=key.public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode(),
    )
    return grants.request_grant(
        broker,
        workload=PIPELINE,
        task_id=open_task_id,
        request=request,
        idempotency_key=None,
        context=RequestContext(),
    ).grant


def checks(broker: Broker, grant: GrantRecord) -> dict[str, ReceiptCheck]:
    return {check.name: check for check in verify_revoked(broker, grant)}


def test_live_ssh_certificate_is_reported_bounded_by_its_valid_before(
    broker: Broker, ssh_grant: GrantRecord
) -> None:
    found = checks(broker, ssh_grant)

    assert ssh_grant.expires_at is not None
    assert found["ssh_cert_expired_or_krl"].status == "bounded"
    assert ssh_grant.expires_at.isoformat() in found["ssh_cert_expired_or_krl"].detail
    assert "KRL" in found["ssh_cert_expired_or_krl"].detail
    assert found["openbao_lease_absent"].status == "skipped"


def test_expired_ssh_certificate_passes(broker: Broker, ssh_grant: GrantRecord) -> None:
    assert ssh_grant.expires_at is not None
    expires_at = ssh_grant.expires_at
    broker.clock = lambda: expires_at + timedelta(seconds=1)

    assert checks(broker, ssh_grant)["ssh_cert_expired_or_krl"].status == "passed"

"""Grant requests for ssh profiles carry the workload's public key; no other profile takes one."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from tests.unit.fakes import PIPELINE, READ_REQUEST

from jitbroker.audit.events import RequestContext
from jitbroker.bootstrap import Broker
from jitbroker.errors import InvalidRequest
from jitbroker.grants import service as grants
from jitbroker.grants.schemas import GrantRequest


def new_public_key() -> str:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()


PUBLIC_KEY = new_public_key()


def ssh_request(**fields: object) -> GrantRequest:
    body = {"profile": "demo-ssh", "scopes": ["read"], "ttl_seconds": 60, "justification": "ssh"}
    return GrantRequest.model_validate({**body, **fields})


def request(broker: Broker, task_id: str, body: GrantRequest) -> grants.GrantOutcome:
    return grants.request_grant(
        broker,
        workload=PIPELINE,
        task_id=task_id,
        request=body,
        idempotency_key=None,
        context=RequestContext(),
    )


def test_ssh_grant_without_a_public_key_is_refused(broker: Broker, open_task_id: str) -> None:
    with pytest.raises(InvalidRequest, match="give `public_key`"):
        request(broker, open_task_id, ssh_request())


def test_public_key_for_a_database_profile_is_refused(broker: Broker, open_task_id: str) -> None:
    body = READ_REQUEST.model_copy(update={"public_key": PUBLIC_KEY})

    with pytest.raises(InvalidRequest, match="not an ssh profile"):
        request(broker, open_task_id, body)


def test_ssh_grant_records_the_key_it_was_asked_for(broker: Broker, open_task_id: str) -> None:
    outcome = request(broker, open_task_id, ssh_request(public_key=f"{PUBLIC_KEY} me@laptop"))

    assert outcome.grant.public_key == PUBLIC_KEY
    assert outcome.grant.digest_intact


def test_swapping_the_key_of_a_recorded_grant_breaks_its_digest(
    broker: Broker, open_task_id: str
) -> None:
    grant = request(broker, open_task_id, ssh_request(public_key=PUBLIC_KEY)).grant

    grant.public_key = new_public_key()

    assert not grant.digest_intact

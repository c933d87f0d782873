"""Rotating the broker's signing key: both keys published, routes opened before still honoured."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import fakeredis
import pytest

from jitbroker.bootstrap import Broker, build_broker
from jitbroker.config import Settings
from jitbroker.revocation.endpoints import public_keys
from jitbroker.routes.schemas import AccessCheck, Route
from jitbroker.routes.service import check_access, credential_fingerprint
from jitbroker.signing import BrokerSigningKey

SECRET = "a-credential-issued-before-the-rotation"


@pytest.fixture
def retiring_key(broker: Broker) -> BrokerSigningKey:
    return broker.signing_key


@pytest.fixture
def rotated(broker: Broker, retiring_key: BrokerSigningKey, tmp_path: Path) -> Broker:
    """The same broker after the rotation: a new key, the old one kept as previous."""
    new_key = BrokerSigningKey.load_or_create(tmp_path / "new-key.pem")
    broker.signing_key = new_key
    broker.previous_signing_key = retiring_key
    return broker


@pytest.fixture
def route_before_rotation(broker: Broker, retiring_key: BrokerSigningKey) -> Route:
    route = Route(
        grant_id="grt_before",
        workload="demo-pipeline",
        task_id="tsk_before",
        profile="demo-db",
        destinations=["postgres://db:5432/app"],
        expires_at=broker.clock() + timedelta(minutes=5),
    )
    broker.routes.open(route, credential_fingerprint(broker, SECRET, key=retiring_key))
    return route


def test_keys_endpoint_publishes_the_new_and_the_retiring_key(
    rotated: Broker, retiring_key: BrokerSigningKey
) -> None:
    kids = [k["kid"] for k in public_keys(rotated)["keys"]]

    assert kids == [rotated.signing_key.key_id, retiring_key.key_id]


def test_credential_issued_before_the_rotation_still_reaches_its_destination(
    route_before_rotation: Route, rotated: Broker
) -> None:
    decision = check_access(
        rotated, check=AccessCheck(destination="postgres://db:5432/app", credential=SECRET)
    )

    assert decision.allow
    assert decision.grant_id == route_before_rotation.grant_id


def test_without_the_retiring_key_an_old_credential_is_refused(
    route_before_rotation: Route, rotated: Broker
) -> None:
    rotated.previous_signing_key = None

    decision = check_access(
        rotated, check=AccessCheck(destination="postgres://db:5432/app", credential=SECRET)
    )

    assert not decision.allow


def test_previous_key_file_is_loaded_at_start(demo_config_dir: Path, tmp_path: Path) -> None:
    old = BrokerSigningKey.load_or_create(tmp_path / "old.pem")
    settings = Settings(
        config_dir=demo_config_dir,
        audit_stdout=False,
        audit_file=None,
        signing_key_file=tmp_path / "new.pem",
        signing_previous_key_file=tmp_path / "old.pem",
    )

    broker = build_broker(settings, redis_client=fakeredis.FakeRedis())

    assert broker.previous_signing_key is not None
    assert broker.previous_signing_key.key_id == old.key_id
    assert [k.key_id for k in broker.signing_keys][1] == old.key_id

"""Credentials show what they are for, never their secrets, when printed or logged."""

from __future__ import annotations

import logging
import pickle

import pytest
from tests.unit.client.scripted_api import SECRET

from jitbroker.client import Credential


@pytest.fixture
def credential() -> Credential:
    return Credential(
        grant_id="grt_1",
        task_id="tsk_1",
        profile="demo-db",
        engine="database",
        scopes=["read"],
        destination="postgres://127.0.0.1:5432/postgres",
        fields={"username": "v-demo-ro-abc", "password": SECRET},
    )


def test_repr_shows_the_username_and_masks_the_password(credential: Credential) -> None:
    assert (
        repr(credential) == "Credential(profile='demo-db', username='v-demo-ro-abc', password=***)"
    )


def test_str_and_format_are_masked_too(credential: Credential) -> None:
    assert SECRET not in str(credential)
    assert SECRET not in f"{credential}"
    assert SECRET not in f"{credential!r}"


def test_unknown_fields_are_masked_by_default() -> None:
    credential = Credential(
        grant_id="grt_1",
        task_id="tsk_1",
        profile="some-pki",
        engine="pki",
        scopes=["read"],
        destination="https://svc.internal",
        fields={"serial": "1a:2b", "private_key": "-----BEGIN PRIVATE KEY-----", "api_key": "k"},
    )

    assert repr(credential) == (
        "Credential(profile='some-pki', serial='1a:2b', private_key=***, api_key=***)"
    )


def test_logging_the_credential_does_not_leak_it(
    credential: Credential, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)

    logging.getLogger("agent").info("got %s", credential)

    assert "password=***" in caplog.text
    assert SECRET not in caplog.text


def test_fields_are_readable_by_attribute_and_key(credential: Credential) -> None:
    assert credential.password == SECRET
    assert credential["username"] == "v-demo-ro-abc"
    assert credential.field_names == ["username", "password"]
    with pytest.raises(AttributeError, match="no field 'token'"):
        _ = credential.token


def test_credential_refuses_to_be_pickled(credential: Credential) -> None:
    with pytest.raises(TypeError, match="not pickled"):
        pickle.dumps(credential)

"""The approver page over the in-memory broker, with and without dev mode."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from jitbroker.app import create_app
from jitbroker.bootstrap import Broker
from jitbroker.identity.dev_issuer import DevIssuer


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def dev_client(broker: Broker, dev_issuer: DevIssuer) -> Iterator[TestClient]:
    """The app as the dev stack runs it: JITBROKER_DEV_ISSUER_DIR set."""
    broker.settings = broker.settings.model_copy(update={"dev_issuer_dir": dev_issuer.directory})
    with TestClient(create_app(broker=broker), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def alice_auth(broker: Broker, dev_issuer: DevIssuer) -> dict[str, str]:
    """A DBA, as the OIDC proxy would pass her ID token."""
    return bearer(dev_issuer.human_token(broker.config, "alice"))


@pytest.fixture
def developer_auth(broker: Broker, dev_issuer: DevIssuer) -> dict[str, str]:
    """A person outside the approver groups of every demo rule."""
    token = dev_issuer.sign(
        broker.config.issuers["test-humans"], "dave", extra_claims={"groups": ["developers"]}
    )
    return bearer(token)


@pytest.fixture
def task_id(client: TestClient, pipeline_auth: dict[str, str]) -> str:
    response = client.post("/v1/tasks", json={"purpose": "schema migration"}, headers=pipeline_auth)
    assert response.status_code == 201, response.text
    return str(response.json()["task_id"])


@pytest.fixture
def pending_grant_id(client: TestClient, pipeline_auth: dict[str, str], task_id: str) -> str:
    """A `write` request on demo-db, which the demo policy sends to a DBA."""
    response = client.post(
        f"/v1/tasks/{task_id}/grants",
        json={
            "profile": "demo-db",
            "scopes": ["write"],
            "ttl_seconds": 600,
            "justification": "add an index to orders for the Q3 report",
        },
        headers=pipeline_auth,
    )
    assert response.status_code == 202, response.text
    return str(response.json()["grant_id"])

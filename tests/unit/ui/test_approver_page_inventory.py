"""The approver page shows the requesting workload's inventory entry and the privilege asked for."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests.unit.fakes import write_demo_config

from jitbroker.bootstrap import Broker
from jitbroker.identity.dev_issuer import DevIssuer

PAGE = "/ui/approvals"
OWNED_AGENT = """
workloads:
  - id: orders-agent
    issuer: test-workloads
    subject: orders-agent
    owner_team: orders-team
    custodian: dana@example.test
    backup_approver: alice@example.test
    purpose: Reindexes the orders search.
    kind: agent
"""


@pytest.fixture
def demo_config_dir(tmp_path: Path) -> Path:
    """The unit demo configuration plus an owned agent."""
    directory = tmp_path / "demo-config"
    directory.mkdir()
    write_demo_config(directory)
    (directory / "agents.yaml").write_text(OWNED_AGENT)
    return directory


def ask(client: TestClient, auth: dict[str, str], scopes: list[str]) -> None:
    task = client.post("/v1/tasks", json={"purpose": "reindex"}, headers=auth).json()
    body = {"profile": "demo-db", "scopes": scopes, "ttl_seconds": 600, "justification": "x"}
    response = client.post(f"/v1/tasks/{task['task_id']}/grants", json=body, headers=auth)
    assert response.status_code == 202, response.text


def test_request_shows_the_owner_team_custodian_backup_and_privilege(
    client: TestClient, broker: Broker, dev_issuer: DevIssuer, alice_auth: dict[str, str]
) -> None:
    agent = {"Authorization": f"Bearer {dev_issuer.workload_token(broker.config, 'orders-agent')}"}
    ask(client, agent, ["admin"])

    page = client.get(PAGE, headers=alice_auth).text

    for shown in (
        "orders-team · custodian dana@example.test · backup alice@example.test",
        "Reindexes the orders search.",
        '<strong class="privileged">privileged</strong> — admin',
    ):
        assert shown in page, shown
    assert "not recorded" not in page


def test_request_of_an_unowned_workload_says_so_and_shows_no_privilege_for_write(
    client: TestClient, pipeline_auth: dict[str, str], alice_auth: dict[str, str]
) -> None:
    ask(client, pipeline_auth, ["write"])

    page = client.get(PAGE, headers=alice_auth).text

    assert "unowned — no owner team recorded" in page
    assert "not privileged (write)" in page

"""`jitbroker approvals` against the API in-process (memory broker, real HTTP handling)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from jitbroker.app import create_app
from jitbroker.bootstrap import Broker
from jitbroker.cli import app as cli
from jitbroker.cli import broker_http
from jitbroker.identity.dev_issuer import DevIssuer

WRITE = {"profile": "demo-db", "scopes": ["write"], "ttl_seconds": 600, "justification": "migrate"}


@pytest.fixture
def api(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    application = create_app(broker=broker)

    def in_process(api_url: str, token: str) -> httpx.Client:
        return TestClient(application, headers={"Authorization": f"Bearer {token}"})

    monkeypatch.setattr(broker_http, "client_factory", in_process)


@pytest.fixture
def issuer(demo_config_dir: Path) -> DevIssuer:
    return DevIssuer(demo_config_dir / "keys")


@pytest.fixture
def alice(broker: Broker, issuer: DevIssuer) -> str:
    return issuer.human_token(broker.config, "alice")


@pytest.fixture
def pending_id(broker: Broker, issuer: DevIssuer, api: None) -> str:
    auth = {"Authorization": f"Bearer {issuer.workload_token(broker.config, 'demo-pipeline')}"}
    client = TestClient(create_app(broker=broker))
    task = client.post("/v1/tasks", json={"purpose": "migration"}, headers=auth).json()
    grant = client.post(f"/v1/tasks/{task['task_id']}/grants", json=WRITE, headers=auth)
    assert grant.status_code == 202
    return str(grant.json()["grant_id"])


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["approvals", *args])
    return result.exit_code, result.stdout, result.stderr


def test_list_shows_the_pending_request_with_time_left(pending_id: str, alice: str) -> None:
    code, out, _ = run("list", "--token", alice)

    assert code == 0
    assert pending_id in out
    assert "demo-pipeline → demo-db write for 600s" in out
    assert "[0/1," in out


def test_approve_turns_the_request_approved(pending_id: str, alice: str) -> None:
    code, out, _ = run("approve", pending_id, "--token", alice, "-m", "looks fine", "--ttl", "60")

    assert code == 0
    assert out.strip() == f"{pending_id}: approved"


def test_deny_needs_a_comment_and_ends_the_request(pending_id: str, alice: str) -> None:
    code, out, _ = run("deny", pending_id, "--token", alice, "-m", "not now")

    assert code == 0
    assert out.strip() == f"{pending_id}: denied"


def test_refusal_prints_the_problem_detail_and_fails(pending_id: str, alice: str) -> None:
    code, _, err = run("approve", pending_id, "--token", alice, "--ttl", "99999")

    assert code == 1
    assert "422" in err
    assert "never extend" in err


def test_missing_token_is_a_usage_error(api: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JITBROKER_TOKEN", raising=False)

    code, _, err = run("list")

    assert code == 2
    assert "approver token is needed" in err

"""The inventory API and `jitbroker workloads|reviews|report` against the app in-process."""

from __future__ import annotations

import httpx
import pytest
from fastapi.testclient import TestClient
from tests.unit.inventory.conftest import MovableClock
from typer.testing import CliRunner

from jitbroker.app import create_app
from jitbroker.bootstrap import Broker
from jitbroker.cli import app as cli
from jitbroker.cli import broker_http
from jitbroker.identity.dev_issuer import DevIssuer
from jitbroker.inventory.service import enforce_reviews


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def admin_token(broker: Broker, dev_issuer: DevIssuer) -> str:
    return dev_issuer.human_token(broker.config, "root-admin")


@pytest.fixture
def owner_token(broker: Broker, dev_issuer: DevIssuer) -> str:
    return dev_issuer.human_token(broker.config, "owen")


@pytest.fixture
def in_process_cli(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's HTTP calls go to the app in this process."""
    application = create_app(broker=broker)

    def in_process(api_url: str, token: str) -> httpx.Client:
        return TestClient(application, headers={"Authorization": f"Bearer {token}"})

    monkeypatch.setattr(broker_http, "client_factory", in_process)


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_inventory_shows_owner_environment_privilege_sign_off_and_next_review(
    client: TestClient, clock: MovableClock, admin_token: str
) -> None:
    response = client.get("/v1/workloads", headers=bearer(admin_token))

    assert response.status_code == 200, response.text
    items = {item["id"]: item for item in response.json()}
    agent = items["ledger-agent"]
    assert (agent["owner_team"], agent["environment"], agent["kind"]) == (
        "ledger-team",
        "dev",
        "agent",
    )
    assert agent["privileged"] is True
    assert agent["privileged_scopes"] == ["demo-db/admin (admin)"]
    assert agent["next_review_due"] == "2030-07-03T12:00:00Z"
    assert agent["last_used_at"] is None
    assert items["ledger-sync"]["sign_off"] == "missing"
    assert items["ledger-sync"]["privileged"] is False
    assert (items["stray-prod"]["ownership"], items["stray-prod"]["missing"]) == (
        "unowned",
        ["owner_team", "purpose"],
    )


def test_inventory_is_for_admin_groups_only(client: TestClient, owner_token: str) -> None:
    response = client.get("/v1/workloads", headers=bearer(owner_token))

    assert response.status_code == 403


def test_reduce_review_without_a_comment_is_refused(
    client: TestClient, clock: MovableClock, owner_token: str
) -> None:
    response = client.post(
        "/v1/workloads/ledger-agent/review",
        json={"decision": "reduce"},
        headers=bearer(owner_token),
    )

    assert response.status_code == 422
    assert "needs a comment" in response.json()["detail"]


def test_owner_review_answers_the_restarted_review_clock(
    client: TestClient, clock: MovableClock, owner_token: str
) -> None:
    clock.advance(days=10)

    response = client.post(
        "/v1/workloads/ledger-agent/review",
        json={"decision": "keep", "comment": "still answers support questions"},
        headers=bearer(owner_token),
    )

    assert response.status_code == 200, response.text
    assert response.json()["last_review"]["reviewed_by"] == "owen"
    assert response.json()["next_review_due"] == "2030-07-13T12:00:00Z"


def test_sign_off_by_the_owner_team_is_recorded_and_audited(
    client: TestClient, broker: Broker, clock: MovableClock, owner_token: str
) -> None:
    response = client.post(
        "/v1/workloads/ledger-sync/sign-off",
        json={"comment": "binding checked"},
        headers=bearer(owner_token),
    )

    assert response.status_code == 200, response.text
    assert response.json()["signed_by"] == "owen"
    [event] = [e for e in broker.audit.read_all() if e.type == "workload.signed_off"]
    assert (event.workload, event.details["by"]) == ("ledger-sync", "owen")


def test_cli_workloads_list_prints_one_row_per_workload(
    in_process_cli: None, clock: MovableClock, admin_token: str
) -> None:
    code, out, _ = run("workloads", "list", "--token", admin_token)

    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].split() == [
        "WORKLOAD",
        "OWNER",
        "ENV",
        "KIND",
        "PRIVILEGED",
        "STATE",
        "LAST",
        "USED",
        "NEXT",
        "REVIEW",
    ]
    agent = next(line for line in lines if line.startswith("ledger-agent "))
    assert agent.split() == [
        "ledger-agent",
        "ledger-team",
        "dev",
        "agent",
        "yes",
        "active",
        "never",
        "2030-07-03",
        "12:00",
    ]
    assert "stray-prod: unowned, missing owner_team, purpose" in lines


def test_cli_review_and_reviews_due_show_the_cycle(
    broker: Broker, in_process_cli: None, clock: MovableClock, admin_token: str, owner_token: str
) -> None:
    enforce_reviews(broker)
    clock.advance(days=31)

    _, due, _ = run("reviews", "due", "--token", admin_token)
    code, reviewed, err = run(
        "workloads", "review", "ledger-agent", "keep", "-m", "still needed", "--token", owner_token
    )
    _, after, _ = run("reviews", "due", "--token", admin_token)

    assert "ledger-agent" in due
    assert "2030-07-10 12:00" in due
    assert code == 0, err
    assert reviewed == (
        "ledger-agent: keep by owen; state active, next review due 2030-08-03 12:00\n"
    )
    assert "ledger-agent" not in after


def test_cli_report_unused_lists_never_used_scopes(
    in_process_cli: None, clock: MovableClock, admin_token: str
) -> None:
    code, out, _ = run("report", "unused", "--days", "30", "--token", admin_token)

    assert code == 0, out
    row = next(line for line in out.splitlines() if line.startswith("ledger-agent "))
    assert row.split()[:4] == ["ledger-agent", "demo-db/read", "read", "never"]

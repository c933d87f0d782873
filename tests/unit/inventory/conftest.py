"""The unit demo configuration plus owned, unowned, prod and expiring workloads, a clock the
tests move, and the people who own, review and administer them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tests.unit.fakes import write_demo_config

from jitbroker.bootstrap import Broker
from jitbroker.identity.schemas import HumanIdentity, WorkloadIdentity

GOVERNANCE = """
dev_humans:
  - {subject: owen, groups: [ledger-team], issuer: test-humans}
workloads:
  - id: ledger-agent
    issuer: test-workloads
    subject: ledger-agent
    owner_team: ledger-team
    custodian: owen@example.test
    backup_approver: alice@example.test
    purpose: Answers questions about the ledger.
    kind: agent
    review_every: 30d
  - id: ledger-sync
    issuer: test-workloads
    subject: ledger-sync
    owner_team: ledger-team
    purpose: Copies settled payments into the ledger.
    environment: prod
    kind: integration
  - id: stray-prod
    issuer: test-workloads
    subject: stray-prod
    environment: prod
  - id: old-export
    issuer: test-workloads
    subject: old-export
    owner_team: ledger-team
    purpose: A one-off export.
    expires_on: 2030-06-30
webhooks:
  - name: owners
    url: https://hooks.example.test/owners
    secret_env: JITBROKER_UNIT_WEBHOOK_SECRET
    events: [review.due, review.overdue, workload.retired]
profiles:
  - id: ledger-prod-db
    engine: database
    mount: database
    destination: postgres://db.test/ledger
    max_ttl_seconds: 900
    environment: prod
    scopes:
      - {name: read, role: ledger-ro}
rules:
  - name: ledger-prod-read
    when: request.profile == "ledger-prod-db"
    effect: allow
"""
START = datetime(2030, 6, 3, 12, 0, tzinfo=UTC)
OWEN = HumanIdentity(subject="owen", issuer="test-humans", groups=("ledger-team",))
MALLORY = HumanIdentity(subject="mallory", issuer="test-humans", groups=("developers",))
ADMIN = HumanIdentity(subject="root-admin", issuer="test-humans", groups=("platform-admins",))
LEDGER_AGENT = WorkloadIdentity(
    workload_id="ledger-agent", issuer="test-workloads", subject="ledger-agent"
)
LEDGER_SYNC = WorkloadIdentity(
    workload_id="ledger-sync", issuer="test-workloads", subject="ledger-sync"
)
STRAY_PROD = WorkloadIdentity(
    workload_id="stray-prod", issuer="test-workloads", subject="stray-prod"
)


@dataclass
class MovableClock:
    """The broker's clock, moved by hand."""

    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def demo_config_dir(tmp_path: Path) -> Path:
    """The unit demo configuration plus the governance workloads, profile and webhook."""
    directory = tmp_path / "demo-config"
    directory.mkdir()
    write_demo_config(directory)
    (directory / "governance.yaml").write_text(GOVERNANCE)
    return directory


@pytest.fixture
def clock(broker: Broker) -> MovableClock:
    """Installed as the broker's clock, starting on 2030-06-03 at noon (UTC)."""
    movable = MovableClock(START)
    broker.clock = movable
    return movable

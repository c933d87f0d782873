"""In-memory stand-ins for unit tests: fakeredis state, a fake engine, a collecting queue."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import fakeredis
from pydantic import SecretStr

from jitbroker.bootstrap import Broker, build_broker
from jitbroker.config import ProfileConfig, ScopeBinding, Settings, load_config
from jitbroker.engines.base import IssuedCredential
from jitbroker.errors import VaultUnavailable
from jitbroker.grants.schemas import GrantRequest
from jitbroker.identity.dev_issuer import DevIssuer
from jitbroker.identity.schemas import WorkloadIdentity
from jitbroker.notifications.queue import InMemoryNotificationQueue
from jitbroker.revocation.queue import InMemoryRevocationQueue

ROOT = Path(__file__).resolve().parents[2]

ISSUERS = """
issuers:
  - name: test-workloads
    issuer: https://issuer.test/workloads
    jwks_file: keys/test-workloads.jwks.json
    audiences: [jitbroker]
    algorithms: [ES256]
  - name: test-humans
    issuer: https://issuer.test/humans
    jwks_file: keys/test-humans.jwks.json
    audiences: [jitbroker]
    algorithms: [ES256]
    human: true
workloads:
  - {id: demo-pipeline, issuer: test-workloads, subject: demo-pipeline}
  - {id: other-pipeline, issuer: test-workloads, subject: other-pipeline}
dev_humans:
  - {subject: alice, groups: [dba], issuer: test-humans}
  - {subject: root-admin, groups: [platform-admins], issuer: test-humans}
"""


PIPELINE = WorkloadIdentity(
    workload_id="demo-pipeline", issuer="test-workloads", subject="demo-pipeline"
)
READ_REQUEST = GrantRequest(
    profile="demo-db", scopes=["read"], ttl_seconds=60, justification="unit"
)


class FakeEngine:
    """Issues numbered leases and forgets them on revoke; can be told OpenBao is down."""

    kind = "fake"

    def __init__(self) -> None:
        self.live: set[str] = set()
        self.issued_at: dict[str, datetime] = {}
        self.issued = 0
        self.down = False

    def issue(
        self,
        profile: ProfileConfig,
        binding: ScopeBinding,
        *,
        ttl_seconds: int,
        grant_id: str,
        labels: dict[str, str],
        public_key: str | None = None,
    ) -> IssuedCredential:
        self.issued += 1
        lease = f"{profile.mount}/creds/{binding.role}/{self.issued}"
        self.live.add(lease)
        self.issued_at[lease] = datetime.now(UTC)
        return IssuedCredential(
            lease_ref=lease,
            lease_ttl_seconds=ttl_seconds,
            principal=f"user{self.issued}",
            secret={"password": SecretStr(f"pw-{self.issued}")},
            public={"username": f"user{self.issued}"},
        )

    def revoke(self, lease_ref: str) -> None:
        if self.down:
            raise VaultUnavailable("OpenBao is unavailable during lease revoke")
        self.live.discard(lease_ref)

    def is_revoked(self, lease_ref: str) -> bool:
        return lease_ref not in self.live

    def list_leases(self, profile: ProfileConfig) -> list[str]:
        prefixes = tuple(f"{profile.mount}/creds/{scope.role}/" for scope in profile.scopes)
        return sorted(lease for lease in self.live if lease.startswith(prefixes))

    def lease_issued_at(self, lease_ref: str) -> datetime | None:
        return self.issued_at.get(lease_ref) if lease_ref in self.live else None


def write_demo_config(directory: Path) -> Path:
    """Test issuers and workloads, plus the demo profiles and policy."""
    (directory / "identities.yaml").write_text(ISSUERS)
    for name in ("profiles.yaml", "policy.yaml"):
        (directory / name).write_text((ROOT / "examples/dev" / name).read_text())
    issuer = DevIssuer(directory / "keys")
    for name in ("test-workloads", "test-humans"):
        issuer.ensure_keys(name)
    return directory


def memory_broker(config_dir: Path) -> tuple[Broker, FakeEngine, InMemoryRevocationQueue]:
    settings = Settings(
        config_dir=config_dir,
        vault_addr="http://127.0.0.1:9",
        vault_token=SecretStr("unused"),
        audit_stdout=False,
        audit_file=config_dir.parent / "audit.jsonl",
        signing_key_file=config_dir / "keys" / "broker-signing-key.pem",
    )
    queue = InMemoryRevocationQueue()
    broker = build_broker(
        settings,
        revocations=queue,
        notifications=InMemoryNotificationQueue(),
        redis_client=fakeredis.FakeRedis(),
        config=load_config(config_dir),
    )
    engine = FakeEngine()
    broker.engines = dict.fromkeys(broker.engines, engine)
    return broker, engine, queue

"""`jitbroker doctor`'s checks on fakes: each failure names the thing and says how to fix it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from jitbroker.config import BrokerConfig, load_config
from jitbroker.doctor import (
    Status,
    check_clock,
    check_openbao,
    check_policy,
    check_redis,
    check_roles,
    check_signing_key,
    duration_seconds,
)
from jitbroker.errors import VaultUnavailable
from jitbroker.signing import BrokerSigningKey
from jitbroker.vault import VaultAuth
from jitbroker.vault_policy import required_paths

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


class FakeVault:
    """The VaultClient calls the doctor makes, answered from dictionaries."""

    addr = "https://openbao.example:8200"
    auth = VaultAuth()

    def __init__(self) -> None:
        self.roles: dict[str, dict[str, Any]] = {}
        self.capabilities: dict[str, list[str]] = {}
        self.token: dict[str, Any] = {"policies": ["jitbroker"], "ttl": 86400, "renewable": True}
        self.server_clock = NOW
        self.down = False

    def lookup_self(self) -> dict[str, Any]:
        if self.down:
            raise VaultUnavailable("OpenBao is unavailable")
        return self.token

    def read_optional(self, path: str) -> dict[str, Any] | None:
        return {"data": self.roles[path]} if path in self.roles else None

    def capabilities_self(self, paths: list[str]) -> dict[str, list[str]]:
        return {path: self.capabilities.get(path, ["deny"]) for path in paths}

    def server_time(self) -> datetime:
        return self.server_clock


class FakeRedis:
    def __init__(self, config: dict[str, str] | None) -> None:
        self.config = config

    def ping(self) -> bool:
        return True

    def config_get(self, key: str) -> dict[str, str]:
        if self.config is None:
            raise redis.ResponseError("unknown command 'CONFIG'")
        return {key: self.config.get(key, "")}


@pytest.fixture
def config() -> BrokerConfig:
    return load_config(ROOT / "examples/dev")


@pytest.fixture
def vault(config: BrokerConfig) -> FakeVault:
    """An OpenBao where every role exists with max_ttl = its profile's cap, and the policy fits."""
    fake = FakeVault()
    for profile in config.profiles.values():
        for scope in profile.scopes:
            fake.roles[f"{profile.mount}/roles/{scope.role}"] = {
                "max_ttl": profile.max_ttl_seconds,
                "default_ttl": 30,
            }
    for rule in required_paths(config):
        fake.capabilities[rule.probe_path()] = list(rule.capabilities)
    return fake


def only_profile(config: BrokerConfig, profile_id: str) -> BrokerConfig:
    return config.model_copy(update={"profiles": {profile_id: config.profiles[profile_id]}})


def test_healthy_openbao_passes(vault: FakeVault) -> None:
    result = check_openbao(vault)  # type: ignore[arg-type]

    assert result.status == Status.passed
    assert "policies ['jitbroker']" in result.detail


def test_unreachable_openbao_fails_with_where_to_look(vault: FakeVault) -> None:
    vault.down = True

    result = check_openbao(vault)  # type: ignore[arg-type]

    assert result.status == Status.failed
    assert "does not answer" in result.detail
    assert "JITBROKER_VAULT_ADDR" in result.fix


def test_root_token_is_a_warning(vault: FakeVault) -> None:
    vault.token = {"policies": ["root"], "ttl": 0}

    result = check_openbao(vault)  # type: ignore[arg-type]

    assert result.status == Status.warning
    assert "least-privilege" in result.fix


def test_roles_that_fit_their_profiles_pass(vault: FakeVault, config: BrokerConfig) -> None:
    results = check_roles(vault, only_profile(config, "demo-db"))  # type: ignore[arg-type]

    assert [r.name for r in results] == [
        "role demo-db/read",
        "role demo-db/write",
        "role demo-db/admin",
    ]
    assert all(r.status == Status.passed for r in results)


def test_missing_role_fails_naming_profile_scope_and_role(
    vault: FakeVault, config: BrokerConfig
) -> None:
    del vault.roles["database/roles/demo-rw"]

    result = check_roles(vault, only_profile(config, "demo-db"))[1]  # type: ignore[arg-type]

    assert result.status == Status.failed
    assert "profile 'demo-db' scope 'write' names role 'demo-rw'" in result.detail
    assert "create the role at database/roles/demo-rw (with max_ttl 3600s)" in result.fix


def test_role_without_max_ttl_fails(vault: FakeVault, config: BrokerConfig) -> None:
    vault.roles["database/roles/demo-ro"]["max_ttl"] = 0

    result = check_roles(vault, only_profile(config, "demo-db"))[0]  # type: ignore[arg-type]

    assert result.status == Status.failed
    assert "sets no max TTL" in result.detail
    assert "max_ttl=3600s" in result.fix


def test_role_capped_below_the_profile_fails(vault: FakeVault, config: BrokerConfig) -> None:
    vault.roles["database/roles/demo-ro"]["max_ttl"] = "10m"

    result = check_roles(vault, only_profile(config, "demo-db"))[0]  # type: ignore[arg-type]

    assert result.status == Status.failed
    assert "caps leases at 600s" in result.detail


def test_role_capped_above_the_profile_warns(vault: FakeVault, config: BrokerConfig) -> None:
    vault.roles["database/roles/demo-ro"]["max_ttl"] = 7200

    result = check_roles(vault, only_profile(config, "demo-db"))[0]  # type: ignore[arg-type]

    assert result.status == Status.warning
    assert "its own role with max_ttl=3600s" in result.fix


def test_long_initial_lease_warns(vault: FakeVault, config: BrokerConfig) -> None:
    vault.roles["database/roles/demo-ro"]["default_ttl"] = 0

    result = check_roles(vault, only_profile(config, "demo-db"))[0]  # type: ignore[arg-type]

    assert result.status == Status.warning
    assert "default_ttl" in result.detail


def test_token_role_cap_is_its_explicit_max_ttl(vault: FakeVault, config: BrokerConfig) -> None:
    vault.roles["auth/token/roles/demo-kv-read"] = {
        "token_explicit_max_ttl": 3600,
        "token_max_ttl": 0,
    }

    result = check_roles(vault, only_profile(config, "demo-token"))[0]  # type: ignore[arg-type]

    assert result.status == Status.passed


def test_policy_that_fits_passes(vault: FakeVault, config: BrokerConfig) -> None:
    assert check_policy(vault, config).status == Status.passed  # type: ignore[arg-type]


def test_missing_capability_fails_naming_the_path(vault: FakeVault, config: BrokerConfig) -> None:
    vault.capabilities["sys/leases/revoke/database/creds/demo-ro/doctor-probe"] = ["deny"]

    result = check_policy(vault, config)  # type: ignore[arg-type]

    assert result.status == Status.failed
    assert "sys/leases/revoke/database/creds/demo-ro/* (update)" in result.detail
    assert "jitbroker openbao policy --config DIR" in result.fix


def test_root_capabilities_satisfy_every_path(vault: FakeVault, config: BrokerConfig) -> None:
    vault.capabilities = {rule.probe_path(): ["root"] for rule in required_paths(config)}

    assert check_policy(vault, config).status == Status.passed  # type: ignore[arg-type]


def test_clock_within_five_seconds_passes(vault: FakeVault) -> None:
    vault.server_clock = NOW + timedelta(seconds=3)

    assert check_clock(vault, lambda: NOW).status == Status.passed  # type: ignore[arg-type]


def test_clock_off_by_more_than_five_seconds_fails(vault: FakeVault) -> None:
    vault.server_clock = NOW - timedelta(seconds=9)

    result = check_clock(vault, lambda: NOW)  # type: ignore[arg-type]

    assert result.status == Status.failed
    assert "ahead of OpenBao's" in result.detail
    assert "NTP" in result.fix


def test_redis_with_aof_passes() -> None:
    results = check_redis(FakeRedis({"appendonly": "yes"}), "redis://redis:6379/0")  # type: ignore[arg-type]

    assert [r.status for r in results] == [Status.passed, Status.passed]


def test_redis_without_persistence_fails_in_production() -> None:
    results = check_redis(FakeRedis({"appendonly": "no"}), "redis://:pw@redis:6379/0")  # type: ignore[arg-type]

    assert results[1].status == Status.failed
    assert "appendonly yes" in results[1].fix
    assert "pw" not in results[0].detail


def test_redis_without_persistence_only_warns_on_a_loopback_dev_instance() -> None:
    results = check_redis(FakeRedis({"appendonly": "no"}), "redis://127.0.0.1:6379/0")  # type: ignore[arg-type]

    assert results[1].status == Status.warning


def test_redis_with_snapshots_only_warns() -> None:
    results = check_redis(FakeRedis({"appendonly": "no", "save": "3600 1"}), "redis://r:6379")  # type: ignore[arg-type]

    assert results[1].status == Status.warning
    assert "RDB snapshots" in results[1].detail


def test_redis_that_hides_its_config_warns() -> None:
    results = check_redis(FakeRedis(None), "redis://managed:6379")  # type: ignore[arg-type]

    assert results[1].status == Status.warning


def test_signing_key_present_passes(tmp_path: Path) -> None:
    key = BrokerSigningKey.load_or_create(tmp_path / "key.pem")

    result = check_signing_key(tmp_path / "key.pem")

    assert result.status == Status.passed
    assert key.key_id in result.detail


def test_missing_signing_key_fails_with_how_to_make_one(tmp_path: Path) -> None:
    result = check_signing_key(tmp_path / "absent.pem")

    assert result.status == Status.failed
    assert "openssl genpkey -algorithm ed25519" in result.fix


def test_signing_key_of_another_kind_fails(tmp_path: Path) -> None:
    (tmp_path / "key.pem").write_text(
        "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n"
    )

    assert check_signing_key(tmp_path / "key.pem").status == Status.failed


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(3600, 3600), ("90", 90), ("1h30m0s", 5400), ("768h", 2764800), (None, 0)],
)
def test_durations_from_openbao(value: object, seconds: int) -> None:
    assert duration_seconds(value) == seconds

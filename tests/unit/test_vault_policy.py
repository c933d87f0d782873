"""The broker's least-privilege OpenBao policy, derived from the profiles."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from jitbroker.cli import app
from jitbroker.config import BrokerConfig, load_config
from jitbroker.vault_policy import render_policy, required_paths

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "deploy/openbao/jitbroker-policy.hcl"


@pytest.fixture
def dev_config() -> BrokerConfig:
    return load_config(ROOT / "examples/dev")


def with_engine(config: BrokerConfig, profile_id: str, engine: str, mount: str) -> BrokerConfig:
    profile = config.profiles[profile_id].model_copy(update={"engine": engine, "mount": mount})
    return config.model_copy(update={"profiles": {profile_id: profile}})


def paths(config: BrokerConfig) -> dict[str, tuple[str, ...]]:
    return {rule.path: rule.capabilities for rule in required_paths(config)}


def test_committed_policy_is_the_one_generated_for_examples_dev(dev_config: BrokerConfig) -> None:
    assert COMMITTED.read_text() == render_policy(dev_config), (
        "regenerate: jitbroker openbao policy --config examples/dev > "
        "deploy/openbao/jitbroker-policy.hcl"
    )


def test_cli_prints_the_policy(dev_config: BrokerConfig) -> None:
    result = CliRunner().invoke(app, ["openbao", "policy", "--config", str(ROOT / "examples/dev")])

    assert result.exit_code == 0, result.output
    assert result.output == render_policy(dev_config)


def test_database_profile_reads_creds_and_manages_only_its_own_leases(
    dev_config: BrokerConfig,
) -> None:
    needed = paths(dev_config)

    assert needed["database/creds/demo-ro"] == ("read",)
    assert needed["sys/leases/renew/database/creds/demo-ro/*"] == ("update",)
    assert needed["sys/leases/revoke/database/creds/demo-ro/*"] == ("update",)
    assert needed["sys/leases/lookup/database/creds/demo-ro/"] == ("list", "sudo")
    assert needed["database/roles/demo-ro"] == ("read",)


def test_token_profile_creates_on_its_role_and_revokes_by_accessor(
    dev_config: BrokerConfig,
) -> None:
    needed = paths(dev_config)

    assert needed["auth/token/create/demo-kv-read"] == ("update",)
    assert needed["auth/token/revoke-accessor"] == ("update",)
    assert needed["auth/token/lookup-accessor"] == ("update",)
    assert "auth/token/create" not in needed  # no token without a role


def test_policy_grants_nothing_outside_the_profiles_mounts(dev_config: BrokerConfig) -> None:
    mounts = {profile.mount for profile in dev_config.profiles.values()}
    own = tuple(f"{mount}/" for mount in mounts) + tuple(
        f"sys/leases/{verb}/{mount}/" for verb in ("renew", "revoke", "lookup") for mount in mounts
    )
    broker_wide = {
        "sys/leases/lookup",
        "auth/token/lookup-accessor",
        "auth/token/revoke-accessor",
        "auth/token/lookup-self",
        "auth/token/renew-self",
        "sys/capabilities-self",
    }

    for rule in required_paths(dev_config):
        assert rule.path.startswith(own) or rule.path in broker_wide, rule.path
        assert "delete" not in rule.capabilities
        assert not rule.path.startswith("sys/policies")
        if rule.path.startswith("auth/token/"):
            assert rule.path in broker_wide or rule.path.count("/") == 3, rule.path


def test_pki_profile_issues_revokes_and_reads_certificates(dev_config: BrokerConfig) -> None:
    needed = paths(with_engine(dev_config, "demo-db", "pki", "pki-int"))

    assert needed["pki-int/issue/demo-ro"] == ("update",)
    assert needed["pki-int/revoke"] == ("update",)
    assert needed["pki-int/cert/*"] == ("read",)
    assert not any(path.startswith("sys/leases") for path in needed)


def test_ssh_profile_only_signs(dev_config: BrokerConfig) -> None:
    needed = paths(with_engine(dev_config, "demo-db", "ssh", "ssh-client"))

    assert needed["ssh-client/sign/demo-admin"] == ("update",)
    assert "ssh-client/roles/demo-admin" in needed
    assert not any(path.startswith(("sys/leases", "auth/token/revoke")) for path in needed)


def test_redis_profile_uses_the_database_engine_paths(dev_config: BrokerConfig) -> None:
    needed = paths(with_engine(dev_config, "demo-db", "redis", "redis-acl"))

    assert needed["redis-acl/creds/demo-rw"] == ("read",)
    assert needed["sys/leases/revoke/redis-acl/creds/demo-rw/*"] == ("update",)


def test_engine_without_a_template_is_refused(dev_config: BrokerConfig) -> None:
    with pytest.raises(ValueError, match="no OpenBao policy template for engine 'kmip'"):
        required_paths(with_engine(dev_config, "demo-db", "kmip", "kmip"))

"""load_config: a valid directory loads; every error names the file, the entry and the field."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from jitbroker.config import BrokerConfig, load_config
from jitbroker.errors import ConfigError

ConfigFiles = dict[str, Any]
MakeConfig = Callable[[ConfigFiles], BrokerConfig]
WriteConfig = Callable[[ConfigFiles], Path]


def issuer(name: str = "ci", **fields: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": name,
        "issuer": f"https://{name}.example.test",
        "audiences": ["jitbroker"],
        "algorithms": ["ES256"],
        "jwks_url": f"https://{name}.example.test/jwks.json",
    }
    entry.update(fields)
    return {key: value for key, value in entry.items() if value is not None}


def workload(workload_id: str = "deployer", **fields: Any) -> dict[str, Any]:
    return {"id": workload_id, "issuer": "ci", "subject": f"repo:org/{workload_id}", **fields}


@pytest.fixture
def valid_files() -> ConfigFiles:
    """A small, valid configuration split over several files like examples/dev."""
    return {
        "issuers.yaml": {
            "issuers": [
                issuer("ci"),
                issuer(
                    "sso", human=True, groups_claim="teams", jwks_url=None, jwks_file="sso.json"
                ),
            ]
        },
        "workloads.yaml": {
            "workloads": [workload("deployer", claims={"repository": "org/repo"}), workload("ops")]
        },
        "profiles.yaml": {
            "profiles": [
                {
                    "id": "demo-db",
                    "engine": "database",
                    "mount": "/database/",
                    "destination": "postgres://db.example.test/app",
                    "max_ttl_seconds": 3600,
                    "scopes": [{"name": "read", "role": "ro"}, {"name": "write", "role": "rw"}],
                }
            ]
        },
        "policy.yaml": {
            "rules": [
                {
                    "name": "db-read",
                    "when": 'request.scopes.all(s, s == "read")',
                    "effect": "allow",
                },
                {"name": "db-write", "effect": "require_approval", "approver_groups": ["dba"]},
            ]
        },
        "humans.yml": {"dev_humans": [{"subject": "alice", "groups": ["dba"], "issuer": "sso"}]},
    }


def config_error(write_config: WriteConfig, files: ConfigFiles) -> str:
    """The ConfigError message loading `files` fails with."""
    directory = write_config(files)
    with pytest.raises(ConfigError) as caught:
        load_config(directory)
    return str(caught.value)


def test_valid_configuration_directory_loads_every_section(
    make_config: MakeConfig, valid_files: ConfigFiles
) -> None:
    config = make_config(valid_files)

    assert set(config.issuers) == {"ci", "sso"}
    assert set(config.workloads) == {"deployer", "ops"}
    assert config.workloads["deployer"].claims == {"repository": "org/repo"}
    assert config.profiles["demo-db"].mount == "database"
    assert [rule.name for rule in config.rules] == ["db-read", "db-write"]
    assert config.rules[0].program is not None
    assert set(config.dev_humans) == {"alice"}


def test_relative_jwks_file_resolves_against_the_config_directory_not_the_cwd(
    make_config: MakeConfig,
    valid_files: ConfigFiles,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    valid_files["issuers.yaml"]["issuers"][0] = issuer(
        "ci", jwks_url=None, jwks_file="keys/ci.jwks.json"
    )

    config = make_config(valid_files)

    expected = (tmp_path / "config" / "keys" / "ci.jwks.json").resolve()
    assert config.issuers["ci"].jwks_file == expected


def test_invalid_field_error_names_the_file_the_entry_and_the_field(
    write_config: WriteConfig, valid_files: ConfigFiles
) -> None:
    valid_files["workloads.yaml"]["workloads"][1] = workload("ops", subject="")

    message = config_error(write_config, valid_files)

    assert message.startswith("workloads.yaml: workloads[1] (id 'ops'): ")
    assert "field 'subject'" in message


def test_cel_syntax_error_in_a_rule_stops_loading_naming_the_file_and_the_rule(
    write_config: WriteConfig, valid_files: ConfigFiles
) -> None:
    valid_files["policy.yaml"]["rules"].append(
        {"name": "broken-rule", "when": 'request.profile == "demo-db" &&', "effect": "allow"}
    )

    message = config_error(write_config, valid_files)

    assert "policy.yaml: rules[2] (name 'broken-rule')" in message
    assert "'when' is not valid CEL" in message


def test_duplicate_id_across_two_files_names_both_files(
    write_config: WriteConfig, valid_files: ConfigFiles
) -> None:
    valid_files["z-workloads.yaml"] = {"workloads": [workload("other"), workload("deployer")]}

    message = config_error(write_config, valid_files)

    assert message.startswith("z-workloads.yaml: workloads[1] (id 'deployer'): duplicate")
    assert message.endswith("first defined at workloads.yaml: workloads[0]")


def test_workload_referencing_an_unknown_issuer_is_rejected(
    write_config: WriteConfig, valid_files: ConfigFiles
) -> None:
    valid_files["workloads.yaml"]["workloads"].append(workload("stray", issuer="nope"))

    message = config_error(write_config, valid_files)

    assert "workloads.yaml: workloads[2] (id 'stray')" in message
    assert "field 'issuer'" in message
    assert "'nope'" in message


def test_issuer_with_both_jwks_url_and_jwks_file_is_rejected(
    write_config: WriteConfig, valid_files: ConfigFiles
) -> None:
    valid_files["issuers.yaml"]["issuers"][0] = issuer("ci", jwks_file="ci.json")

    message = config_error(write_config, valid_files)

    assert "issuers.yaml: issuers[0] (name 'ci')" in message
    assert "exactly one of jwks_url or jwks_file" in message


def test_issuer_with_neither_jwks_url_nor_jwks_file_is_rejected(
    write_config: WriteConfig, valid_files: ConfigFiles
) -> None:
    valid_files["issuers.yaml"]["issuers"][0] = issuer("ci", jwks_url=None)

    message = config_error(write_config, valid_files)

    assert "issuers.yaml: issuers[0] (name 'ci')" in message
    assert "exactly one of jwks_url or jwks_file" in message


@pytest.mark.parametrize("algorithm", ["HS256", "none"])
def test_issuer_allowing_a_symmetric_or_none_algorithm_is_rejected(
    write_config: WriteConfig, valid_files: ConfigFiles, algorithm: str
) -> None:
    valid_files["issuers.yaml"]["issuers"][0] = issuer("ci", algorithms=[algorithm])

    message = config_error(write_config, valid_files)

    assert "issuers.yaml: issuers[0] (name 'ci')" in message
    assert "field 'algorithms.0'" in message


def test_unknown_top_level_section_is_rejected(
    write_config: WriteConfig, valid_files: ConfigFiles
) -> None:
    valid_files["policy.yaml"] = {"polices": valid_files["policy.yaml"]["rules"]}

    message = config_error(write_config, valid_files)

    assert message.startswith("policy.yaml: unknown section 'polices'")


def test_invalid_yaml_error_names_the_file(
    write_config: WriteConfig, valid_files: ConfigFiles
) -> None:
    valid_files["broken.yaml"] = "workloads:\n  - id: [unclosed\n"

    message = config_error(write_config, valid_files)

    assert message.startswith("broken.yaml: not valid YAML")


def test_file_that_is_not_utf8_is_rejected_with_a_config_error_naming_the_file(
    write_config: WriteConfig, valid_files: ConfigFiles
) -> None:
    directory = write_config(valid_files)
    (directory / "latin1.yaml").write_bytes("workloads: []  # caf\u00e9\n".encode("latin-1"))

    with pytest.raises(ConfigError, match=r"^latin1\.yaml: "):
        load_config(directory)


def test_file_repeating_a_section_is_rejected(
    write_config: WriteConfig, valid_files: ConfigFiles
) -> None:
    valid_files["policy.yaml"] = (
        "rules:\n"
        "  - {name: deny-prod, when: 'request.profile == \"prod\"', effect: deny}\n"
        "rules:\n"
        "  - {name: allow-all, effect: allow}\n"
    )

    message = config_error(write_config, valid_files)

    assert "policy.yaml" in message
    assert "'rules'" in message


def test_jwks_url_over_plain_http_off_loopback_is_rejected(
    write_config: WriteConfig, valid_files: ConfigFiles
) -> None:
    valid_files["issuers.yaml"] = {
        "issuers": [
            {
                "name": "ci",
                "issuer": "https://ci.example.test",
                "audiences": ["jitbroker"],
                "algorithms": ["ES256"],
                "jwks_url": "http://keys.example.test/jwks.json",
            }
        ]
    }

    with pytest.raises(ConfigError, match="jwks_url must use https://"):
        load_config(write_config(valid_files))


def test_workload_inventory_fields_load_with_a_duration_and_a_date(
    make_config: MakeConfig, valid_files: ConfigFiles
) -> None:
    valid_files["workloads.yaml"]["workloads"][0] = workload(
        "deployer",
        owner_team="payments",
        custodian="sam@example.test",
        backup_approver="kim@example.test",
        purpose="deploys the payments API",
        environment="prod",
        kind="pipeline",
        review_every="30d",
        expires_on="2031-01-31",
    )

    deployer = make_config(valid_files).workloads["deployer"]

    assert (deployer.owner_team, deployer.environment, deployer.kind) == (
        "payments",
        "prod",
        "pipeline",
    )
    assert deployer.review_every == 30 * 86400
    assert deployer.expires_on == date(2031, 1, 31)
    assert deployer.unowned is False


def test_workload_without_owner_team_or_purpose_loads_as_unowned_in_dev(
    make_config: MakeConfig, valid_files: ConfigFiles
) -> None:
    ops = make_config(valid_files).workloads["ops"]

    assert ops.unowned is True
    assert ops.missing_inventory == ["owner_team", "purpose"]
    assert (ops.environment, ops.review_every) == ("dev", 90 * 86400)


def test_scopes_named_read_write_admin_get_that_capability_by_default(
    make_config: MakeConfig, valid_files: ConfigFiles
) -> None:
    profile = make_config(valid_files).profiles["demo-db"]

    assert [scope.capabilities for scope in profile.scopes] == [["read"], ["write"]]
    assert profile.environment == "dev"


def test_scope_with_another_name_must_declare_its_capabilities(
    write_config: WriteConfig, valid_files: ConfigFiles
) -> None:
    valid_files["profiles.yaml"]["profiles"][0]["scopes"].append({"name": "su", "role": "su"})

    message = config_error(write_config, valid_files)

    assert message.startswith("profiles.yaml: profiles[0] (id 'demo-db'): field 'scopes.2'")
    assert "scope 'su' needs `capabilities`" in message


def test_unknown_capability_is_refused(write_config: WriteConfig, valid_files: ConfigFiles) -> None:
    valid_files["profiles.yaml"]["profiles"][0]["scopes"][0]["capabilities"] = ["root"]

    message = config_error(write_config, valid_files)

    assert "field 'scopes.0.capabilities.0'" in message


def test_allow_rule_may_name_approver_groups_for_privileged_requests(
    make_config: MakeConfig, valid_files: ConfigFiles
) -> None:
    valid_files["policy.yaml"]["rules"][0]["approver_groups"] = ["dba"]

    assert make_config(valid_files).rules[0].approver_groups == ["dba"]


def test_allow_privileged_on_a_deny_rule_is_refused(
    write_config: WriteConfig, valid_files: ConfigFiles
) -> None:
    valid_files["policy.yaml"]["rules"][0].update(effect="deny", allow_privileged=True)

    message = config_error(write_config, valid_files)

    assert "allow_privileged only applies to allow" in message


def test_principals_on_a_scope_of_a_non_ssh_profile_are_refused(
    write_config: WriteConfig, valid_files: ConfigFiles
) -> None:
    valid_files["profiles.yaml"]["profiles"][0]["scopes"][0]["principals"] = ["deploy"]

    message = config_error(write_config, valid_files)

    assert "only ssh profiles take `principals`" in message


def test_ssh_principal_with_a_comma_is_refused(
    write_config: WriteConfig, valid_files: ConfigFiles
) -> None:
    profile = valid_files["profiles.yaml"]["profiles"][0]
    profile["engine"] = "ssh"
    profile["scopes"][0]["principals"] = ["deploy,root"]

    message = config_error(write_config, valid_files)

    assert "field 'scopes.0.principals.0'" in message

"""`jitbroker policy check` and `policy test`: offline decisions over a config directory."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import Result
from tests.unit.fakes import ROOT
from typer.testing import CliRunner

from jitbroker.cli import app

RunCheck = Callable[..., Result]
RunTest = Callable[[Path], Result]
WriteCases = Callable[..., Path]
ConfigFiles = dict[str, Any]

NOON = "2030-06-03T12:00:00Z"
CI_CONFIG: ConfigFiles = {
    "config.yaml": {
        "issuers": [
            {
                "name": "ci",
                "issuer": "https://ci.test",
                "jwks_url": "https://ci.test/jwks.json",
                "audiences": ["jitbroker"],
                "algorithms": ["ES256"],
            }
        ],
        "workloads": [
            {
                "id": "deployer",
                "issuer": "ci",
                "subject": "repo:org/app",
                "claims": {"repository": "org/app"},
            }
        ],
        "profiles": [
            {
                "id": "db",
                "engine": "database",
                "mount": "database",
                "destination": "postgres://db.test/app",
                "max_ttl_seconds": 3600,
                "scopes": [{"name": "read", "role": "app-ro"}],
            }
        ],
        "rules": [
            {
                "name": "after-hours",
                "when": "context.now.getHours() < 9 || context.now.getHours() >= 17",
                "effect": "deny",
            },
            {
                "name": "main-branch",
                "when": 'has(workload.claims.ref) && workload.claims.ref == "refs/heads/main"',
                "effect": "allow",
            },
        ],
    }
}


def sample(workload: str = "demo-pipeline", **request: Any) -> dict[str, Any]:
    """A sample request file's content: a read of demo-db for ten minutes, with overrides."""
    body = {"profile": "demo-db", "scopes": ["read"], "ttl_seconds": 600, "justification": "export"}
    return {"workload": workload, "request": {**body, **request}}


def case(name: str, expect: str, rule: str | None = None, **request: Any) -> dict[str, Any]:
    """A policy_tests entry for demo-pipeline over `sample`'s request."""
    entry = {"name": name, **sample(**request), "expect": expect}
    return entry if rule is None else {**entry, "rule": rule}


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def run_check(runner: CliRunner, tmp_path: Path, demo_config_dir: Path) -> RunCheck:
    """run_check(sample or raw text, *options, config_dir=demo config): `policy check`."""

    def run(content: dict[str, Any] | str, *options: str, config_dir: Path | None = None) -> Result:
        path = tmp_path / "request.json"
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        directory = config_dir or demo_config_dir
        return runner.invoke(
            app, ["policy", "check", "--config", str(directory), *options, str(path)]
        )

    return run


@pytest.fixture
def run_test(runner: CliRunner) -> RunTest:
    """run_test(directory): `policy test` over it."""

    def run(directory: Path) -> Result:
        return runner.invoke(app, ["policy", "test", str(directory)])

    return run


@pytest.fixture
def write_cases(demo_config_dir: Path) -> WriteCases:
    """write_cases(case, ...): add policy_tests to the demo config directory; return it."""

    def write(*cases: dict[str, Any]) -> Path:
        text = yaml.safe_dump({"policy_tests": list(cases)}, sort_keys=False)
        (demo_config_dir / "policy-tests.yaml").write_text(text)
        return demo_config_dir

    return write


@pytest.fixture
def ci_config_dir(write_config: Callable[[ConfigFiles], Path]) -> Path:
    """A CI workload bound by a `repository` claim, with an after-hours rule and a branch rule."""
    return write_config(CI_CONFIG)


def test_check_read_request_is_allowed_by_the_read_rule(run_check: RunCheck) -> None:
    result = run_check(sample())

    assert result.exit_code == 0, result.stderr
    assert result.stdout == "allow by rule demo-db-read: allowed by rule 'demo-db-read'\n"


def test_check_write_request_prints_the_approval_requirement(run_check: RunCheck) -> None:
    result = run_check(sample(scopes=["read", "write"]))

    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [
        "require_approval by rule demo-db-elevated: "
        "write and admin on demo-db need a DBA's approval",
        "  approvals: 1 from group dba",
        "  approval ttl: 900s",
        "  break-glass: allowed, at most 900s",
    ]


def test_check_ttl_over_the_rule_max_ttl_is_denied_by_that_rule(run_check: RunCheck) -> None:
    result = run_check(sample(ttl_seconds=1801))

    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("deny by rule demo-db-read: ")
    assert "at most 1800s; asked 1801s" in result.stdout


def test_check_ttl_over_the_profile_cap_notes_that_the_live_api_refuses_it(
    run_check: RunCheck,
) -> None:
    result = run_check(sample(ttl_seconds=3601))

    assert "exceeds the profile cap of 3600" in result.stderr


def test_check_json_output_carries_the_decision_and_approval_terms(run_check: RunCheck) -> None:
    result = run_check(sample(scopes=["admin"]), "--json")

    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {
        "effect": "require_approval",
        "rule": "demo-db-elevated",
        "reason": "write and admin on demo-db need a DBA's approval",
        "privileged": True,
        "approval": {
            "approvals": 1,
            "approver_groups": ["dba"],
            "approval_ttl_seconds": 900,
            "break_glass": True,
            "break_glass_max_ttl_seconds": 900,
        },
        "notes": [],
    }


def test_check_unknown_workload_exits_2_naming_it(run_check: RunCheck) -> None:
    result = run_check(sample(workload="ghost"))

    assert result.exit_code == 2
    assert "unknown workload 'ghost'" in result.stderr
    assert result.stdout == ""


def test_check_unknown_profile_exits_2_naming_it(run_check: RunCheck) -> None:
    result = run_check(sample(profile="prod-db"))

    assert result.exit_code == 2
    assert "unknown profile 'prod-db'" in result.stderr


def test_check_scope_the_profile_lacks_exits_2_naming_it(run_check: RunCheck) -> None:
    result = run_check(sample(scopes=["read", "drop"]))

    assert result.exit_code == 2
    assert "has no scope 'drop'" in result.stderr


def test_check_request_the_live_api_would_reject_exits_2_naming_the_field(
    run_check: RunCheck,
) -> None:
    result = run_check(sample(ttl_seconds=0))

    assert result.exit_code == 2
    assert "field 'ttl_seconds'" in result.stderr


def test_check_file_that_is_not_json_exits_2(run_check: RunCheck) -> None:
    result = run_check("{workload: demo-pipeline")

    assert result.exit_code == 2
    assert "not valid JSON" in result.stderr


def test_check_invalid_config_directory_exits_2_with_a_configuration_error(
    run_check: RunCheck, tmp_path: Path
) -> None:
    result = run_check(sample(), config_dir=tmp_path / "missing")

    assert result.exit_code == 2
    assert result.stderr.startswith("configuration error: ")


def test_check_sample_claims_reach_the_rules(run_check: RunCheck, ci_config_dir: Path) -> None:
    request = {**sample("deployer", profile="db"), "claims": {"ref": "refs/heads/main"}}

    result = run_check({**request, "context": {"now": NOON}}, config_dir=ci_config_dir)

    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("allow by rule main-branch: ")


def test_check_sample_now_is_the_time_rules_see(run_check: RunCheck, ci_config_dir: Path) -> None:
    request = {**sample("deployer", profile="db"), "claims": {"ref": "refs/heads/main"}}

    result = run_check(
        {**request, "context": {"now": "2030-06-03T20:00:00Z"}}, config_dir=ci_config_dir
    )

    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("deny by rule after-hours: ")


def test_check_claim_that_binds_the_workload_cannot_be_overridden(
    run_check: RunCheck, ci_config_dir: Path
) -> None:
    request = {**sample("deployer", profile="db"), "claims": {"repository": "org/other"}}

    result = run_check(request, config_dir=ci_config_dir)

    assert result.exit_code == 2
    assert "'repository' binds the token to workload 'deployer'" in result.stderr


def test_policy_test_prints_pass_per_case_and_the_totals(
    run_test: RunTest, write_cases: WriteCases
) -> None:
    directory = write_cases(
        case("reads", "allow", "demo-db-read"),
        case("writes", "require_approval", scopes=["write"]),
    )

    result = run_test(directory)

    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == ["PASS reads", "PASS writes", "2 passed, 0 failed"]


def test_policy_test_failing_case_prints_expected_and_actual_and_exits_1(
    run_test: RunTest, write_cases: WriteCases
) -> None:
    directory = write_cases(
        case("reads", "allow", "demo-db-read"),
        case("long-read", "allow", "demo-db-read", ttl_seconds=3601),
    )

    result = run_test(directory)

    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0] == "PASS reads"
    assert lines[1].startswith(
        "FAIL long-read: expected allow by rule demo-db-read, got deny by rule demo-db-read ("
    )
    assert lines[-1] == "1 passed, 1 failed"


def test_policy_test_case_naming_an_unknown_profile_fails_saying_why(
    run_test: RunTest, write_cases: WriteCases
) -> None:
    directory = write_cases(case("typo", "allow", profile="demo-bd"))

    result = run_test(directory)

    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "FAIL typo: expected allow, cannot evaluate: unknown profile 'demo-bd'; "
        "known: ['demo-db', 'demo-pki', 'demo-redis', 'demo-ssh', 'demo-token']",
        "0 passed, 1 failed",
    ]


def test_policy_test_directory_without_cases_exits_2(
    run_test: RunTest, demo_config_dir: Path
) -> None:
    result = run_test(demo_config_dir)

    assert result.exit_code == 2
    assert "no policy_tests cases" in result.stderr


def test_policy_test_example_dev_config_passes_every_case(run_test: RunTest) -> None:
    result = run_test(ROOT / "examples/dev")

    assert result.exit_code == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1].endswith(" passed, 0 failed")
    assert "FAIL" not in result.stdout

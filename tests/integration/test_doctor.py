"""`jitbroker doctor` against the real stack, whose broker token holds only the generated policy."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jitbroker.cli import app
from jitbroker.config import Settings
from jitbroker.doctor import Status, run_doctor
from jitbroker.signing import BrokerSigningKey
from jitbroker.vault import VaultClient
from tests.real_stack import process_env

pytestmark = pytest.mark.integration


@pytest.fixture
def signing_key(settings: Settings) -> Path:
    BrokerSigningKey.load_or_create(settings.signing_key_file)
    return settings.signing_key_file


@pytest.fixture
def config_naming_a_missing_role(settings: Settings, tmp_path: Path) -> Path:
    """A copy of the test config whose demo-db admin scope names a role OpenBao does not have."""
    directory = tmp_path / "config"
    shutil.copytree(settings.config_dir, directory)
    profiles = directory / "profiles.yaml"
    text = profiles.read_text()
    assert "role: demo-admin}" in text
    profiles.write_text(text.replace("role: demo-admin}", "role: demo-gone}"))
    return directory


def test_doctor_reports_the_test_stack_healthy(
    settings: Settings, demo_openbao: VaultClient, signing_key: Path
) -> None:
    report = run_doctor(settings)

    failures = [r for r in report.results if r.status == Status.failed]
    assert report.ok, failures
    assert report.named("openbao").status == Status.passed
    assert "['jitbroker']" in report.named("openbao").detail
    assert report.named("openbao policy").status == Status.passed
    assert report.named("role demo-db/read").status in (Status.passed, Status.warning)
    assert report.named("role demo-token/read").status == Status.passed
    assert report.named("clock").status == Status.passed
    assert report.named("redis").status == Status.passed
    assert report.named("signing key").status == Status.passed


def test_doctor_names_the_profile_whose_role_is_missing(
    settings: Settings,
    demo_openbao: VaultClient,
    signing_key: Path,
    config_naming_a_missing_role: Path,
) -> None:
    result = CliRunner().invoke(
        app, ["doctor", "--config", str(config_naming_a_missing_role)], env=process_env(settings)
    )

    assert result.exit_code == 1, result.output
    assert "FAIL  role demo-db/admin: profile 'demo-db' scope 'admin' names role 'demo-gone'" in (
        result.output
    )
    assert "fix: create the role at database/roles/demo-gone" in result.output
    assert (
        "PASS  role demo-db/write" in result.output or "WARN  role demo-db/write" in result.output
    )

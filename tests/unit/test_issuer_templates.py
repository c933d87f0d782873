"""The ready-made issuer templates and the CI recipes' broker configs load as shipped."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from tests.unit.fakes import ROOT

from jitbroker.config import load_config

TEMPLATES = ROOT / "examples/issuers"
# A workload each template is meant for, bound the way its CI system's tokens allow.
WORKLOAD_FOR_TEMPLATE = {
    "github-actions.yaml": {
        "id": "orders-migrate",
        "issuer": "github-actions",
        "subject": "repo:acme/orders:environment:production",
        "claims": {"repository": "acme/orders", "ref": "refs/heads/main"},
    },
    "gitlab.yaml": {
        "id": "orders-migrate",
        "issuer": "gitlab",
        "subject": "project_path:acme/orders:ref_type:branch:ref:main",
        "claims": {"project_path": "acme/orders", "ref_protected": "true"},
    },
    "kubernetes.yaml": {
        "id": "orders-agent",
        "issuer": "kubernetes",
        "subject": "system:serviceaccount:agents:orders-agent",
    },
}
ISSUER_URLS = {
    "github-actions.yaml": (
        "https://token.actions.githubusercontent.com",
        "https://token.actions.githubusercontent.com/.well-known/jwks",
    ),
    "gitlab.yaml": ("https://gitlab.com", "https://gitlab.com/oauth/discovery/keys"),
}


def test_every_template_has_a_test_workload() -> None:
    assert sorted(p.name for p in TEMPLATES.glob("*.yaml")) == sorted(WORKLOAD_FOR_TEMPLATE)


@pytest.mark.parametrize("template", sorted(WORKLOAD_FOR_TEMPLATE))
def test_issuer_template_loads_with_a_workload(template: str, tmp_path: Path) -> None:
    shutil.copy(TEMPLATES / template, tmp_path / "issuers.yaml")
    workload = WORKLOAD_FOR_TEMPLATE[template]
    (tmp_path / "workloads.yaml").write_text(yaml.safe_dump({"workloads": [workload]}))

    config = load_config(tmp_path)

    (issuer,) = config.issuers.values()
    assert issuer.algorithms == ["RS256"]
    assert issuer.audiences == ["jitbroker"]
    assert not issuer.human
    assert config.workloads[str(workload["id"])].issuer == issuer.name
    if template in ISSUER_URLS:
        assert (issuer.issuer, issuer.jwks_url) == ISSUER_URLS[template]


@pytest.mark.parametrize("recipe", ["github-actions", "gitlab-ci"])
def test_ci_recipe_broker_config_loads(recipe: str) -> None:
    config = load_config(ROOT / "examples" / recipe / "broker-config")

    (workload,) = config.workloads.values()
    assert not workload.unowned
    assert workload.claims["ref"] in ("refs/heads/main", "main")
    assert workload.claims["environment"] == "production"
    assert config.rules[0].effect == "allow"


def test_github_recipe_workflow_asks_for_an_id_token_and_runs_exec() -> None:
    workflow = yaml.safe_load((ROOT / "examples/github-actions/migrate.yml").read_text())

    assert workflow["permissions"]["id-token"] == "write"
    steps = workflow["jobs"]["migrate"]["steps"]
    assert any("jitbroker exec" in step.get("run", "") for step in steps)


def test_gitlab_recipe_defines_the_id_token_exec_reads() -> None:
    pipeline = yaml.safe_load((ROOT / "examples/gitlab-ci/.gitlab-ci.yml").read_text())

    assert pipeline["migrate"]["id_tokens"] == {"JITBROKER_ID_TOKEN": {"aud": "jitbroker"}}
    assert "jitbroker exec" in " ".join(pipeline["migrate"]["script"])

"""The Helm chart, rendered and linted by Helm's own Go SDK (helm-python-sdk), never a cluster."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from jitbroker.config import load_config

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts/jitbroker"
HA_VALUES = CHART / "ci/ha-values.yaml"
WORKLOAD_KINDS = {"Deployment", "StatefulSet"}
# What a secret value would look like if one leaked into a manifest.
SECRET_SHAPES = [
    re.compile(r"-----BEGIN [A-Z ]*(PRIVATE KEY|CERTIFICATE)-----"),
    re.compile(r"\b(hvs|hvb|hvr|s|b)\.[A-Za-z0-9_-]{20,}"),  # OpenBao/Vault tokens
    re.compile(r"\w+://[^/\s:@\"']*:[^/\s@\"']+@"),  # a URL carrying a password
    re.compile(r"(?i)(password|secret|token)\s*:\s*[\"']?[A-Za-z0-9+/=_-]{12,}"),
]
Manifests = list[dict[str, Any]]


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def ha_values() -> dict[str, Any]:
    return helm.values_from_yaml(HA_VALUES.read_text())


@pytest.fixture(scope="module")
def render_text(chart: helm.Chart) -> Callable[[dict[str, Any] | None], dict[str, str]]:
    def render(values: dict[str, Any] | None) -> dict[str, str]:
        return chart.render(values=values, name="jb", namespace="broker", is_install=True)

    return render


@pytest.fixture(scope="module")
def render(
    render_text: Callable[[dict[str, Any] | None], dict[str, str]],
) -> Callable[[dict[str, Any] | None], Manifests]:
    def parse(values: dict[str, Any] | None) -> Manifests:
        documents: Manifests = []
        for name, text in render_text(values).items():
            if name.endswith(".yaml"):
                documents += [d for d in yaml.safe_load_all(text) if d]
        return documents

    return parse


@pytest.fixture(scope="module")
def default_manifests(render: Callable[[dict[str, Any] | None], Manifests]) -> Manifests:
    return render(None)


@pytest.fixture(scope="module")
def ha_manifests(
    render: Callable[[dict[str, Any] | None], Manifests], ha_values: dict[str, Any]
) -> Manifests:
    return render(ha_values)


@pytest.fixture(params=["default", "ha"])
def manifests(request: pytest.FixtureRequest) -> Manifests:
    name = "default_manifests" if request.param == "default" else "ha_manifests"
    found: Manifests = request.getfixturevalue(name)
    return found


def named(manifests: Manifests, kind: str, name: str) -> dict[str, Any]:
    return next(m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name)


def workloads(manifests: Manifests) -> Manifests:
    return [m for m in manifests if m["kind"] in WORKLOAD_KINDS]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def test_chart_lints_clean_with_default_values() -> None:
    report = helm.lint(CHART, strict=True)

    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_chart_lints_clean_with_ha_values(ha_values: dict[str, Any]) -> None:
    report = helm.lint(CHART, ha_values, strict=True)

    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"api": {"replicas": "two"}}, "/api/replicas"),
        ({"openbao": {"auth": {"method": "userpass"}}}, "/openbao/auth/method"),
        ({"scheduler": {"replicas": 3}}, "replicas"),
        ({"securityContext": {"readOnlyRootFilesystem": False}}, "readOnlyRootFilesystem"),
        ({"redis": {"url": "memcached://cache:11211"}}, "/redis/url"),
        ({"workers": {"revocation": {"concurrency": 0}}}, "concurrency"),
        ({"config": {"notes.txt": "x"}}, "notes.txt"),
    ],
)
def test_values_schema_rejects_a_bad_value(
    chart: helm.Chart, values: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(helm.HelmValuesError, match=re.escape(complaint)):
        chart.render(values=values, name="jb")


def test_values_schema_accepts_the_defaults_and_the_ha_values(
    chart: helm.Chart, ha_values: dict[str, Any]
) -> None:
    chart.validate_schema(chart.merge_values(None))
    chart.validate_schema(chart.merge_values(ha_values))


def test_every_pod_runs_non_root_with_a_read_only_root_and_no_capabilities(
    manifests: Manifests,
) -> None:
    assert len(workloads(manifests)) >= 4
    for workload in workloads(manifests):
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        tmp = next(v for v in pod["volumes"] if v["name"] == "tmp")
        assert "emptyDir" in tmp
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False
            assert security["readOnlyRootFilesystem"] is True
            assert security["capabilities"]["drop"] == ["ALL"]
            assert security["seccompProfile"] == {"type": "RuntimeDefault"}
            mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
            assert mounts["tmp"] == "/tmp"


def test_api_is_live_on_healthz_and_ready_on_readyz(manifests: Manifests) -> None:
    api = named(manifests, "Deployment", "jb-jitbroker-api")["spec"]["template"]["spec"]
    container = api["containers"][0]

    assert container["args"] == ["serve"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert env_of(container)["JITBROKER_LISTEN_HOST"]["value"] == "0.0.0.0"


def test_exactly_one_scheduler_replica(manifests: Manifests) -> None:
    schedulers = [
        m
        for m in workloads(manifests)
        if "scheduler" in m["spec"]["template"]["spec"]["containers"][0]["args"]
    ]

    assert len(schedulers) == 1
    assert schedulers[0]["spec"]["replicas"] == 1
    assert not any(
        m["kind"] == "HorizontalPodAutoscaler"
        and m["spec"]["scaleTargetRef"]["name"] == schedulers[0]["metadata"]["name"]
        for m in manifests
    )


def test_revocation_and_notification_queues_have_their_own_workers(manifests: Manifests) -> None:
    revocation = named(manifests, "Deployment", "jb-jitbroker-worker-revocation")
    notifications = named(manifests, "Deployment", "jb-jitbroker-worker-notifications")

    args_of = [
        w["spec"]["template"]["spec"]["containers"][0]["args"] for w in (revocation, notifications)
    ]
    assert [args[0] for args in args_of] == ["worker", "worker"]
    assert args_of[0][-2:] == ["--queues", "jitbroker.revocation"]
    assert args_of[1][-2:] == ["--queues", "jitbroker.notifications"]


def test_ha_values_autoscale_api_and_workers_behind_disruption_budgets(
    ha_manifests: Manifests,
) -> None:
    scaled = {
        m["spec"]["scaleTargetRef"]["name"]: m["spec"]
        for m in ha_manifests
        if m["kind"] == "HorizontalPodAutoscaler"
    }
    budgets = {m["metadata"]["name"] for m in ha_manifests if m["kind"] == "PodDisruptionBudget"}

    assert set(scaled) == {
        "jb-jitbroker-api",
        "jb-jitbroker-worker-revocation",
        "jb-jitbroker-worker-notifications",
    }
    assert scaled["jb-jitbroker-api"]["metrics"][0]["resource"]["name"] == "cpu"
    assert scaled["jb-jitbroker-api"]["minReplicas"] == 3
    assert budgets == set(scaled)
    # An autoscaled Deployment leaves replicas to its HPA.
    assert "replicas" not in named(ha_manifests, "Deployment", "jb-jitbroker-api")["spec"]


def test_config_directory_comes_from_a_configmap(manifests: Manifests) -> None:
    config_map = named(manifests, "ConfigMap", "jb-jitbroker-config")
    for workload in workloads(manifests):
        if workload["metadata"]["name"].endswith("-redis"):
            continue
        pod = workload["spec"]["template"]["spec"]
        volume = next(v for v in pod["volumes"] if v["name"] == "config")
        assert volume["configMap"]["name"] == config_map["metadata"]["name"]
        container = pod["containers"][0]
        assert env_of(container)["JITBROKER_CONFIG_DIR"]["value"] == "/etc/jitbroker/config"


def test_configmap_files_are_a_valid_config_directory(manifests: Manifests, tmp_path: Path) -> None:
    for name, text in named(manifests, "ConfigMap", "jb-jitbroker-config")["data"].items():
        (tmp_path / name).write_text(text)

    load_config(tmp_path)


def checksums(manifests: Manifests) -> dict[str, str]:
    return {
        m["metadata"]["name"]: m["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        for m in workloads(manifests)
        if not m["metadata"]["name"].endswith("-redis")
    }


def test_config_checksum_annotation_changes_with_the_config(
    render: Callable[[dict[str, Any] | None], Manifests], ha_values: dict[str, Any]
) -> None:
    before = checksums(render(ha_values))
    again = checksums(render(ha_values))
    changed_config = {**ha_values["config"], "extra.yaml": "rules: []\n"}
    after = checksums(render({**ha_values, "config": changed_config}))

    assert len(before) == 4  # the API, both workers and the scheduler
    assert len(set(before.values())) == 1
    assert before == again
    assert set(after) == set(before)
    assert all(after[name] != before[name] for name in before)


def test_signing_key_and_openbao_credentials_are_secret_references(
    render: Callable[[dict[str, Any] | None], Manifests],
) -> None:
    manifests = render(
        {
            "signingKey": {"secretName": "broker-key", "key": "key.pem"},
            "openbao": {"auth": {"method": "token", "token": {"secretName": "bao-token"}}},
            "redis": {"secretName": "redis-url", "secretKey": "url"},
        }
    )

    assert not [m for m in manifests if m["kind"] == "Secret"]
    for workload in workloads(manifests):
        pod = workload["spec"]["template"]["spec"]
        key = next(v for v in pod["volumes"] if v["name"] == "signing-key")["secret"]
        assert key["secretName"] == "broker-key"
        env = env_of(pod["containers"][0])
        assert env["JITBROKER_SIGNING_KEY_FILE"]["value"] == "/etc/jitbroker/signing/key.pem"
        assert env["JITBROKER_VAULT_AUTH_METHOD"]["value"] == "token"
        assert env["JITBROKER_VAULT_TOKEN"]["valueFrom"]["secretKeyRef"] == {
            "name": "bao-token",
            "key": "token",
        }
        assert env["JITBROKER_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {
            "name": "redis-url",
            "key": "url",
        }
        assert not any(v["name"] == "openbao-token" for v in pod["volumes"])


def test_token_auth_without_a_secret_name_is_refused(chart: helm.Chart) -> None:
    with pytest.raises(helm.HelmRenderError, match="openbao.auth.token.secretName is required"):
        chart.render(values={"openbao": {"auth": {"method": "token"}}}, name="jb")


def test_kubernetes_auth_mounts_only_an_audience_bound_service_account_token(
    manifests: Manifests,
) -> None:
    for workload in workloads(manifests):
        if workload["metadata"]["name"].endswith("-redis"):
            continue
        pod = workload["spec"]["template"]["spec"]
        projected = next(v for v in pod["volumes"] if v["name"] == "openbao-token")["projected"]
        source = projected["sources"][0]["serviceAccountToken"]
        env = env_of(pod["containers"][0])
        assert source["audience"] == "openbao"
        assert source["expirationSeconds"] == 3600
        assert env["JITBROKER_VAULT_AUTH_METHOD"]["value"] == "kubernetes"
        assert env["JITBROKER_VAULT_KUBERNETES_ROLE"]["value"] == "jitbroker"
        assert env["JITBROKER_VAULT_KUBERNETES_TOKEN_PATH"]["value"] == (
            "/var/run/secrets/openbao/token"
        )
        assert "JITBROKER_VAULT_TOKEN" not in env
        assert pod["serviceAccountName"] == "jb-jitbroker"


def test_no_plaintext_secret_in_any_rendered_manifest(
    render_text: Callable[[dict[str, Any] | None], dict[str, str]], ha_values: dict[str, Any]
) -> None:
    for values in (None, ha_values, {"redis": {"trial": {"enabled": True}}}):
        for name, text in render_text(values).items():
            for shape in SECRET_SHAPES:
                assert not shape.search(text), f"{name}: {shape.pattern}"


def test_trial_redis_keeps_an_append_only_file(
    render: Callable[[dict[str, Any] | None], Manifests],
) -> None:
    manifests = render({"redis": {"trial": {"enabled": True}}})

    redis = named(manifests, "StatefulSet", "jb-jitbroker-redis")
    container = redis["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][container["args"].index("--appendonly") + 1] == "yes"
    assert redis["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    api = named(manifests, "Deployment", "jb-jitbroker-api")["spec"]["template"]["spec"]
    assert env_of(api["containers"][0])["JITBROKER_REDIS_URL"]["value"] == (
        "redis://jb-jitbroker-redis:6379/0"
    )
    policy = named(manifests, "NetworkPolicy", "jb-jitbroker-redis")
    assert policy["spec"]["ingress"][0]["ports"] == [{"port": 6379, "protocol": "TCP"}]


def test_network_policies_admit_only_api_calls(ha_manifests: Manifests) -> None:
    api = named(ha_manifests, "NetworkPolicy", "jb-jitbroker-api")["spec"]
    background = named(ha_manifests, "NetworkPolicy", "jb-jitbroker-background")["spec"]
    egress = named(ha_manifests, "NetworkPolicy", "jb-jitbroker-egress")["spec"]

    assert api["ingress"][0]["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert len(api["ingress"][0]["from"]) == 2
    assert background["ingress"] == []
    assert background["policyTypes"] == ["Ingress"]
    assert egress["policyTypes"] == ["Egress"]
    assert {"port": 53, "protocol": "UDP"} in egress["egress"][0]["ports"]


def test_service_monitor_scrapes_the_api_metrics(
    default_manifests: Manifests, ha_manifests: Manifests
) -> None:
    assert not [m for m in default_manifests if m["kind"] == "ServiceMonitor"]
    monitor = named(ha_manifests, "ServiceMonitor", "jb-jitbroker")

    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_sentinel_url_reaches_the_broker_as_a_setting(
    render: Callable[[dict[str, Any] | None], Manifests],
) -> None:
    url = "redis+sentinel://sentinel-0.redis:26379,sentinel-1.redis:26379/mymaster/0"
    manifests = render({"redis": {"url": url}})

    api = named(manifests, "Deployment", "jb-jitbroker-api")["spec"]["template"]["spec"]
    assert env_of(api["containers"][0])["JITBROKER_REDIS_URL"]["value"] == url


def test_secret_scan_catches_a_key_pasted_into_the_config(
    render_text: Callable[[dict[str, Any] | None], dict[str, str]],
) -> None:
    pasted = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEI\n-----END PRIVATE KEY-----\n"
    rendered = render_text({"config": {"broker.yaml": f"# {pasted}rules: []\n"}})

    assert any(SECRET_SHAPES[0].search(text) for text in rendered.values())


def test_retiring_signing_key_is_mounted_during_a_rotation(
    render: Callable[[dict[str, Any] | None], Manifests],
) -> None:
    manifests = render({"signingKey": {"previous": {"secretName": "jitbroker-signing-key-2025"}}})

    for workload in workloads(manifests):
        pod = workload["spec"]["template"]["spec"]
        volume = next(v for v in pod["volumes"] if v["name"] == "signing-key-previous")
        assert volume["secret"]["secretName"] == "jitbroker-signing-key-2025"
        env = env_of(pod["containers"][0])
        assert env["JITBROKER_SIGNING_PREVIOUS_KEY_FILE"]["value"] == (
            "/etc/jitbroker/signing-previous/signing-key.pem"
        )

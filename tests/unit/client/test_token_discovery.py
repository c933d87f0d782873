"""Token discovery: explicit sources first, then GitHub Actions, GitLab CI and Kubernetes."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from jitbroker.client.errors import IdentityTokenUnavailable
from jitbroker.client.token_discovery import GitHubActionsToken, discover_token, token_expiry

RUNNER_REQUEST_TOKEN = "runner-request-token"
NO_KUBERNETES = Path("/nonexistent/jitbroker-token")


def jwt_like(**claims: Any) -> str:
    """A token shaped like a JWT (unsigned: discovery never verifies, the broker does)."""

    def part(document: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(document).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256'})}.{part(claims)}.signature"


@dataclass
class GitHubTokenEndpoint:
    """What the runner's token endpoint was asked, and the tokens it hands out in turn."""

    url: str = ""
    tokens: list[str] = field(default_factory=list)
    requests: list[dict[str, str]] = field(default_factory=list)
    status: int = 200


@pytest.fixture
def github_endpoint() -> Iterator[GitHubTokenEndpoint]:
    endpoint = GitHubTokenEndpoint()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = parse_qs(urlsplit(self.path).query)
            endpoint.requests.append(
                {
                    "authorization": self.headers.get("Authorization", ""),
                    "audience": query.get("audience", [""])[0],
                    "api-version": query.get("api-version", [""])[0],
                }
            )
            body = json.dumps({"value": endpoint.tokens.pop(0)} if endpoint.tokens else {})
            self.send_response(endpoint.status)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args: Any) -> None:
            """Quiet: the endpoint's record is `requests`."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    endpoint.url = f"http://127.0.0.1:{server.server_address[1]}/token?api-version=2.0"
    yield endpoint
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def github_env(endpoint: GitHubTokenEndpoint) -> dict[str, str]:
    return {
        "ACTIONS_ID_TOKEN_REQUEST_URL": endpoint.url,
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN": RUNNER_REQUEST_TOKEN,
    }


def test_token_file_wins_over_everything(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("file-token\n")

    provider = discover_token(
        token_file=token_file,
        environ={"JITBROKER_TOKEN": "env-token", "CI_JOB_JWT_V2": "gitlab"},
        kubernetes_token_file=NO_KUBERNETES,
    )

    assert provider() == "file-token"
    assert provider.source == f"token file {token_file}"


def test_token_file_from_the_environment(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("file-token")

    provider = discover_token(
        environ={"JITBROKER_TOKEN_FILE": str(token_file), "JITBROKER_TOKEN": "env-token"},
        kubernetes_token_file=NO_KUBERNETES,
    )

    assert provider() == "file-token"


def test_jitbroker_token_wins_over_ambient_ci_identity(
    github_endpoint: GitHubTokenEndpoint,
) -> None:
    provider = discover_token(
        environ={"JITBROKER_TOKEN": " env-token\n", **github_env(github_endpoint)},
        kubernetes_token_file=NO_KUBERNETES,
    )

    assert provider() == "env-token"
    assert github_endpoint.requests == []


def test_github_actions_token_is_requested_with_the_audience(
    github_endpoint: GitHubTokenEndpoint,
) -> None:
    github_endpoint.tokens = [jwt_like(sub="repo:acme/orders:environment:prod")]

    provider = discover_token(
        audience="jitbroker-prod",
        environ=github_env(github_endpoint),
        kubernetes_token_file=NO_KUBERNETES,
    )

    assert provider().count(".") == 2
    assert provider.source == "GitHub Actions OIDC (audience jitbroker-prod)"
    assert github_endpoint.requests == [
        {
            "authorization": f"bearer {RUNNER_REQUEST_TOKEN}",
            "audience": "jitbroker-prod",
            "api-version": "2.0",
        }
    ]


def test_github_audience_defaults_to_jitbroker_audience_variable_then_jitbroker(
    github_endpoint: GitHubTokenEndpoint,
) -> None:
    github_endpoint.tokens = [jwt_like(), jwt_like()]

    discover_token(
        environ={**github_env(github_endpoint), "JITBROKER_AUDIENCE": "from-env"},
        kubernetes_token_file=NO_KUBERNETES,
    )()
    discover_token(environ=github_env(github_endpoint), kubernetes_token_file=NO_KUBERNETES)()

    assert [r["audience"] for r in github_endpoint.requests] == ["from-env", "jitbroker"]


def test_github_token_is_reused_until_it_nears_expiry(
    github_endpoint: GitHubTokenEndpoint,
) -> None:
    now = [1_000_000.0]
    first, second = jwt_like(exp=1_000_300), jwt_like(exp=1_000_900)
    github_endpoint.tokens = [first, second]
    provider = GitHubActionsToken(
        github_endpoint.url, RUNNER_REQUEST_TOKEN, audience="jitbroker", clock=lambda: now[0]
    )

    assert provider() == first
    now[0] += 200  # 100s left: still more than the 60s margin
    assert provider() == first
    now[0] += 50  # 50s left: fetch a fresh one
    assert provider() == second
    assert len(github_endpoint.requests) == 2


def test_github_refusal_says_what_permission_is_missing(
    github_endpoint: GitHubTokenEndpoint,
) -> None:
    github_endpoint.status = 403
    provider = discover_token(
        environ=github_env(github_endpoint), kubernetes_token_file=NO_KUBERNETES
    )

    with pytest.raises(IdentityTokenUnavailable, match="id-token: write"):
        provider()


@pytest.mark.parametrize("variable", ["JITBROKER_ID_TOKEN", "CI_JOB_JWT_V2"])
def test_gitlab_id_token(variable: str) -> None:
    provider = discover_token(
        environ={variable: "gitlab-token", "GITLAB_CI": "true"},
        kubernetes_token_file=NO_KUBERNETES,
    )

    assert provider() == "gitlab-token"
    assert provider.source == f"GitLab CI ({variable})"


def test_gitlab_id_tokens_entry_wins_over_the_legacy_variable() -> None:
    provider = discover_token(
        environ={"JITBROKER_ID_TOKEN": "id-tokens", "CI_JOB_JWT_V2": "legacy"},
        kubernetes_token_file=NO_KUBERNETES,
    )

    assert provider() == "id-tokens"


def test_kubernetes_projected_token_is_read_again_after_rotation(tmp_path: Path) -> None:
    projected = tmp_path / "jitbroker"
    projected.write_text("first")

    provider = discover_token(environ={}, kubernetes_token_file=projected)
    first = provider()
    projected.write_text("rotated")

    assert (first, provider()) == ("first", "rotated")
    assert provider.source.startswith("Kubernetes projected token")


def test_nothing_found_names_every_source() -> None:
    with pytest.raises(IdentityTokenUnavailable) as caught:
        discover_token(environ={}, kubernetes_token_file=NO_KUBERNETES)

    for source in ("--token-file", "JITBROKER_TOKEN", "id-token: write", "id_tokens", "projected"):
        assert source in caught.value.message


def test_empty_token_file_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "token"
    empty.write_text("\n")

    with pytest.raises(IdentityTokenUnavailable, match="is empty"):
        discover_token(token_file=empty, environ={})()


def test_token_expiry_reads_exp_without_verifying() -> None:
    assert token_expiry(jwt_like(exp=1234)) == 1234.0
    assert token_expiry("not-a-jwt") is None
    assert token_expiry("a.!!!.c") is None

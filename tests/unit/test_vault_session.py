"""The OpenBao client's session: environment settings resolved once, explicit CA wins."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests

from jitbroker.vault import CONNECTION_POOL_SIZE, VaultClient

ADDR = "https://bao.internal:8200"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "no_proxy",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", "/nonexistent/netrc")


def sent_with(client: VaultClient, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What the client's session hands its transport for one OpenBao call."""
    seen: dict[str, Any] = {}

    def send(self: requests.Session, request: requests.PreparedRequest, **kwargs: Any) -> Any:
        seen.update(kwargs)
        response = requests.Response()
        response.status_code = 200
        response._content = b'{"data": {"ttl": 0}}'
        return response

    monkeypatch.setattr(requests.Session, "send", send)
    client.read("secret/x")
    return seen


def test_environment_proxy_is_used_for_openbao_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")

    sent = sent_with(VaultClient(ADDR, "t"), monkeypatch)

    assert sent["proxies"]["https"] == "http://proxy.internal:3128"


def test_no_proxy_keeps_openbao_calls_direct(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", ".internal")

    sent = sent_with(VaultClient(ADDR, "t"), monkeypatch)

    assert "https" not in (sent["proxies"] or {})


@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"])
def test_environment_ca_bundle_verifies_openbao(
    variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, "/etc/ssl/corp-ca.pem")

    sent = sent_with(VaultClient(ADDR, "t"), monkeypatch)

    assert sent["verify"] == "/etc/ssl/corp-ca.pem"


def test_configured_ca_certificate_wins_over_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/corp-ca.pem")

    sent = sent_with(VaultClient(ADDR, "t", ca_cert=Path("/etc/bao/ca.pem")), monkeypatch)

    assert sent["verify"] == "/etc/bao/ca.pem"


def test_environment_is_not_read_again_per_call(monkeypatch: pytest.MonkeyPatch) -> None:
    client = VaultClient(ADDR, "t")
    monkeypatch.setenv("HTTPS_PROXY", "http://late.internal:3128")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/late.pem")

    sent = sent_with(client, monkeypatch)

    assert sent["verify"] is True
    assert "https" not in (sent["proxies"] or {})


def test_one_pooled_session_serves_every_call() -> None:
    client = VaultClient(ADDR, "t")

    adapter = client._client.adapter.session.get_adapter(ADDR)

    assert isinstance(adapter, requests.adapters.HTTPAdapter)
    assert adapter._pool_maxsize == CONNECTION_POOL_SIZE  # type: ignore[attr-defined]

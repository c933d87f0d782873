"""`jitbroker serve`: uvicorn options from Settings, an app factory for every worker process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from pydantic import ValidationError
from typer.testing import CliRunner

from jitbroker import server
from jitbroker.cli import app as cli
from jitbroker.config import Settings


@pytest.fixture
def environment(demo_config_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """JITBROKER_* variables for a server process over the demo config; the key file path."""
    key = demo_config_dir.parent / "signing" / "key.pem"
    monkeypatch.setenv("JITBROKER_CONFIG_DIR", str(demo_config_dir))
    monkeypatch.setenv("JITBROKER_SIGNING_KEY_FILE", str(key))
    monkeypatch.setenv("JITBROKER_AUDIT_FILE", "")
    monkeypatch.setenv("JITBROKER_AUDIT_STDOUT", "false")
    monkeypatch.setenv("JITBROKER_VAULT_ADDR", "http://127.0.0.1:9")
    return key


def test_one_api_process_by_default() -> None:
    assert server.uvicorn_options(Settings())["workers"] == 1


def test_api_workers_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JITBROKER_API_WORKERS", "4")

    assert server.uvicorn_options(Settings())["workers"] == 4


def test_zero_api_workers_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JITBROKER_API_WORKERS", "0")

    with pytest.raises(ValidationError, match="api_workers"):
        Settings()


def test_uvicorn_builds_the_app_from_the_factory_on_the_listen_address() -> None:
    options = server.uvicorn_options(Settings(listen_host="0.0.0.0", listen_port=8411))

    assert server.APP_FACTORY == "jitbroker.server:served_app"
    assert options["factory"] is True
    assert (options["host"], options["port"], options["access_log"]) == ("0.0.0.0", 8411, False)


def test_websocket_upgrades_are_off() -> None:
    """The API has no websocket routes; an upgrade would leave the connection deadlines behind."""
    assert server.uvicorn_options(Settings())["ws"] == "none"


def test_factory_builds_the_api_from_the_environment(environment: Path) -> None:
    app = server.served_app()

    assert isinstance(app, FastAPI)
    assert app.state.broker.settings.signing_key_file == environment


def test_serve_passes_workers_and_address_to_uvicorn(
    environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    calls: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: calls.append((app, options)))

    result = CliRunner().invoke(cli, ["serve", "--workers", "3", "--port", "8412"])

    assert result.exit_code == 0, result.output
    [(app, options)] = calls
    assert app == server.APP_FACTORY
    assert (options["workers"], options["port"], options["factory"]) == (3, 8412, True)


def test_serve_creates_the_signing_key_before_starting_workers(
    environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    existed: list[bool] = []
    monkeypatch.setattr(uvicorn, "run", lambda *_, **__: existed.append(environment.exists()))

    result = CliRunner().invoke(cli, ["serve", "--workers", "2"])

    assert result.exit_code == 0, result.output
    assert existed == [True]


def test_serve_refuses_zero_workers(environment: Path) -> None:
    result = CliRunner().invoke(cli, ["serve", "--workers", "0"])

    assert result.exit_code == 2
